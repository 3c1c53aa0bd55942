//! Producer id allocation (Kafka `InitProducerId` without a transactional id).
//!
//! Ids must never be handed out twice, not even across restarts: a reused id would let a
//! new producer inherit (and be deduplicated against, or fenced by) an old one's state on
//! every partition. Writing a file per id would cost an fsync per producer start, so ids
//! are reserved in blocks: before the first id of a block is handed out, the end of the
//! block is persisted in `<data-dir>/producer-ids`. After a restart allocation resumes at
//! the persisted end, skipping whatever was left of the last block.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "WPID"
//!      4     2  format version (= 1), big-endian
//!      6     2  zero
//!      8     8  reserved up to (exclusive), i64 big-endian
//!     16     4  CRC-32C of bytes 0..16
//! ```
//!
//! The file is replaced, never edited: written to `producer-ids.tmp`, fsync'd, renamed,
//! and the directory fsync'd. A crash leaves either the old or the new value, and both
//! are safe (the old one covers every id handed out before the crash).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{CoreError, IoContext, Result};
use crate::registry::sync_dir;

/// File name of the producer id high-water mark inside the data directory.
pub const PRODUCER_IDS_FILE: &str = "producer-ids";
const PRODUCER_IDS_TMP: &str = "producer-ids.tmp";
const MAGIC: [u8; 4] = *b"WPID";
const FORMAT: u16 = 1;
const FILE_LEN: usize = 20;
/// Ids reserved per write of the file.
pub const ID_BLOCK: i64 = 1000;

/// Hands out producer ids, never the same twice. Not thread-safe; the broker holds it
/// in a mutex taken on the blocking pool.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    dir: PathBuf,
    /// The next id to hand out.
    next: i64,
    /// Ids below this are covered by the file.
    reserved: i64,
}

impl ProducerIdAllocator {
    /// Loads the high-water mark from `dir` (0 when the file does not exist yet).
    pub fn open(dir: &Path) -> Result<ProducerIdAllocator> {
        let path = dir.join(PRODUCER_IDS_FILE);
        let reserved = match fs::read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|reason| CoreError::CorruptProducerIds {
                path: path.clone(),
                reason,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).ctx("read", &path),
        };
        Ok(ProducerIdAllocator {
            dir: dir.to_path_buf(),
            next: reserved,
            reserved,
        })
    }

    /// A fresh producer id. Persists a new block first when the current one is used up.
    pub fn allocate(&mut self) -> Result<i64> {
        if self.next >= self.reserved {
            let end = self
                .next
                .checked_add(ID_BLOCK)
                .ok_or_else(|| CoreError::Internal {
                    what: "allocating a producer id",
                    reason: "producer ids exhausted".into(),
                })?;
            self.persist(end)?;
            self.reserved = end;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }

    /// Whether `id` may have been handed out by this data directory.
    pub fn may_have_allocated(&self, id: i64) -> bool {
        (0..self.next).contains(&id)
    }

    fn persist(&self, end: i64) -> Result<()> {
        let tmp = self.dir.join(PRODUCER_IDS_TMP);
        let path = self.dir.join(PRODUCER_IDS_FILE);
        let mut f = File::create(&tmp).ctx("create", &tmp)?;
        f.write_all(&encode(end)).ctx("write", &tmp)?;
        f.sync_all().ctx("fsync", &tmp)?;
        drop(f);
        fs::rename(&tmp, &path).ctx("rename", &path)?;
        sync_dir(&self.dir)
    }
}

fn encode(end: i64) -> [u8; FILE_LEN] {
    let mut b = [0u8; FILE_LEN];
    b[0..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&FORMAT.to_be_bytes());
    b[8..16].copy_from_slice(&end.to_be_bytes());
    let crc = crc32c::crc32c(&b[..16]);
    b[16..20].copy_from_slice(&crc.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> std::result::Result<i64, String> {
    if b.len() != FILE_LEN {
        return Err(format!("{} bytes, expected {FILE_LEN}", b.len()));
    }
    if b[0..4] != MAGIC {
        return Err("bad magic".into());
    }
    let version = u16::from_be_bytes([b[4], b[5]]);
    if version != FORMAT {
        return Err(format!("unknown format version {version}"));
    }
    let stored = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
    let computed = crc32c::crc32c(&b[..16]);
    if stored != computed {
        return Err(format!(
            "CRC-32C is {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[8..16]);
    let end = i64::from_be_bytes(v);
    if end < 0 {
        return Err(format!("negative high-water mark {end}"));
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resume_after_the_reserved_block() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = ProducerIdAllocator::open(dir.path()).unwrap();
        assert_eq!(a.allocate().unwrap(), 0);
        assert_eq!(a.allocate().unwrap(), 1);
        assert!(a.may_have_allocated(1));
        assert!(!a.may_have_allocated(2));
        drop(a);
        let mut b = ProducerIdAllocator::open(dir.path()).unwrap();
        assert_eq!(b.allocate().unwrap(), ID_BLOCK);
    }

    #[test]
    fn a_corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode(5000);
        bytes[10] ^= 1;
        fs::write(dir.path().join(PRODUCER_IDS_FILE), bytes).unwrap();
        assert!(matches!(
            ProducerIdAllocator::open(dir.path()),
            Err(CoreError::CorruptProducerIds { .. })
        ));
    }
}
