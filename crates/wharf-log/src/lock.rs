//! STUB
use std::path::Path;
pub struct DirLock { _f: std::fs::File }
impl DirLock {
    /// Takes an exclusive lock on `<dir>/.lock`, creating `dir` if needed. Fails at once with
    /// `LogError::Locked` when another process holds it. Released on drop or process exit.
    pub fn acquire(dir: &Path) -> crate::Result<DirLock> { let _ = dir; todo!() }
}
