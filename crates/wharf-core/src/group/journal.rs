//! The offsets journal: committed offsets and group metadata, durable across restarts
//! and crashes.
//!
//! ```text
//! <data-dir>/groups/offsets.journal    header, then records appended one batch at a time
//!                  /offsets.snapshot   header, the compacted state as records, an End op
//!                  /offsets.snapshot.tmp   a snapshot being written (removed on open)
//!
//! header:  | magic (8 bytes)                   | version u32 LE = 1 |
//!            "WHFGJRN1" (journal), "WHFGSNP1" (snapshot)
//!
//! record:  | len u32 LE | crc32c(payload) u32 LE | payload (len bytes)                |
//! payload: | op count u32 LE | op | op | ...                                         |
//! op:      | tag u8 | fields; strings are u32 LE length + UTF-8, integers LE         |
//!   1 Commit      group, topic, partition i32, offset i64, leader epoch i32,
//!                 metadata, commit timestamp i64
//!   2 DeleteOffset group, topic, partition i32
//!   3 GroupMeta   group, protocol type, generation i32
//!   4 DeleteGroup group (its offsets go with it)
//!   5 End         record count u64 (snapshot only: its last op)
//! ```
//!
//! One record holds every op of one request, so an OffsetCommit of many partitions is
//! all or nothing. A record is acknowledged only after an `fdatasync` covers it; many
//! concurrent requests share one write and one sync (group commit), done by a dedicated
//! writer thread.
//!
//! Torn tails: a crash may leave a partial record at the end (a short length, a short
//! payload, a CRC mismatch). Such a record was never acknowledged, because its sync had
//! not returned. On open the journal is cut at the first record that does not check out;
//! everything before it is kept. After a failed write or sync the writer refuses all
//! further records rather than guess what reached the disk.
//!
//! Compaction: when the journal outgrows `journal_compact_bytes` (and the last
//! snapshot), the writer writes the whole state to `offsets.snapshot.tmp`, syncs it,
//! renames it over `offsets.snapshot`, syncs the directory, and then replaces the journal
//! with an empty one the same way. A crash between the two renames leaves the old journal
//! beside the new snapshot; replaying it again is harmless because every op is a blind
//! write of the keys it names (last writer wins), so the replay ends in the same state.
//! A snapshot is written atomically, so a damaged one is an error, never truncated.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::error::GroupError;
use super::state::{CommittedOffset, TopicPartition};
use crate::error::{CoreError, IoContext, Result};
use crate::registry::sync_dir;

/// Folder of the group coordinator's files, under the data directory.
pub const GROUPS_DIR: &str = "groups";
pub const JOURNAL_FILE: &str = "offsets.journal";
pub const SNAPSHOT_FILE: &str = "offsets.snapshot";
const SNAPSHOT_TMP: &str = "offsets.snapshot.tmp";
const JOURNAL_TMP: &str = "offsets.journal.tmp";

const JOURNAL_MAGIC: &[u8; 8] = b"WHFGJRN1";
const SNAPSHOT_MAGIC: &[u8; 8] = b"WHFGSNP1";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 12;
const RECORD_HEADER_LEN: usize = 8;
/// Larger records are refused when written and treated as corrupt when read.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// One change to the durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Commit {
        group: String,
        tp: TopicPartition,
        offset: CommittedOffset,
    },
    DeleteOffset {
        group: String,
        tp: TopicPartition,
    },
    GroupMeta {
        group: String,
        protocol_type: String,
        generation: i32,
    },
    DeleteGroup {
        group: String,
    },
}

/// What is durable about one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

/// The durable state: every group the journal knows.
pub type DurableState = BTreeMap<String, DurableGroup>;

/// Applies ops in order. Used by recovery and by the writer's copy of the state.
pub fn apply(state: &mut DurableState, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Commit { group, tp, offset } => {
                state
                    .entry(group.clone())
                    .or_default()
                    .offsets
                    .insert(tp.clone(), offset.clone());
            }
            Op::DeleteOffset { group, tp } => {
                if let Some(g) = state.get_mut(group) {
                    g.offsets.remove(tp);
                }
            }
            Op::GroupMeta {
                group,
                protocol_type,
                generation,
            } => {
                let g = state.entry(group.clone()).or_default();
                g.protocol_type.clone_from(protocol_type);
                g.generation = *generation;
            }
            Op::DeleteGroup { group } => {
                state.remove(group);
            }
        }
    }
}

// ---- encoding -------------------------------------------------------------------------

const TAG_COMMIT: u8 = 1;
const TAG_DELETE_OFFSET: u8 = 2;
const TAG_GROUP_META: u8 = 3;
const TAG_DELETE_GROUP: u8 = 4;
const TAG_END: u8 = 5;

fn put_str(b: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    b.extend(len.to_le_bytes());
    b.extend(s.as_bytes());
}

fn encode_op(b: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Commit { group, tp, offset } => {
            b.push(TAG_COMMIT);
            put_str(b, group);
            put_str(b, &tp.topic);
            b.extend(tp.partition.to_le_bytes());
            b.extend(offset.offset.to_le_bytes());
            b.extend(offset.leader_epoch.to_le_bytes());
            put_str(b, &offset.metadata);
            b.extend(offset.commit_timestamp_ms.to_le_bytes());
        }
        Op::DeleteOffset { group, tp } => {
            b.push(TAG_DELETE_OFFSET);
            put_str(b, group);
            put_str(b, &tp.topic);
            b.extend(tp.partition.to_le_bytes());
        }
        Op::GroupMeta {
            group,
            protocol_type,
            generation,
        } => {
            b.push(TAG_GROUP_META);
            put_str(b, group);
            put_str(b, protocol_type);
            b.extend(generation.to_le_bytes());
        }
        Op::DeleteGroup { group } => {
            b.push(TAG_DELETE_GROUP);
            put_str(b, group);
        }
    }
}

/// Frames ops as one record: length, CRC-32C, payload.
pub fn encode_record(ops: &[Op]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend(u32::try_from(ops.len()).unwrap_or(u32::MAX).to_le_bytes());
    for op in ops {
        encode_op(&mut payload, op);
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

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.0.split_first_chunk::<N>()?;
        self.0 = tail;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes::<1>()?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_le_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.bytes().map(i32::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.bytes().map(i64::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_le_bytes)
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.u32()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (s, tail) = self.0.split_at(len);
        self.0 = tail;
        String::from_utf8(s.to_vec()).ok()
    }
}

enum Decoded {
    Ops(Vec<Op>),
    End(u64),
}

fn decode_payload(payload: &[u8]) -> Option<Decoded> {
    let mut r = Reader(payload);
    let count = r.u32()?;
    let mut ops = Vec::new();
    for _ in 0..count {
        let op = match r.u8()? {
            TAG_COMMIT => Op::Commit {
                group: r.string()?,
                tp: TopicPartition {
                    topic: r.string()?,
                    partition: r.i32()?,
                },
                offset: CommittedOffset {
                    offset: r.i64()?,
                    leader_epoch: r.i32()?,
                    metadata: r.string()?,
                    commit_timestamp_ms: r.i64()?,
                },
            },
            TAG_DELETE_OFFSET => Op::DeleteOffset {
                group: r.string()?,
                tp: TopicPartition {
                    topic: r.string()?,
                    partition: r.i32()?,
                },
            },
            TAG_GROUP_META => Op::GroupMeta {
                group: r.string()?,
                protocol_type: r.string()?,
                generation: r.i32()?,
            },
            TAG_DELETE_GROUP => Op::DeleteGroup { group: r.string()? },
            TAG_END if count == 1 => {
                let n = r.u64()?;
                return r.0.is_empty().then_some(Decoded::End(n));
            }
            _ => return None,
        };
        ops.push(op);
    }
    r.0.is_empty().then_some(Decoded::Ops(ops))
}

/// Reads records from `buf` (after the header). Returns the decoded records and the
/// length of the valid prefix; `None` in the second slot means the end was clean.
fn scan(buf: &[u8]) -> (Vec<Decoded>, usize, Option<&'static str>) {
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
        let Some(decoded) = decode_payload(payload) else {
            return (out, pos, Some("an undecodable record"));
        };
        out.push(decoded);
        pos += RECORD_HEADER_LEN + len;
    }
    (out, pos, None)
}

fn header(magic: &[u8; 8]) -> Vec<u8> {
    let mut h = magic.to_vec();
    h.extend(VERSION.to_le_bytes());
    h
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CoreError {
    CoreError::CorruptGroupJournal {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn check_header(path: &Path, buf: &[u8], magic: &[u8; 8]) -> Result<()> {
    if &buf[..8] != magic {
        return Err(corrupt(path, "not a Wharf group file (bad magic)"));
    }
    let version = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if version != VERSION {
        return Err(corrupt(
            path,
            format!("format version {version}, this Wharf reads version {VERSION}"),
        ));
    }
    Ok(())
}

fn load_snapshot(path: &Path) -> Result<(DurableState, u64)> {
    let buf = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((DurableState::new(), 0)),
        Err(e) => return Err(e).ctx("read", path),
    };
    if buf.len() < HEADER_LEN {
        return Err(corrupt(path, "snapshot shorter than its header"));
    }
    check_header(path, &buf, SNAPSHOT_MAGIC)?;
    let (records, _, problem) = scan(&buf[HEADER_LEN..]);
    if let Some(problem) = problem {
        return Err(corrupt(path, format!("snapshot damaged: {problem}")));
    }
    let mut state = DurableState::new();
    let mut count = 0u64;
    let mut ended = false;
    for r in records {
        match r {
            Decoded::Ops(ops) if !ended => {
                apply(&mut state, &ops);
                count += 1;
            }
            Decoded::End(n) if !ended && n == count => ended = true,
            _ => return Err(corrupt(path, "snapshot damaged: misplaced end marker")),
        }
    }
    if !ended {
        return Err(corrupt(path, "snapshot damaged: no end marker"));
    }
    Ok((state, buf.len() as u64))
}

/// What [`open`] found.
pub struct Recovered {
    pub state: DurableState,
    /// Bytes cut from a torn or corrupt journal tail.
    pub truncated_bytes: u64,
    journal: File,
    journal_len: u64,
    snapshot_len: u64,
}

fn create_empty(dir: &Path, tmp: &str, name: &str, magic: &[u8; 8]) -> Result<File> {
    let tmp_path = dir.join(tmp);
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

/// Opens (or creates) `<data_dir>/groups`, loads the snapshot, replays the journal and
/// cuts its torn tail.
pub fn open(data_dir: &Path) -> Result<Recovered> {
    let dir = data_dir.join(GROUPS_DIR);
    if !dir.is_dir() {
        fs::create_dir_all(&dir).ctx("create", &dir)?;
        // Without this a crash could lose the folder, and acknowledged offsets with it.
        sync_dir(data_dir)?;
    }
    for tmp in [SNAPSHOT_TMP, JOURNAL_TMP] {
        let p = dir.join(tmp);
        if let Err(e) = fs::remove_file(&p) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(e).ctx("remove", &p);
            }
        }
    }
    let (mut state, snapshot_len) = load_snapshot(&dir.join(SNAPSHOT_FILE))?;
    let path = dir.join(JOURNAL_FILE);
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
        let journal = create_empty(&dir, JOURNAL_TMP, JOURNAL_FILE, JOURNAL_MAGIC)?;
        return Ok(Recovered {
            state,
            truncated_bytes: buf.len() as u64,
            journal,
            journal_len: HEADER_LEN as u64,
            snapshot_len,
        });
    }
    check_header(&path, &buf, JOURNAL_MAGIC)?;
    let (records, valid, problem) = scan(&buf[HEADER_LEN..]);
    for r in &records {
        match r {
            Decoded::Ops(ops) => apply(&mut state, ops),
            Decoded::End(_) => {
                return Err(corrupt(&path, "an end marker inside the journal"));
            }
        }
    }
    let good = (HEADER_LEN + valid) as u64;
    let truncated = buf.len() as u64 - good;
    if let Some(problem) = problem {
        warn!(
            path = %path.display(), at = good, cut_bytes = truncated,
            "offsets journal ends in {problem}; cutting it at the last good record"
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
        groups = state.len(),
        records = records.len(),
        "group offsets recovered"
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
/// durable and before its requester is told.
pub type OnDurable = Box<dyn Fn(&[Op]) + Send>;

struct Queued {
    ops: Vec<Op>,
    done: Option<oneshot::Sender<Result<(), GroupError>>>,
}

/// Handle to the writer thread. Dropping it lets the thread finish what was queued and
/// exit, and waits for it.
///
/// Its locks are held only to clone or take the sender and the thread handle, so
/// `submit` may be called under the coordinator's lock while another task closes the
/// journal (the thread may need the coordinator's lock to finish its queue).
pub struct Journal {
    tx: Mutex<Option<mpsc::Sender<Queued>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each guarded value is replaced in one assignment: poisoning cannot tear it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Journal {
    /// Starts the writer thread over a recovered journal.
    pub fn start(
        data_dir: &Path,
        recovered: Recovered,
        compact_bytes: u64,
        on_durable: OnDurable,
    ) -> Result<Journal> {
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            dir: data_dir.join(GROUPS_DIR),
            file: recovered.journal,
            len: recovered.journal_len,
            snapshot_len: recovered.snapshot_len,
            state: recovered.state,
            compact_bytes,
            poisoned: None,
            on_durable,
        };
        let thread = std::thread::Builder::new()
            .name("wharf-groups-journal".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| CoreError::Internal {
                what: "starting the offsets journal thread",
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
        ops: Vec<Op>,
        done: Option<oneshot::Sender<Result<(), GroupError>>>,
    ) -> Result<(), GroupError> {
        let closed = || GroupError::unavailable("the offsets journal is closed");
        let tx = lock(&self.tx).clone().ok_or_else(closed)?;
        tx.send(Queued { ops, done }).map_err(|_| closed())
    }

    /// Stops accepting writes, lets the thread finish the queue, and waits for it. The
    /// caller must not hold the coordinator's lock.
    pub fn close(&self) {
        drop(lock(&self.tx).take());
        let thread = lock(&self.thread).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                error!("the offsets journal thread panicked");
            }
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    dir: PathBuf,
    file: File,
    len: u64,
    snapshot_len: u64,
    state: DurableState,
    compact_bytes: u64,
    poisoned: Option<String>,
    on_durable: OnDurable,
}

/// How many queued requests one write and sync may cover.
const MAX_BATCH: usize = 1024;

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Queued>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            self.write_batch(batch);
        }
    }

    fn write_batch(&mut self, batch: Vec<Queued>) {
        if let Some(reason) = &self.poisoned {
            let e =
                GroupError::unavailable(format!("the offsets journal failed earlier: {reason}"));
            for w in batch {
                if let Some(done) = w.done {
                    let _ = done.send(Err(e.clone()));
                }
            }
            return;
        }
        let mut bytes = Vec::new();
        for w in &batch {
            bytes.extend(encode_record(&w.ops));
        }
        let path = self.dir.join(JOURNAL_FILE);
        // After a failed write or sync, what reached the disk is unknown: refuse
        // everything from here on (the next open recovers what is there).
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            error!(path = %path.display(), error = %e, "offsets journal write failed; refusing further commits until restart");
            self.poisoned = Some(e.to_string());
            let e = GroupError::unavailable(format!("writing the offsets journal: {e}"));
            for w in batch {
                if let Some(done) = w.done {
                    let _ = done.send(Err(e.clone()));
                }
            }
            return;
        }
        self.len += bytes.len() as u64;
        for w in batch {
            apply(&mut self.state, &w.ops);
            (self.on_durable)(&w.ops);
            if let Some(done) = w.done {
                let _ = done.send(Ok(()));
            }
        }
        if self.len > self.compact_bytes.max(self.snapshot_len) {
            if let Err(e) = self.compact() {
                // The journal is intact, so nothing is lost; try again next time.
                warn!(error = %e, "compacting the offsets journal failed");
            }
        }
    }

    fn compact(&mut self) -> Result<()> {
        let snapshot = encode_snapshot(&self.state);
        let tmp = self.dir.join(SNAPSHOT_TMP);
        {
            let mut f = File::create(&tmp).ctx("create", &tmp)?;
            f.write_all(&snapshot).ctx("write", &tmp)?;
            f.sync_all().ctx("sync", &tmp)?;
        }
        let path = self.dir.join(SNAPSHOT_FILE);
        fs::rename(&tmp, &path).ctx("rename", &tmp)?;
        sync_dir(&self.dir)?;
        self.file = create_empty(&self.dir, JOURNAL_TMP, JOURNAL_FILE, JOURNAL_MAGIC)?;
        info!(
            journal_bytes = self.len,
            snapshot_bytes = snapshot.len(),
            groups = self.state.len(),
            "offsets journal compacted"
        );
        self.len = HEADER_LEN as u64;
        self.snapshot_len = snapshot.len() as u64;
        Ok(())
    }
}

/// The snapshot file's bytes for `state`: one record per group, then the End record.
pub fn encode_snapshot(state: &DurableState) -> Vec<u8> {
    let mut out = header(SNAPSHOT_MAGIC);
    let mut count = 0u64;
    for (name, g) in state {
        let mut ops = vec![Op::GroupMeta {
            group: name.clone(),
            protocol_type: g.protocol_type.clone(),
            generation: g.generation,
        }];
        ops.extend(g.offsets.iter().map(|(tp, o)| Op::Commit {
            group: name.clone(),
            tp: tp.clone(),
            offset: o.clone(),
        }));
        out.extend(encode_record(&ops));
        count += 1;
    }
    let mut end = 1u32.to_le_bytes().to_vec();
    end.push(TAG_END);
    end.extend(count.to_le_bytes());
    out.extend(frame(end));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(group: &str, partition: i32, offset: i64) -> Op {
        Op::Commit {
            group: group.into(),
            tp: TopicPartition::new("t", partition),
            offset: CommittedOffset {
                offset,
                leader_epoch: -1,
                metadata: "m".into(),
                commit_timestamp_ms: 7,
            },
        }
    }

    #[test]
    fn records_round_trip() {
        let ops = vec![
            commit("g", 0, 5),
            Op::DeleteOffset {
                group: "g".into(),
                tp: TopicPartition::new("t", 1),
            },
            Op::GroupMeta {
                group: "g".into(),
                protocol_type: "consumer".into(),
                generation: 3,
            },
            Op::DeleteGroup { group: "h".into() },
        ];
        let rec = encode_record(&ops);
        let (decoded, valid, problem) = scan(&rec);
        assert_eq!((valid, problem), (rec.len(), None));
        match &decoded[..] {
            [Decoded::Ops(got)] => assert_eq!(got, &ops),
            _ => panic!("expected one record"),
        }
    }

    /// Pins the on-disk layout: a change here strands users' offsets, so it must come
    /// with a new version number and a reader for the old one.
    #[test]
    fn the_record_layout_is_version_1() {
        let rec = encode_record(&[commit("g", 2, 5)]);
        let mut payload = vec![1, 0, 0, 0, TAG_COMMIT];
        payload.extend([1, 0, 0, 0, b'g']);
        payload.extend([1, 0, 0, 0, b't']);
        payload.extend(2i32.to_le_bytes());
        payload.extend(5i64.to_le_bytes());
        payload.extend((-1i32).to_le_bytes());
        payload.extend([1, 0, 0, 0, b'm']);
        payload.extend(7i64.to_le_bytes());
        let mut expected = (payload.len() as u32).to_le_bytes().to_vec();
        expected.extend(crc32c::crc32c(&payload).to_le_bytes());
        expected.extend(&payload);
        assert_eq!(rec, expected);
        assert_eq!(header(JOURNAL_MAGIC), b"WHFGJRN1\x01\0\0\0");
    }

    #[test]
    fn scan_stops_at_every_kind_of_damage() {
        let mut buf = encode_record(&[commit("g", 0, 1)]);
        let good = buf.len();
        buf.extend(encode_record(&[commit("g", 0, 2)]));
        for cut in good..buf.len() {
            let (recs, valid, problem) = scan(&buf[..cut]);
            assert_eq!((recs.len(), valid), (1, good), "cut at {cut}");
            assert!(problem.is_some() || cut == good);
        }
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert_eq!(scan(&flipped).1, good);
    }

    #[test]
    fn replaying_a_journal_over_its_own_snapshot_changes_nothing() {
        let journal = vec![
            vec![commit("g", 0, 5)],
            vec![Op::DeleteGroup { group: "g".into() }],
            vec![commit("g", 1, 7), commit("h", 0, 1)],
            vec![Op::DeleteOffset {
                group: "h".into(),
                tp: TopicPartition::new("t", 0),
            }],
        ];
        let mut once = DurableState::new();
        for ops in &journal {
            apply(&mut once, ops);
        }
        let mut twice = once.clone();
        for ops in &journal {
            apply(&mut twice, ops);
        }
        assert_eq!(once, twice);
    }
}
