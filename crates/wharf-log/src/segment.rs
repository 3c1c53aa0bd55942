//! One segment: a `.log` file of batches plus its in-memory sparse indexes.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::error::{IoContext, LogError, Result};
use crate::index::{self, Indexes};

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
pub(crate) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
pub(crate) fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// Makes a create, rename or delete in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .ctx("open", dir)?
        .sync_all()
        .ctx("fsync", dir)
}

/// Reads the header of the batch at `pos`; `Ok(None)` when fewer than a header's bytes
/// remain before `limit`.
pub(crate) fn read_header(
    file: &File,
    path: &Path,
    pos: u64,
    limit: u64,
) -> Result<Option<BatchHeader>> {
    if pos + HEADER_LEN as u64 > limit {
        return Ok(None);
    }
    let mut h = [0u8; HEADER_LEN];
    file.read_exact_at(&mut h, pos).ctx("read", path)?;
    Ok(BatchHeader::parse(&h))
}

/// Zero bytes, written to preallocate segment space (see [`Segment::preallocate`]).
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Starts writing back the dirty pages of `len` bytes from `offset`, without waiting for
/// it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a later fdatasync then finds them
/// written or on their way. Durability still comes only from fdatasync; this only moves
/// the writing earlier. A failure is harmless (the fdatasync writes them instead).
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range takes a file descriptor and three integers, and reads or
    // writes no memory of this process. The descriptor is open for the whole call: it
    // belongs to `file`, which is borrowed until the call returns.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// What a validating scan of a segment found.
pub(crate) struct Scan {
    /// Bytes from the start of the file that hold valid, contiguous batches.
    pub valid_len: u64,
    /// Why the scan stopped before the end of the file, if it did. A tail of zero bytes
    /// is preallocated space, not a defect: the scan reports it as `zero_tail` instead.
    pub defect: Option<String>,
    /// Bytes of zeros after the valid batches (space preallocated before a crash).
    pub zero_tail: u64,
}

pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub size: u64,
    /// One past the last offset stored here; `base` when empty.
    pub next_offset: u64,
    /// Largest batch max timestamp stored here; -1 when empty.
    pub max_ts: i64,
    /// Wall clock of the first append since this segment was created or the log opened,
    /// for rolling by age.
    pub first_append_ms: Option<i64>,
    /// Written since the last fdatasync.
    pub dirty: bool,
    /// The file's length: `size` plus zeros written ahead of the appends (see
    /// [`Segment::preallocate`]). Never less than `size`.
    pub allocated: u64,
    /// The index files on disk describe this segment as it is. They are written only
    /// after the log bytes they describe were synced, so a matching index proves its
    /// bytes reached the disk and recovery may skip re-validating them.
    pub index_stored: bool,
    pub idx: Indexes,
}

impl Segment {
    pub fn create(dir: &Path, base: u64) -> Result<Segment> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .ctx("create", &path)?;
        // Stale indexes of an earlier segment with this base would describe other bytes.
        let _ = fs::remove_file(index_path(dir, base));
        let _ = fs::remove_file(time_index_path(dir, base));
        sync_dir(dir)?;
        Ok(Segment {
            base,
            path,
            file: Arc::new(file),
            size: 0,
            next_offset: base,
            max_ts: -1,
            first_append_ms: None,
            dirty: false,
            allocated: 0,
            index_stored: false,
            idx: Indexes::default(),
        })
    }

    /// Opens an existing segment. With `trust_index`, loads its index files when they
    /// match the log; otherwise (or when they do not) scans and validates every batch.
    /// The returned scan reports a defect when the file holds bytes past its valid end;
    /// the caller decides whether to cut them.
    pub fn open(
        dir: &Path,
        base: u64,
        trust_index: bool,
        interval: u32,
    ) -> Result<(Segment, Scan, bool)> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .ctx("open", &path)?;
        let size = file.metadata().ctx("stat", &path)?.len();
        let mut seg = Segment {
            base,
            path,
            file: Arc::new(file),
            size,
            next_offset: base,
            max_ts: -1,
            first_append_ms: None,
            dirty: false,
            allocated: size,
            index_stored: false,
            idx: Indexes::default(),
        };
        if trust_index {
            if let Some(idx) =
                index::load(&index_path(dir, base), &time_index_path(dir, base), size)
            {
                // Validate from the last indexed batch to the end: the tail is what a
                // crash would have torn, and it also yields next_offset.
                let from = idx.offsets.last().map_or(0, |e| u64::from(e.pos));
                let max_ts = idx.times.last().map_or(-1, |t| t.ts);
                let start_offset = match idx.offsets.last() {
                    Some(e) => base + u64::from(e.rel),
                    None => base,
                };
                seg.idx = idx;
                seg.max_ts = max_ts;
                let scan = seg.scan_from(from, start_offset, true, interval, false)?;
                if scan.defect.is_none() {
                    seg.trim_zero_tail(&scan)?;
                    seg.index_stored = scan.zero_tail == 0;
                    return Ok((seg, scan, false));
                }
                // The index pointed into bad bytes: fall through to a full rebuild.
            }
        }
        seg.idx = Indexes::default();
        seg.max_ts = -1;
        let scan = seg.scan_from(0, base, true, interval, true)?;
        seg.trim_zero_tail(&scan)?;
        Ok((seg, scan, true))
    }

    /// Cuts the zeros a crash left after the last batch (preallocated space). The cut
    /// need not be durable: a later open finds the same zeros and cuts them again.
    fn trim_zero_tail(&mut self, scan: &Scan) -> Result<()> {
        if scan.zero_tail > 0 {
            self.file
                .set_len(scan.valid_len)
                .ctx("truncate", &self.path)?;
            self.size = scan.valid_len;
            self.allocated = scan.valid_len;
        }
        Ok(())
    }

    /// Whether every byte from `pos` to the end of the file is zero.
    fn zeros_from(&self, mut pos: u64) -> Result<bool> {
        let mut buf = vec![0u8; ZEROS.len()];
        while pos < self.size {
            let n = (self.size - pos).min(buf.len() as u64) as usize;
            self.file
                .read_exact_at(&mut buf[..n], pos)
                .ctx("read", &self.path)?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            pos += n as u64;
        }
        Ok(true)
    }

    /// Writes zeros from the end of the file up to `to` bytes, so that appends there
    /// overwrite blocks that are already allocated and part of the file: their
    /// fdatasync then writes only the data, not the inode and extent changes that
    /// growing a file needs (about half the time per sync on ext4). The zeros become
    /// durable with the next sync. On failure (a full disk) the file is cut back to its
    /// batches, and the appends simply grow it as before.
    pub fn preallocate(&mut self, to: u64) -> Result<()> {
        let from = self.allocated.max(self.size);
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            if let Err(e) = self.file.write_all_at(&ZEROS[..n], at) {
                let _ = self.file.set_len(self.size);
                self.allocated = self.size;
                return Err(e).ctx("preallocate", &self.path);
            }
            at += n as u64;
            self.allocated = at;
            self.dirty = true;
        }
        if at > from {
            start_writeback(&self.file, from, at - from);
        }
        Ok(())
    }

    /// Cuts preallocated zeros off the file (before sealing or closing the segment), so
    /// that a segment at rest is exactly its batches.
    pub fn trim(&mut self) -> Result<()> {
        if self.allocated > self.size {
            self.file.set_len(self.size).ctx("truncate", &self.path)?;
            self.allocated = self.size;
            self.dirty = true;
        }
        Ok(())
    }

    /// Walks batches from `pos` (which holds `expected` as its base offset) to the end of
    /// the file, checking each (CRC too when `check_crc`), and sets `next_offset` and
    /// `max_ts`. With `index`, adds index entries on the way.
    fn scan_from(
        &mut self,
        mut pos: u64,
        mut expected: u64,
        check_crc: bool,
        interval: u32,
        index: bool,
    ) -> Result<Scan> {
        let mut buf = Vec::new();
        let mut defect = None;
        while pos < self.size {
            let remaining = self.size - pos;
            let Some(h) = read_header(&self.file, &self.path, pos, self.size)? else {
                defect = Some(format!(
                    "{remaining} trailing bytes, fewer than a batch header"
                ));
                break;
            };
            let Some(total) = h.total_len() else {
                defect = Some(format!("impossible batch length {}", h.batch_length));
                break;
            };
            if total as u64 > remaining {
                defect = Some(format!("batch of {total} bytes torn after {remaining}"));
                break;
            }
            if h.base_offset != expected as i64 {
                defect = Some(format!(
                    "base offset {} where {expected} was expected",
                    h.base_offset
                ));
                break;
            }
            if check_crc {
                buf.resize(total, 0);
                self.file
                    .read_exact_at(&mut buf, pos)
                    .ctx("read", &self.path)?;
                if let Err(d) = batch::validate(&buf) {
                    defect = Some(d.to_string());
                    break;
                }
            } else if h.magic != batch::MAGIC_V2 || h.last_offset_delta < 0 {
                defect = Some("malformed batch header".to_string());
                break;
            }
            let rel = (expected - self.base) as u32;
            self.max_ts = self.max_ts.max(h.max_timestamp);
            if index {
                self.idx
                    .on_batch(rel, pos as u32, total as u32, self.max_ts, interval);
            }
            expected += h.last_offset_delta as u64 + 1;
            pos += total as u64;
        }
        self.next_offset = expected;
        let mut zero_tail = 0;
        if defect.is_some() && self.zeros_from(pos)? {
            defect = None;
            zero_tail = self.size - pos;
        }
        Ok(Scan {
            valid_len: pos,
            defect,
            zero_tail,
        })
    }

    /// Cuts the file at `len` bytes, whose last batch ends at `next_offset`, and rebuilds
    /// the in-memory index from the remaining headers.
    pub fn truncate(&mut self, len: u64, interval: u32) -> Result<()> {
        self.file.set_len(len).ctx("truncate", &self.path)?;
        self.size = len;
        self.allocated = len;
        self.dirty = true;
        self.index_stored = false;
        self.idx = Indexes::default();
        self.max_ts = -1;
        let scan = self.scan_from(0, self.base, false, interval, true)?;
        if let Some(d) = scan.defect {
            return Err(LogError::Io {
                op: "rescan after truncate",
                path: self.path.clone(),
                source: std::io::Error::other(d),
            });
        }
        Ok(())
    }

    /// Finds the batch holding `offset` (which must be in `base..next_offset`):
    /// its position and base offset.
    pub fn locate(&self, offset: u64) -> Result<(u64, u64)> {
        locate_in(
            &self.file, &self.path, &self.idx, self.base, offset, self.size,
        )
    }

    /// Writes the index files, describing the log as it is now. The caller has synced
    /// the log bytes first (see `index_stored`).
    pub fn store_index(&mut self, dir: &Path) -> Result<()> {
        debug_assert!(!self.dirty, "index stored before its log bytes were synced");
        self.index_stored = true;
        index::store(
            &index_path(dir, self.base),
            &time_index_path(dir, self.base),
            &self.idx,
            self.size,
        )
    }

    pub fn remove_files(&self, dir: &Path) -> Result<()> {
        fs::remove_file(&self.path).ctx("delete", &self.path)?;
        for p in [index_path(dir, self.base), time_index_path(dir, self.base)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx("delete", &p),
            }
        }
        Ok(())
    }

    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.file.sync_data().ctx("fdatasync", &self.path)?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// Scans batch headers from the index floor for the batch holding `offset`.
pub(crate) fn locate_in(
    file: &File,
    path: &Path,
    idx: &Indexes,
    base: u64,
    offset: u64,
    limit: u64,
) -> Result<(u64, u64)> {
    let floor = idx.floor(u32::try_from(offset - base).unwrap_or(u32::MAX));
    let mut pos = u64::from(floor.pos);
    let mut at = base + u64::from(floor.rel);
    loop {
        let Some(h) = read_header(file, path, pos, limit)? else {
            return Err(LogError::Io {
                op: "locate offset",
                path: path.to_path_buf(),
                source: std::io::Error::other(format!(
                    "offset {offset} not found before byte {limit}"
                )),
            });
        };
        let Some(total) = h.total_len() else {
            return Err(LogError::Io {
                op: "locate offset",
                path: path.to_path_buf(),
                source: std::io::Error::other(format!("bad batch length at byte {pos}")),
            });
        };
        let last = at + h.last_offset_delta.max(0) as u64;
        if last >= offset {
            return Ok((pos, at));
        }
        at = last + 1;
        pos += total as u64;
    }
}
