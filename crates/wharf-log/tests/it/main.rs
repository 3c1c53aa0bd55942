//! Integration tests of the partition log, in one test binary.

mod common;
mod crash;
mod model;
mod recovery;
mod shared;
