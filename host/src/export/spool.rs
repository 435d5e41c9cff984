//! The exporter's optional persistent queue (`exporters.otlp.sending_queue.persistent`): encoded batches
//! wait on disk instead of in memory while the downstream is slow or down, and survive a restart (or a
//! `kill -9`) of tailgate.
//!
//! # On disk
//!
//! A directory of append-only segment files, `<seq>.seg` (20-digit sequence numbers), each a run of
//! records:
//!
//! ```text
//!  "TGQ1" | payload length u32 LE | spans u32 LE | CRC-32 of (spans LE ++ payload) u32 LE | payload
//! ```
//!
//! where the payload is the encoded `ExportTraceServiceRequest` as it will be sent. Beside each segment,
//! `<seq>.ack` lists (u32 LE) the index of every record of that segment that has been settled (delivered,
//! or given up on and counted lost). A segment whose records are all settled is deleted with its ack file.
//! A running tailgate appends only to its newest segment; after a restart it starts a new one, so a record
//! torn by a crash can only be the last of a segment, where reading stops.
//!
//! # Guarantees
//!
//! - A batch counts as queued (`tailgate_persistent_queue_spans`) once it is written to the OS, and with
//!   `fsync: always` once `fdatasync` returned: a kill of tailgate never loses it; a crash of the machine
//!   loses nothing with `always`, up to `fsync_interval` of batches with `interval`, anything the OS had
//!   not written back with `never`.
//! - Acks are not synced: after a crash a settled batch may be sent again (at least once, never lost).
//! - Bounded: undelivered batches never take more than `max_bytes`; when full, `when_full: block` waits
//!   (backpressure up to the clients), `when_full: drop` counts the batch in
//!   `tailgate_spans_lost_total{reason="persistent_queue_full"}`. Disk use can exceed `max_bytes` by the
//!   settled records of the few segments still holding an undelivered one.
//! - A record that fails its checksum is skipped and counted in
//!   `tailgate_persistent_queue_corrupt_records_total` (its spans cannot be known).

use super::{Batch, BatchSender, Outcome};
use crate::config::{FsyncPolicy, PersistentQueue, WhenFull};
use crate::metrics::Metrics;
use bytes::Bytes;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const MAGIC: &[u8; 4] = b"TGQ1";
const HEADER: u64 = 16;

/// Why the persistent queue could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("persistent queue `{path}`: {what}: {source}")]
pub struct SpoolError {
    pub path: PathBuf,
    pub what: &'static str,
    pub source: std::io::Error,
}

/// Why a batch was not queued on disk.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The queue is at `max_bytes` (and `when_full` is `drop`, or shutdown came while waiting).
    Full,
    /// The batch alone is larger than `max_bytes`.
    TooLarge,
    /// Writing failed (disk full, I/O error).
    Io(std::io::Error),
}

/// Where one record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordRef {
    segment: u64,
    index: u32,
    offset: u64,
    len: u32,
    pub spans: u32,
}

impl RecordRef {
    fn disk_bytes(&self) -> u64 {
        HEADER + u64::from(self.len)
    }
}

struct Segment {
    /// Records not yet settled.
    live: usize,
    /// No more records will be appended.
    sealed: bool,
    /// The ack file, opened on the first ack.
    acks: Option<File>,
}

struct Active {
    segment: u64,
    file: File,
    len: u64,
    records: u32,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    active: Option<Active>,
    next_segment: u64,
    /// Written, not yet handed to a sender, oldest first.
    pending: VecDeque<RecordRef>,
    live_bytes: u64,
    live_spans: u64,
    /// Written since the last fsync (for `fsync: interval`).
    dirty: bool,
    /// No more appends will come (the batcher finished).
    input_closed: bool,
}

/// The persistent queue. Its methods do blocking file I/O: call them from blocking threads
/// (`spawn_blocking`), except the async ones.
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    fsync: FsyncPolicy,
    pub when_full: WhenFull,
    state: Mutex<State>,
    /// Signalled when a record is appended or the input closes (one waiter: the dispatcher).
    ready: Notify,
    /// Signalled when a record is settled (one waiter: the batcher, blocked on a full queue).
    room: Notify,
    metrics: Arc<Metrics>,
    /// Held for the spool's lifetime: one tailgate per directory (released by the OS on a crash).
    _lock: File,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn ack_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.ack"))
}

fn checksum(spans: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&spans.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn le32(b: &[u8]) -> u32 {
    // Callers pass 4-byte slices of a fixed-size header.
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl Spool {
    /// Opens (creating if needed) the queue directory and recovers what a previous run left undelivered.
    pub fn open(cfg: &PersistentQueue, metrics: Arc<Metrics>) -> Result<Spool, SpoolError> {
        let dir = cfg.path.clone();
        let err = |what: &'static str| {
            let path = dir.clone();
            move |source| SpoolError { path, what, source }
        };
        std::fs::create_dir_all(&dir).map_err(err("cannot create the directory"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(err("cannot open the lock file"))?;
        lock.try_lock().map_err(|e| SpoolError {
            path: dir.clone(),
            what: "in use by another tailgate (LOCK is held)",
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut state = State {
            segments: BTreeMap::new(),
            active: None,
            next_segment: 0,
            pending: VecDeque::new(),
            live_bytes: 0,
            live_spans: 0,
            dirty: false,
            input_closed: false,
        };
        let mut seqs: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(err("cannot list the directory"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        seqs.sort_unstable();
        let mut corrupt = 0u64;
        for seq in seqs {
            let (records, bad) =
                recover_segment(&dir, seq).map_err(err("cannot read a segment"))?;
            corrupt += bad;
            if records.is_empty() {
                let _ = std::fs::remove_file(segment_path(&dir, seq));
                let _ = std::fs::remove_file(ack_path(&dir, seq));
            } else {
                state.segments.insert(
                    seq,
                    Segment {
                        live: records.len(),
                        sealed: true,
                        acks: None,
                    },
                );
                for r in records {
                    state.live_bytes += r.disk_bytes();
                    state.live_spans += u64::from(r.spans);
                    state.pending.push_back(r);
                }
            }
            state.next_segment = seq + 1;
        }
        if corrupt > 0 {
            tracing::warn!(
                path = %dir.display(),
                records = corrupt,
                "persistent queue: skipped records with a bad checksum or cut short by a crash"
            );
            metrics.persistent_queue_corrupt_records.inc_by(corrupt);
        }
        if state.live_spans > 0 {
            tracing::info!(
                path = %dir.display(),
                spans = state.live_spans,
                batches = state.pending.len(),
                "persistent queue: recovered undelivered batches; sending them first"
            );
        }
        metrics
            .persistent_queue_recovered_spans
            .inc_by(state.live_spans);
        metrics
            .persistent_queue_capacity_bytes
            .set(i64::try_from(cfg.max_bytes.0).unwrap_or(i64::MAX));
        let spool = Spool {
            dir,
            max_bytes: cfg.max_bytes.0,
            segment_bytes: cfg.segment_bytes.0,
            fsync: cfg.fsync,
            when_full: cfg.when_full,
            state: Mutex::new(state),
            ready: Notify::new(),
            room: Notify::new(),
            metrics,
            _lock: lock,
        };
        spool.publish(&spool.lock());
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is only changed in whole steps under the lock; a panic cannot leave half a step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, st: &State) {
        self.metrics
            .persistent_queue_spans
            .set(i64::try_from(st.live_spans).unwrap_or(i64::MAX));
        self.metrics
            .persistent_queue_bytes
            .set(i64::try_from(st.live_bytes).unwrap_or(i64::MAX));
    }

    /// Writes one batch (blocking). On success its spans are the queue's.
    pub fn append(&self, body: &[u8], spans: u32) -> Result<(), AppendError> {
        let len = u32::try_from(body.len()).map_err(|_| AppendError::TooLarge)?;
        let need = HEADER + u64::from(len);
        if need > self.max_bytes {
            return Err(AppendError::TooLarge);
        }
        let mut st = self.lock();
        if st.live_bytes + need > self.max_bytes {
            return Err(AppendError::Full);
        }
        let roll = st
            .active
            .as_ref()
            .is_none_or(|a| a.len > 0 && a.len + need > self.segment_bytes);
        if roll {
            self.seal_active(&mut st);
            let seq = st.next_segment;
            st.next_segment += 1;
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(segment_path(&self.dir, seq))
                .map_err(AppendError::Io)?;
            if self.fsync != FsyncPolicy::Never {
                // Make the new file's name durable too.
                if let Ok(d) = File::open(&self.dir) {
                    let _ = d.sync_all();
                }
            }
            st.segments.insert(
                seq,
                Segment {
                    live: 0,
                    sealed: false,
                    acks: None,
                },
            );
            st.active = Some(Active {
                segment: seq,
                file,
                len: 0,
                records: 0,
            });
        }
        let mut record = Vec::with_capacity(need as usize);
        record.extend_from_slice(MAGIC);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&spans.to_le_bytes());
        record.extend_from_slice(&checksum(spans, body).to_le_bytes());
        record.extend_from_slice(body);
        let Some(active) = st.active.as_mut() else {
            return Err(AppendError::Io(std::io::Error::other("no active segment")));
        };
        let written = active.file.write_all(&record).and_then(|()| {
            if self.fsync == FsyncPolicy::Always {
                active.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // The tail may be torn: never append to this segment again (reading stops at the tear).
            self.seal_active(&mut st);
            return Err(AppendError::Io(e));
        }
        let r = RecordRef {
            segment: active.segment,
            index: active.records,
            offset: active.len,
            len,
            spans,
        };
        active.len += need;
        active.records += 1;
        if let Some(seg) = st.segments.get_mut(&r.segment) {
            seg.live += 1;
        }
        st.live_bytes += need;
        st.live_spans += u64::from(spans);
        st.dirty = true;
        st.pending.push_back(r);
        self.publish(&st);
        drop(st);
        self.ready.notify_one();
        Ok(())
    }

    /// Writes one batch, waiting for room under `when_full: block` until `cancel` fires.
    pub async fn append_async(
        self: &Arc<Self>,
        body: Bytes,
        spans: u32,
        cancel: &CancellationToken,
    ) -> Result<(), AppendError> {
        loop {
            let spool = self.clone();
            let b = body.clone();
            let result = tokio::task::spawn_blocking(move || spool.append(&b, spans))
                .await
                .unwrap_or_else(|e| Err(AppendError::Io(std::io::Error::other(e.to_string()))));
            match result {
                Err(AppendError::Full) if self.when_full == WhenFull::Block => {
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return Err(AppendError::Full),
                        _ = self.room.notified() => {}
                        // A safety net only: every settle notifies.
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
                other => return other,
            }
        }
    }

    /// Seals the active segment; deletes it at once when it holds nothing undelivered.
    fn seal_active(&self, st: &mut State) {
        if let Some(a) = st.active.take() {
            let empty = st.segments.get_mut(&a.segment).is_none_or(|s| {
                s.sealed = true;
                s.live == 0
            });
            if empty {
                self.remove_segment(st, a.segment);
            }
        }
    }

    fn remove_segment(&self, st: &mut State, seq: u64) {
        st.segments.remove(&seq);
        let _ = std::fs::remove_file(segment_path(&self.dir, seq));
        let _ = std::fs::remove_file(ack_path(&self.dir, seq));
    }

    /// The next record to send, waiting for one; `None` once the input is closed and nothing is pending.
    pub async fn next(&self) -> Option<RecordRef> {
        loop {
            {
                let mut st = self.lock();
                if let Some(r) = st.pending.pop_front() {
                    return Some(r);
                }
                if st.input_closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// No more appends: [`Spool::next`] ends once the pending records are handed out.
    pub fn close_input(&self) {
        self.lock().input_closed = true;
        self.ready.notify_one();
    }

    /// Reads a record's payload back (blocking), checking its checksum.
    pub fn read(&self, r: &RecordRef) -> std::io::Result<Bytes> {
        let mut f = File::open(segment_path(&self.dir, r.segment))?;
        f.seek(SeekFrom::Start(r.offset))?;
        let mut buf = vec![0u8; (HEADER + u64::from(r.len)) as usize];
        f.read_exact(&mut buf)?;
        let (header, payload) = buf.split_at(HEADER as usize);
        if header[0..4] != MAGIC[..]
            || le32(&header[4..8]) != r.len
            || le32(&header[12..16]) != checksum(r.spans, payload)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "record checksum mismatch",
            ));
        }
        Ok(Bytes::copy_from_slice(payload))
    }

    /// Settles a record (delivered, or given up on and counted): it will not be sent again (blocking).
    pub fn ack(&self, r: &RecordRef) {
        let mut st = self.lock();
        let dir = &self.dir;
        let Some(seg) = st.segments.get_mut(&r.segment) else {
            return;
        };
        seg.live = seg.live.saturating_sub(1);
        let (live, sealed) = (seg.live, seg.sealed);
        if live > 0 {
            if seg.acks.is_none() {
                seg.acks = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(ack_path(dir, r.segment))
                    .ok();
            }
            // Not synced: a lost ack only means the batch may be sent again after a crash.
            if let Some(f) = seg.acks.as_mut()
                && let Err(e) = f.write_all(&r.index.to_le_bytes())
            {
                tracing::warn!(error = %e, "persistent queue: cannot record a delivery; the batch may be sent again after a restart");
            }
        }
        st.live_bytes = st.live_bytes.saturating_sub(r.disk_bytes());
        st.live_spans = st.live_spans.saturating_sub(u64::from(r.spans));
        if live == 0 {
            if sealed {
                self.remove_segment(&mut st, r.segment);
            } else if st.active.as_ref().is_some_and(|a| a.segment == r.segment) {
                // Everything written so far is delivered: start afresh rather than keep a settled file.
                self.seal_active(&mut st);
            }
        }
        self.publish(&st);
        drop(st);
        self.room.notify_one();
    }

    /// `fdatasync` of the active segment if anything was written since the last one (blocking).
    pub fn sync(&self) {
        let mut st = self.lock();
        if !st.dirty {
            return;
        }
        st.dirty = false;
        if let Some(a) = &st.active
            && let Err(e) = a.file.sync_data()
        {
            tracing::warn!(error = %e, "persistent queue: fsync failed");
        }
    }
}

/// Reads one segment after a restart: its unsettled records, and how many records were unreadable.
fn recover_segment(dir: &Path, seq: u64) -> std::io::Result<(Vec<RecordRef>, u64)> {
    let mut acked = HashSet::new();
    if let Ok(bytes) = std::fs::read(ack_path(dir, seq)) {
        // A torn last ack (crash mid-write) is ignored: the batch is sent again.
        for c in bytes.chunks_exact(4) {
            acked.insert(le32(c));
        }
    }
    let data = std::fs::read(segment_path(dir, seq))?;
    let mut records = Vec::new();
    let (mut at, mut index, mut corrupt) = (0usize, 0u32, 0u64);
    while at < data.len() {
        let Some(header) = data.get(at..at + HEADER as usize) else {
            corrupt += 1; // torn header
            break;
        };
        let len = le32(&header[4..8]);
        let spans = le32(&header[8..12]);
        let end = at + HEADER as usize + len as usize;
        let payload = data.get(at + HEADER as usize..end);
        let valid = header[0..4] == MAGIC[..]
            && payload.is_some_and(|p| checksum(spans, p) == le32(&header[12..16]));
        if !valid {
            // Lengths after a bad record cannot be trusted: the rest of the segment is skipped.
            corrupt += 1;
            break;
        }
        if !acked.contains(&index) {
            records.push(RecordRef {
                segment: seq,
                index,
                offset: at as u64,
                len,
                spans,
            });
        }
        at = end;
        index += 1;
    }
    Ok((records, corrupt))
}

/// Sends the queued records: one at a time per free consumer, oldest first; settles each in the metrics
/// and acks it. Ends when the input is closed and everything is settled, or at `cancel` (the shutdown
/// grace ran out), leaving what is undelivered on disk for the next start.
pub(crate) async fn dispatch(
    spool: Arc<Spool>,
    sender: Arc<BatchSender>,
    consumers: Arc<Semaphore>,
) {
    let cancel = sender.cancel.clone();
    let mut tasks = JoinSet::new();
    // Every sender also watches `cancel`, so the loop and the tasks end by the deadline.
    loop {
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            p = consumers.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let record = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = spool.next() => match r {
                Some(r) => r,
                None => break,
            },
        };
        let (spool, sender) = (spool.clone(), sender.clone());
        tasks.spawn(async move {
            deliver(&spool, &sender, record).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "persistent queue sender task failed");
        }
    }
}

async fn deliver(spool: &Arc<Spool>, sender: &BatchSender, record: RecordRef) {
    let s = spool.clone();
    let body = tokio::task::spawn_blocking(move || s.read(&record))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, spans = record.spans, "persistent queue: cannot read a batch back; counting it lost");
            spool.metrics.persistent_queue_corrupt_records.inc();
            spool
                .metrics
                .lost("persistent_queue_corrupt", u64::from(record.spans));
            settle_record(spool, record).await;
            return;
        }
    };
    // From disk: it holds no permits of the memory queue.
    let batch = Batch {
        body,
        spans: record.spans as usize,
        bytes: 0,
    };
    match sender.attempt(&batch).await {
        // Stays on disk for the next start: neither lost nor settled.
        Outcome::Shutdown => {}
        outcome => {
            sender.count(batch.spans, outcome);
            settle_record(spool, record).await;
        }
    }
}

async fn settle_record(spool: &Arc<Spool>, record: RecordRef) {
    let s = spool.clone();
    let _ = tokio::task::spawn_blocking(move || s.ack(&record)).await;
}

/// Under `fsync: interval`, syncs the active segment every `every` until `stop` fires.
pub(crate) async fn sync_every(spool: Arc<Spool>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let s = spool.clone();
        let _ = tokio::task::spawn_blocking(move || s.sync()).await;
    }
    let _ = tokio::task::spawn_blocking(move || spool.sync()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;

    fn cfg(dir: &Path, max: u64, seg: u64, when_full: WhenFull) -> PersistentQueue {
        PersistentQueue {
            path: dir.to_owned(),
            max_bytes: ByteSize(max),
            segment_bytes: ByteSize(seg),
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_secs(1),
            when_full,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tailgate-spool-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn files(dir: &Path, ext: &str) -> usize {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(ext))
                    .count()
            })
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn records_survive_reopen_and_acked_ones_are_not_replayed() {
        let dir = temp_dir("reopen");
        let m = Metrics::new();
        let c = cfg(&dir, 1 << 20, 100, WhenFull::Drop);
        {
            let s = Spool::open(&c, m.clone()).expect("opens");
            for i in 0..5u8 {
                s.append(&[i; 40], u32::from(i) + 1).expect("appends");
            }
            // 56-byte records in 100-byte segments: one record per segment.
            assert_eq!(files(&dir, ".seg"), 5);
            let first = s.next().await.expect("pending");
            let second = s.next().await.expect("pending");
            assert_eq!(s.read(&first).expect("reads").as_ref(), &[0u8; 40]);
            s.ack(&first);
            assert_eq!(files(&dir, ".seg"), 4, "a settled segment is deleted");
            assert_eq!(m.persistent_queue_spans.get(), 2 + 3 + 4 + 5);
            let _ = second; // handed out, never settled: still queued
            assert!(
                Spool::open(&c, Metrics::new()).is_err(),
                "a second tailgate cannot take the same directory"
            );
        }
        let m2 = Metrics::new();
        let s = Spool::open(&c, m2.clone()).expect("reopens");
        assert_eq!(m2.persistent_queue_recovered_spans.get(), 2 + 3 + 4 + 5);
        let mut got = Vec::new();
        s.close_input();
        while let Some(r) = s.next().await {
            got.push(s.read(&r).expect("reads")[0]);
            s.ack(&r);
        }
        assert_eq!(got, [1, 2, 3, 4]);
        assert_eq!(files(&dir, ".seg"), 0);
        assert_eq!(
            (
                m2.persistent_queue_spans.get(),
                m2.persistent_queue_bytes.get()
            ),
            (0, 0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn several_records_per_segment_with_out_of_order_acks() {
        let dir = temp_dir("acks");
        let c = cfg(&dir, 1 << 20, 4096, WhenFull::Drop);
        {
            let s = Spool::open(&c, Metrics::new()).expect("opens");
            let mut refs = Vec::new();
            for i in 0..6u8 {
                s.append(&[i; 10], 1).expect("appends");
                refs.push(s.next().await.expect("pending"));
            }
            s.ack(&refs[1]);
            s.ack(&refs[4]);
        }
        let s = Spool::open(&c, Metrics::new()).expect("reopens");
        s.close_input();
        let mut got = Vec::new();
        while let Some(r) = s.next().await {
            got.push(s.read(&r).expect("reads")[0]);
        }
        assert_eq!(got, [0, 2, 3, 5]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_torn_or_corrupt_tail_is_skipped_and_counted() {
        let dir = temp_dir("torn");
        let c = cfg(&dir, 1 << 20, 4096, WhenFull::Drop);
        {
            let s = Spool::open(&c, Metrics::new()).expect("opens");
            s.append(b"first batch", 3).expect("appends");
            s.append(b"second batch", 4).expect("appends");
        }
        // A crash mid-write: the second record loses its last bytes.
        let seg = segment_path(&dir, 0);
        let len = std::fs::metadata(&seg).expect("segment").len();
        let f = OpenOptions::new().write(true).open(&seg).expect("opens");
        f.set_len(len - 3).expect("truncates");
        drop(f);
        let m = Metrics::new();
        let s = Spool::open(&c, m.clone()).expect("reopens");
        assert_eq!(m.persistent_queue_recovered_spans.get(), 3);
        assert_eq!(m.persistent_queue_corrupt_records.get(), 1);
        let r = s.next().await.expect("first survives");
        assert_eq!(s.read(&r).expect("reads").as_ref(), b"first batch");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn full_queue_refuses_or_waits_for_room() {
        let dir = temp_dir("full");
        let s = Arc::new(
            Spool::open(&cfg(&dir, 100, 100, WhenFull::Block), Metrics::new()).expect("opens"),
        );
        s.append(&[1; 40], 1).expect("fits"); // 56 bytes
        assert!(matches!(s.append(&[2; 40], 1), Err(AppendError::Full)));
        assert!(matches!(s.append(&[3; 90], 1), Err(AppendError::TooLarge)));
        // Blocking: waits until the first record is settled.
        let cancel = CancellationToken::new();
        let waiter = {
            let (s, cancel) = (s.clone(), cancel.clone());
            tokio::spawn(async move { s.append_async(Bytes::from(vec![4; 40]), 1, &cancel).await })
        };
        let first = s.next().await.expect("pending");
        s.ack(&first);
        waiter
            .await
            .expect("joins")
            .expect("appended once there was room");
        let second = s.next().await.expect("pending");
        assert_eq!(s.read(&second).expect("reads")[0], 4);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
