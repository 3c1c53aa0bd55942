//! A durable journal of ops over an in-memory state, with a compacted snapshot: the
//! machinery shared by the group offsets (`group::journal`) and the queue subscriptions
//! (`queue::durable`). Each user describes its state and ops through [`Durable`].
//!
//! ```text
//! <data-dir>/<dir>/<journal>        header, then records appended one batch at a time
//!                 /<snapshot>       header, the compacted state as records, an End op
//!                 /<snapshot>.tmp   a snapshot being written (removed on open)
//!                 /<journal>.tmp    an empty journal being created (removed on open)
//!
//! header:  | magic (8 bytes, one for the journal, one for the snapshot) | version u32 LE = 1 |
//!
//! record:  | len u32 LE | crc32c(payload) u32 LE | payload (len bytes)                |
//! payload: | op count u32 LE | op | op | ...                                         |
//! op:      | tag u8 | fields (the user's codec)                                      |
//! End op:  | end tag u8 | record count u64 LE | (snapshot only: alone in its record,  |
//!                                                the last record; the end tag is the  |
//!                                                user's, no op of it may use it)      |
//! ```
//!
//! One record holds every op of one submission, so it is all or nothing. A record is
//! acknowledged only after an `fdatasync` covers it; many concurrent submissions share
//! one write and one sync (group commit), done by a dedicated writer thread.
//!
//! Torn tails: a crash may leave a partial record at the end (a short length, a short
//! payload, a CRC mismatch). Such a record was never acknowledged, because its sync had
//! not returned. On open the journal is cut at the first record that does not check out;
//! everything before it is kept. After a failed write or sync the writer refuses all
//! further records rather than guess what reached the disk.
//!
//! Compaction: when the journal outgrows the compaction threshold (and the last
//! snapshot), the writer writes the whole state to `<snapshot>.tmp`, syncs it, renames it
//! over the snapshot, syncs the directory, and then replaces the journal with an empty
//! one the same way. A crash between the two renames leaves the old journal beside the
//! new snapshot; replaying it again must be harmless, so every user's ops must be blind
//! writes of what they name (replaying a journal over a state that already contains it
//! ends in the same state). A snapshot is written atomically, so a damaged one is an
//! error, never truncated.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::error::{CoreError, IoContext, Result};
use crate::registry::sync_dir;

/// The format version of every journal and snapshot header.
pub const VERSION: u32 = 1;
/// Length of a file header: magic and version.
pub const HEADER_LEN: usize = 12;
const RECORD_HEADER_LEN: usize = 8;
/// Larger records are refused when written and treated as corrupt when read.
pub const MAX_RECORD_BYTES: usize = 64 << 20;
/// How many queued submissions one write and sync may cover.
const MAX_BATCH: usize = 1024;

/// The names and magic numbers of one journal.
#[derive(Debug, Clone, Copy)]
pub struct JournalFiles {
    /// Folder under the data directory.
    pub dir: &'static str,
    /// Journal file name in that folder (its temp file is this plus `.tmp`).
    pub journal: &'static str,
    /// Snapshot file name in that folder (its temp file is this plus `.tmp`).
    pub snapshot: &'static str,
    pub journal_magic: &'static [u8; 8],
    pub snapshot_magic: &'static [u8; 8],
    /// Tag of the End op that closes a snapshot. No op of the user may use it.
    pub end_tag: u8,
    /// Name of the writer thread.
    pub thread: &'static str,
    /// What the journal is, for messages ("offsets journal").
    pub what: &'static str,
    /// What kind of file it is, for the bad-magic message ("not a Wharf {kind} file").
    pub kind: &'static str,
}

/// A state made durable by a journal: its ops, their codec and how they apply.
///
/// Every op must be a blind write of what it names, so that replaying a journal over a
/// snapshot that already contains it ends in the same state (see the module doc).
pub trait Durable: Default + Send + 'static {
    type Op: Send + 'static;

    /// Names used in file names, thread name and log lines, and the magics.
    const FILES: JournalFiles;

    /// Appends one op: its tag byte (never `FILES.end_tag`), then its fields.
    fn encode_op(buf: &mut Vec<u8>, op: &Self::Op);

    /// Decodes one op whose tag byte was already read (`tag` != `FILES.end_tag`).
    /// `None` = undecodable.
    fn decode_op(tag: u8, r: &mut Reader<'_>) -> Option<Self::Op>;

    /// Applies ops in order. Used by recovery and by the writer's copy of the state.
    fn apply(&mut self, ops: &[Self::Op]);

    /// The whole state as records of ops, for the snapshot: applied in order to a default
    /// state they must rebuild this one.
    fn snapshot_records(&self) -> Vec<Vec<Self::Op>>;

    /// The count of top-level items, for log lines.
    fn item_count(&self) -> usize;

    /// The error for a damaged snapshot or journal header at `path`.
    fn corrupt(path: &Path, reason: String) -> CoreError {
        CoreError::CorruptJournal {
            path: path.to_path_buf(),
            reason,
        }
    }
}

/// Why a submitted record did not (and will not) become durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalError {
    pub reason: String,
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for JournalError {}

impl JournalError {
    fn new(reason: impl Into<String>) -> JournalError {
        JournalError {
            reason: reason.into(),
        }
    }
}

/// The completion of one submission: `Ok` once durable (and applied through the
/// `on_durable` hook), or why it never will be.
pub type Completion = oneshot::Sender<std::result::Result<(), JournalError>>;

// ---- encoding -------------------------------------------------------------------------

/// Appends a string: u32 LE length, then UTF-8.
pub fn put_str(b: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    b.extend(len.to_le_bytes());
    b.extend(s.as_bytes());
}

/// Appends a count (of a vec's items) as u32 LE.
pub fn put_count(b: &mut Vec<u8>, n: usize) {
    b.extend(u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// Frames ops as one record: length, CRC-32C, payload.
pub fn encode_record<D: Durable>(ops: &[D::Op]) -> Vec<u8> {
    let mut payload = Vec::new();
    put_count(&mut payload, ops.len());
    for op in ops {
        D::encode_op(&mut payload, op);
    }
    frame(payload)
}

fn frame(payload: Vec<u8>) -> Vec<u8> {
    let mut rec = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    rec.extend(
        u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    rec.extend(crc32c::crc32c(&payload).to_le_bytes());
    rec.extend(payload);
    rec
}

/// A cursor over a record's payload. Every read is `None` past the end.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader(buf)
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.0.len()
    }
    pub fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.0.split_first_chunk::<N>()?;
        self.0 = tail;
        Some(*head)
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.bytes::<1>()?[0])
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_le_bytes)
    }
    pub fn i32(&mut self) -> Option<i32> {
        self.bytes().map(i32::from_le_bytes)
    }
    pub fn i64(&mut self) -> Option<i64> {
        self.bytes().map(i64::from_le_bytes)
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_le_bytes)
    }
    pub fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.u32()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (s, tail) = self.0.split_at(len);
        self.0 = tail;
        String::from_utf8(s.to_vec()).ok()
    }
    /// A u32 LE count of items that take at least `min_item_bytes` each (at least 1 is
    /// assumed): `None` if the rest of the payload cannot hold that many, so a corrupt
    /// count never makes the caller allocate for it.
    pub fn count(&mut self, min_item_bytes: usize) -> Option<usize> {
        let n = usize::try_from(self.u32()?).ok()?;
        (n.checked_mul(min_item_bytes.max(1))? <= self.0.len()).then_some(n)
    }
}

/// One decoded record.
pub(crate) enum Decoded<Op> {
    Ops(Vec<Op>),
    End(u64),
}

fn decode_payload<D: Durable>(payload: &[u8]) -> Option<Decoded<D::Op>> {
    let mut r = Reader(payload);
    let count = r.u32()?;
    let mut ops = Vec::new();
    for _ in 0..count {
        let tag = r.u8()?;
        if tag == D::FILES.end_tag {
            if count != 1 {
                return None;
            }
            let n = r.u64()?;
            return r.0.is_empty().then_some(Decoded::End(n));
        }
        ops.push(D::decode_op(tag, &mut r)?);
    }
    r.0.is_empty().then_some(Decoded::Ops(ops))
}

/// Reads records from `buf` (after the header). Returns the decoded records, the length
/// of the valid prefix, and what stopped the scan (`None`: the end was clean).
pub(crate) fn scan<D: Durable>(buf: &[u8]) -> (Vec<Decoded<D::Op>>, usize, Option<&'static str>) {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let rest = &buf[pos..];
        let Some((head, body)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() else {
            return (out, pos, Some("a torn record header"));
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let Ok(len) = usize::try_from(len) else {
            return (out, pos, Some("an absurd record length"));
        };
        if len > MAX_RECORD_BYTES {
            return (out, pos, Some("an absurd record length"));
        }
        if len > body.len() {
            return (out, pos, Some("a torn record"));
        }
        let payload = &body[..len];
        if crc32c::crc32c(payload) != crc {
            return (out, pos, Some("a CRC mismatch"));
        }
        let Some(decoded) = decode_payload::<D>(payload) else {
            return (out, pos, Some("an undecodable record"));
        };
        out.push(decoded);
        pos += RECORD_HEADER_LEN + len;
    }
    (out, pos, None)
}

/// A file header: magic, then [`VERSION`].
pub fn header(magic: &[u8; 8]) -> Vec<u8> {
    let mut h = magic.to_vec();
    h.extend(VERSION.to_le_bytes());
    h
}

fn check_header<D: Durable>(path: &Path, buf: &[u8], magic: &[u8; 8]) -> Result<()> {
    if &buf[..8] != magic {
        return Err(D::corrupt(
            path,
            format!("not a Wharf {} file (bad magic)", D::FILES.kind),
        ));
    }
    let version = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if version != VERSION {
        return Err(D::corrupt(
            path,
            format!("format version {version}, this Wharf reads version {VERSION}"),
        ));
    }
    Ok(())
}

fn load_snapshot<D: Durable>(path: &Path) -> Result<(D, u64)> {
    let buf = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((D::default(), 0)),
        Err(e) => return Err(e).ctx("read", path),
    };
    if buf.len() < HEADER_LEN {
        return Err(D::corrupt(path, "snapshot shorter than its header".into()));
    }
    check_header::<D>(path, &buf, D::FILES.snapshot_magic)?;
    let (records, _, problem) = scan::<D>(&buf[HEADER_LEN..]);
    if let Some(problem) = problem {
        return Err(D::corrupt(path, format!("snapshot damaged: {problem}")));
    }
    let mut state = D::default();
    let mut count = 0u64;
    let mut ended = false;
    for r in records {
        match r {
            Decoded::Ops(ops) if !ended => {
                state.apply(&ops);
                count += 1;
            }
            Decoded::End(n) if !ended && n == count => ended = true,
            _ => {
                return Err(D::corrupt(
                    path,
                    "snapshot damaged: misplaced end marker".into(),
                ))
            }
        }
    }
    if !ended {
        return Err(D::corrupt(path, "snapshot damaged: no end marker".into()));
    }
    Ok((state, buf.len() as u64))
}

/// What [`open`] found: the state, and the journal ready for [`Journal::start`].
pub struct Recovered<D> {
    pub state: D,
    /// Bytes cut from a torn or corrupt journal tail.
    pub truncated_bytes: u64,
    journal: File,
    journal_len: u64,
    snapshot_len: u64,
}

fn tmp_name(name: &str) -> String {
    format!("{name}.tmp")
}

fn create_empty(dir: &Path, name: &str, magic: &[u8; 8]) -> Result<File> {
    let tmp_path = dir.join(tmp_name(name));
    let path = dir.join(name);
    {
        let mut f = File::create(&tmp_path).ctx("create", &tmp_path)?;
        f.write_all(&header(magic)).ctx("write", &tmp_path)?;
        f.sync_all().ctx("sync", &tmp_path)?;
    }
    fs::rename(&tmp_path, &path).ctx("rename", &tmp_path)?;
    sync_dir(dir)?;
    OpenOptions::new()
        .append(true)
        .open(&path)
        .ctx("open", &path)
}

/// Opens (or creates) `<data_dir>/<D::FILES.dir>`, loads the snapshot, replays the
/// journal and cuts its torn tail.
pub fn open<D: Durable>(data_dir: &Path) -> Result<Recovered<D>> {
    let files = D::FILES;
    let dir = data_dir.join(files.dir);
    if !dir.is_dir() {
        fs::create_dir_all(&dir).ctx("create", &dir)?;
        // Without this a crash could lose the folder, and acknowledged records with it.
        sync_dir(data_dir)?;
    }
    for name in [files.snapshot, files.journal] {
        let p = dir.join(tmp_name(name));
        if let Err(e) = fs::remove_file(&p) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(e).ctx("remove", &p);
            }
        }
    }
    let (mut state, snapshot_len) = load_snapshot::<D>(&dir.join(files.snapshot))?;
    let path = dir.join(files.journal);
    let buf = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).ctx("read", &path),
    };
    if buf.len() < HEADER_LEN {
        // Missing, or torn while being created: nothing in it was ever acknowledged.
        if !buf.is_empty() {
            warn!(path = %path.display(), "replacing a journal torn inside its header");
        }
        let journal = create_empty(&dir, files.journal, files.journal_magic)?;
        return Ok(Recovered {
            state,
            truncated_bytes: buf.len() as u64,
            journal,
            journal_len: HEADER_LEN as u64,
            snapshot_len,
        });
    }
    check_header::<D>(&path, &buf, files.journal_magic)?;
    let (records, valid, problem) = scan::<D>(&buf[HEADER_LEN..]);
    for r in &records {
        match r {
            Decoded::Ops(ops) => state.apply(ops),
            Decoded::End(_) => {
                return Err(D::corrupt(&path, "an end marker inside the journal".into()));
            }
        }
    }
    let good = (HEADER_LEN + valid) as u64;
    let truncated = buf.len() as u64 - good;
    if let Some(problem) = problem {
        warn!(
            path = %path.display(), at = good, cut_bytes = truncated,
            "{} ends in {problem}; cutting it at the last good record", files.what
        );
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .ctx("open", &path)?;
        f.set_len(good).ctx("truncate", &path)?;
        f.sync_all().ctx("sync", &path)?;
    }
    let journal = OpenOptions::new()
        .append(true)
        .open(&path)
        .ctx("open", &path)?;
    info!(
        items = state.item_count(),
        records = records.len(),
        "{} recovered",
        files.what
    );
    Ok(Recovered {
        state,
        truncated_bytes: truncated,
        journal,
        journal_len: good,
        snapshot_len,
    })
}

// ---- the writer ----------------------------------------------------------------------

/// Called by the writer thread, in journal order, with each batch of ops once it is
/// durable and before its submitter is told.
pub type OnDurable<Op> = Box<dyn Fn(&[Op]) + Send>;

struct Queued<Op> {
    ops: Vec<Op>,
    done: Option<Completion>,
}

/// Handle to the writer thread. Dropping it lets the thread finish what was queued and
/// exit, and waits for it.
///
/// Its locks are held only to clone or take the sender and the thread handle, so
/// `submit` may be called under the user's lock while another task closes the journal
/// (the thread may need that lock, in `on_durable`, to finish its queue).
pub struct Journal<D: Durable> {
    tx: Mutex<Option<mpsc::Sender<Queued<D::Op>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each guarded value is replaced in one assignment: poisoning cannot tear it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<D: Durable> Journal<D> {
    /// Starts the writer thread over a recovered journal. It compacts once the journal
    /// outgrows `compact_bytes` (and the last snapshot).
    ///
    /// With `lazy_sync`, records nobody waits for (submitted without `done`) are
    /// written at once but synced only with the next record somebody waits for, or
    /// `lazy_sync` after they were written, whichever comes first: a crash may lose
    /// them. Without it, every write is synced before the next.
    pub fn start(
        data_dir: &Path,
        recovered: Recovered<D>,
        compact_bytes: u64,
        on_durable: Option<OnDurable<D::Op>>,
        lazy_sync: Option<Duration>,
    ) -> Result<Journal<D>> {
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            dir: data_dir.join(D::FILES.dir),
            file: recovered.journal,
            len: recovered.journal_len,
            snapshot_len: recovered.snapshot_len,
            state: recovered.state,
            compact_bytes,
            poisoned: None,
            on_durable,
            lazy_sync,
            unsynced: Vec::new(),
            unsynced_since: None,
        };
        let thread = std::thread::Builder::new()
            .name(D::FILES.thread.into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| CoreError::Internal {
                what: "starting a journal writer thread",
                reason: e.to_string(),
            })?;
        Ok(Journal {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues ops as one record. `done`, if given, gets `Ok` once the record is durable
    /// (and applied through `on_durable`), or the reason it never will be.
    pub fn submit(
        &self,
        ops: Vec<D::Op>,
        done: Option<Completion>,
    ) -> std::result::Result<(), JournalError> {
        let closed = || JournalError::new(format!("the {} is closed", D::FILES.what));
        let tx = lock(&self.tx).clone().ok_or_else(closed)?;
        tx.send(Queued { ops, done }).map_err(|_| closed())
    }

    /// Stops accepting writes, lets the thread finish the queue, and waits for it. The
    /// caller must not hold a lock that `on_durable` takes.
    pub fn close(&self) {
        drop(lock(&self.tx).take());
        let thread = lock(&self.thread).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                error!("the {} thread panicked", D::FILES.what);
            }
        }
    }
}

impl<D: Durable> Drop for Journal<D> {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer<D: Durable> {
    dir: PathBuf,
    file: File,
    len: u64,
    snapshot_len: u64,
    state: D,
    compact_bytes: u64,
    poisoned: Option<String>,
    on_durable: Option<OnDurable<D::Op>>,
    lazy_sync: Option<Duration>,
    /// Written, not yet synced (lazy records), oldest first.
    unsynced: Vec<Queued<D::Op>>,
    unsynced_since: Option<Instant>,
}

fn fail_all<Op>(batch: Vec<Queued<Op>>, e: &JournalError) {
    for w in batch {
        if let Some(done) = w.done {
            let _ = done.send(Err(e.clone()));
        }
    }
}

impl<D: Durable> Writer<D> {
    fn run(&mut self, rx: &mpsc::Receiver<Queued<D::Op>>) {
        loop {
            let first = match (self.lazy_sync, self.unsynced_since) {
                (Some(lazy), Some(since)) => {
                    let left = (since + lazy).saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(w) => w,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.write_batch(Vec::new(), true);
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(w) => w,
                    Err(_) => break,
                },
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            let sync = self.lazy_sync.is_none() || batch.iter().any(|w| w.done.is_some());
            self.write_batch(batch, sync);
        }
        // Closing: what was written lazily is synced before the thread ends.
        if self.unsynced_since.is_some() {
            self.write_batch(Vec::new(), true);
        }
    }

    /// Writes `batch`; with `sync`, syncs it and everything written lazily before it,
    /// then applies and answers all of it.
    fn write_batch(&mut self, batch: Vec<Queued<D::Op>>, sync: bool) {
        let what = D::FILES.what;
        if let Some(reason) = &self.poisoned {
            let e = JournalError::new(format!("the {what} failed earlier: {reason}"));
            fail_all(batch, &e);
            return;
        }
        let mut bytes = Vec::new();
        for w in &batch {
            bytes.extend(encode_record::<D>(&w.ops));
        }
        let path = self.dir.join(D::FILES.journal);
        // After a failed write or sync, what reached the disk is unknown: refuse
        // everything from here on (the next open recovers what is there).
        let mut written = self.file.write_all(&bytes);
        if written.is_ok() && sync {
            written = self.file.sync_data();
        }
        if let Err(e) = written {
            error!(path = %path.display(), error = %e, "{what} write failed; refusing further writes until restart");
            self.poisoned = Some(e.to_string());
            let e = JournalError::new(format!("writing the {what}: {e}"));
            fail_all(std::mem::take(&mut self.unsynced), &e);
            self.unsynced_since = None;
            fail_all(batch, &e);
            return;
        }
        self.len += bytes.len() as u64;
        if !sync {
            self.unsynced.extend(batch);
            self.unsynced_since.get_or_insert_with(Instant::now);
            return;
        }
        self.unsynced_since = None;
        let earlier = std::mem::take(&mut self.unsynced);
        for w in earlier.into_iter().chain(batch) {
            self.state.apply(&w.ops);
            if let Some(on_durable) = &self.on_durable {
                on_durable(&w.ops);
            }
            if let Some(done) = w.done {
                let _ = done.send(Ok(()));
            }
        }
        if self.len > self.compact_bytes.max(self.snapshot_len) {
            if let Err(e) = self.compact() {
                // The journal is intact, so nothing is lost; try again next time.
                warn!(error = %e, "compacting the {what} failed");
            }
        }
    }

    fn compact(&mut self) -> Result<()> {
        let files = D::FILES;
        let snapshot = encode_snapshot(&self.state);
        let tmp = self.dir.join(tmp_name(files.snapshot));
        {
            let mut f = File::create(&tmp).ctx("create", &tmp)?;
            f.write_all(&snapshot).ctx("write", &tmp)?;
            f.sync_all().ctx("sync", &tmp)?;
        }
        let path = self.dir.join(files.snapshot);
        fs::rename(&tmp, &path).ctx("rename", &tmp)?;
        sync_dir(&self.dir)?;
        self.file = create_empty(&self.dir, files.journal, files.journal_magic)?;
        info!(
            journal_bytes = self.len,
            snapshot_bytes = snapshot.len(),
            items = self.state.item_count(),
            "{} compacted",
            files.what
        );
        self.len = HEADER_LEN as u64;
        self.snapshot_len = snapshot.len() as u64;
        Ok(())
    }
}

/// The snapshot file's bytes for `state`: its snapshot records, then the End record.
pub fn encode_snapshot<D: Durable>(state: &D) -> Vec<u8> {
    let mut out = header(D::FILES.snapshot_magic);
    let mut count = 0u64;
    for ops in state.snapshot_records() {
        out.extend(encode_record::<D>(&ops));
        count += 1;
    }
    let mut end = 1u32.to_le_bytes().to_vec();
    end.push(D::FILES.end_tag);
    end.extend(count.to_le_bytes());
    out.extend(frame(end));
    out
}
