//! The data-directory lock: one broker per data directory.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, LogError, Result};

const LOCK_RETRIES: u32 = 10;
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// An exclusive advisory lock on `<dir>/.lock`, held for the life of the value. The
/// kernel drops it when the process dies, so a crashed broker never leaves a stale lock.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock, creating `dir` if needed. Fails within a fraction of a second
    /// with [`LogError::Locked`] when another process (or another handle in this one)
    /// holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        fs::create_dir_all(dir).ctx("create directory", dir)?;
        let path = dir.join(".lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx("open", &path)?;
        // A lock released an instant ago can still be held for a moment: a child process
        // spawned by the previous holder keeps a copy of the descriptor between its fork
        // and its exec. So a few short retries, still failing well within a second when
        // another broker really holds the directory.
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if tries < LOCK_RETRIES => {
                    tries += 1;
                    std::thread::sleep(LOCK_RETRY_PAUSE);
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(LogError::Locked {
                        dir: dir.to_path_buf(),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(e).ctx("lock", &path),
            }
        }
        // The holder's pid, for whoever wonders who holds it.
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Ok(DirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_dir_fails_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DirLock::acquire(dir.path()).expect("first lock");
        match DirLock::acquire(dir.path()) {
            Err(LogError::Locked { dir: d }) => assert_eq!(d, dir.path()),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        DirLock::acquire(dir.path()).expect("lock again after release");
    }
}
