//! The way into the buffer for every source: OTLP receivers today, a Kafka consumer later. A source hands
//! over a [`SpanBatch`] through an [`IngestHandle`] (a bounded queue) and may attach an [`Ack`], which
//! completes once every span of the batch is decided and either handed to the exporter or sampled out -
//! the moment a Kafka source may commit the batch's offset.

use crate::otlp::predicate::{PredicateSet, PredicateSlot};
use crate::otlp::{ScannedRequest, SpanRecord, TraceId};
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Accepted spans of one request, grouped by trace, each group's bytes copied into one allocation so the
/// buffer charges exactly what it holds and never pins a whole request body.
#[derive(Debug, Default)]
pub struct SpanBatch {
    pub traces: Vec<(TraceId, Vec<SpanRecord>)>,
    pub span_count: usize,
    /// Completes when all spans of this batch are decided (see the module header).
    pub ack: Option<Ack>,
    /// Bytes reserved against the memory bound while the batch is queued (set on submit).
    pub charged: usize,
    /// Traces to decide right away, after this batch's spans are added (a Kafka partition being handed
    /// to another replica: its traces are decided before the revocation completes).
    pub decide_now: Vec<TraceId>,
}

impl SpanBatch {
    /// Groups a scanned request by trace id (first-seen order), copying each group's span bytes out of the
    /// request body into one buffer.
    pub fn from_scanned(req: ScannedRequest) -> SpanBatch {
        let span_count = req.spans.len();
        let mut index: HashMap<TraceId, usize> = HashMap::new();
        let mut traces: Vec<(TraceId, Vec<SpanRecord>)> = Vec::new();
        for (tid, span) in req.spans {
            let i = *index.entry(tid).or_insert_with(|| {
                traces.push((tid, Vec::new()));
                traces.len() - 1
            });
            traces[i].1.push(span);
        }
        for (_, spans) in &mut traces {
            let total: usize = spans.iter().map(|s| s.raw.len()).sum();
            let mut buf = BytesMut::with_capacity(total);
            for s in spans.iter() {
                buf.extend_from_slice(&s.raw);
            }
            let buf = buf.freeze();
            let mut at = 0;
            for s in spans.iter_mut() {
                let len = s.raw.len();
                s.raw = buf.slice(at..at + len);
                at += len;
            }
            spans.shrink_to_fit();
        }
        SpanBatch {
            traces,
            span_count,
            ack: None,
            charged: 0,
            decide_now: Vec::new(),
        }
    }

    /// Bytes the buffer will charge for these spans.
    pub fn charged_bytes(&self) -> usize {
        self.traces
            .iter()
            .flat_map(|(_, s)| s)
            .map(SpanRecord::charged_bytes)
            .sum()
    }

    /// Attaches an acknowledgement.
    pub fn with_ack(mut self, ack: Ack) -> SpanBatch {
        self.ack = Some(ack);
        self
    }
}

/// A completion signal shared by everything derived from one batch; fires when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Ack(#[allow(dead_code)] Arc<AckInner>);

/// What runs when the last clone of an [`Ack`] is dropped.
type AckCallback = Box<dyn FnOnce() + Send + Sync>;

struct AckInner {
    done: std::sync::Mutex<Option<AckCallback>>,
}

impl std::fmt::Debug for AckInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckInner")
    }
}

impl Drop for AckInner {
    fn drop(&mut self) {
        let done = match self.done.get_mut() {
            Ok(g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(f) = done {
            f();
        }
    }
}

impl Ack {
    /// A new ack and the receiver that completes when it (and all its clones) are dropped.
    pub fn new() -> (Ack, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            Ack::on_done(move || {
                let _ = tx.send(());
            }),
            rx,
        )
    }

    /// A new ack that calls `f` (once) when it and all its clones are dropped. `f` runs on whichever
    /// thread drops the last clone (a pipeline worker, usually), so it must be quick.
    pub fn on_done(f: impl FnOnce() + Send + Sync + 'static) -> Ack {
        Ack(Arc::new(AckInner {
            done: std::sync::Mutex::new(Some(Box::new(f))),
        }))
    }
}

/// Why a batch was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The queue into the buffer is full.
    #[error("tailgate is overloaded: ingest queue full")]
    QueueFull,
    /// The buffer is at its byte bound and early decisions have not freed enough yet.
    #[error("tailgate is overloaded: trace buffer at its memory bound")]
    MemoryPressure,
    /// tailgate is stopping.
    #[error("tailgate is shutting down")]
    ShuttingDown,
}

impl Refused {
    /// Metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::QueueFull => "queue_full",
            Refused::MemoryPressure => "memory_pressure",
            Refused::ShuttingDown => "shutting_down",
        }
    }
}

/// The memory bound shared by the ingest queue and the buffer: bytes queued for the buffer plus bytes
/// buffered never exceed `limit`; a batch that would cross it is refused (backpressure).
#[derive(Debug)]
pub struct Pressure {
    limit: usize,
    /// Bytes in batches sitting in the ingest queue.
    queued: AtomicUsize,
    /// Bytes the buffer currently holds (published by the buffer).
    buffered: AtomicUsize,
    /// Highest `queued + buffered` seen after a reservation (for `tailgate_buffer_bytes_peak`).
    peak: AtomicUsize,
    /// Spans in batches sitting in the ingest queue (for `tailgate_ingest_queue_spans`).
    queued_spans: AtomicUsize,
    /// Bytes of traces handed to the pipeline and not yet in the export queue or dropped ([`Charge`]).
    in_flight: AtomicUsize,
    /// The process's resident memory is past `service.memory_limit`: new data is refused while tailgate
    /// holds any (see [`watch_resident_memory`]).
    over_limit: AtomicBool,
    /// Resident memory samples taken while past 90 % of the limit; the buffer decides its oldest traces
    /// once per new one ([`Pressure::take_stress`]).
    stress: AtomicU64,
    stress_seen: AtomicU64,
}

/// Bytes of a trace counted against the bound while the pipeline decides and redacts it; given back
/// when dropped (the trace is in the export queue, which counts its own bytes, or was dropped).
#[derive(Debug, Default)]
pub struct Charge(Option<(Arc<Pressure>, usize)>);

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some((p, n)) = self.0.take() {
            p.in_flight.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

impl Pressure {
    pub fn new(limit: usize) -> Pressure {
        Pressure {
            limit,
            queued: AtomicUsize::new(0),
            buffered: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            queued_spans: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            over_limit: AtomicBool::new(false),
            stress: AtomicU64::new(0),
            stress_seen: AtomicU64::new(0),
        }
    }

    /// Counts `bytes` handed to the pipeline until the returned charge is dropped.
    pub fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        self.in_flight.fetch_add(bytes, Ordering::Relaxed);
        Charge(Some((self.clone(), bytes)))
    }

    /// Bytes handed to the pipeline and not yet given back.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether a resident memory sample past 90 % of the limit came since the last call (the buffer then
    /// decides its oldest traces early).
    pub fn take_stress(&self) -> bool {
        let now = self.stress.load(Ordering::Relaxed);
        self.stress_seen.swap(now, Ordering::Relaxed) != now
    }

    /// The byte bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Called by the buffer after every change.
    pub fn set_buffered(&self, bytes: usize) {
        self.buffered.store(bytes, Ordering::Relaxed);
    }

    /// Called by the buffer when it takes a batch off the queue.
    pub fn dequeued(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Spans in batches waiting in the ingest queue.
    pub fn queued_spans(&self) -> usize {
        self.queued_spans.load(Ordering::Relaxed)
    }

    /// Called by the buffer when it takes a batch of `spans` spans off the queue.
    pub fn dequeued_spans(&self, spans: usize) {
        self.queued_spans.fetch_sub(spans, Ordering::Relaxed);
    }

    /// Reserves room for `bytes`, or says no.
    fn try_reserve(&self, bytes: usize) -> bool {
        let buffered = self.buffered.load(Ordering::Relaxed) + self.in_flight();
        let prev = self.queued.fetch_add(bytes, Ordering::Relaxed);
        // Past the process's limit, tailgate takes nothing while it holds anything: what it holds is
        // what can be freed. Holding nothing, the excess is not its to free, and refusing would stall.
        let over = self.over_limit.load(Ordering::Relaxed);
        if (prev + buffered + bytes > self.limit || over) && prev + buffered > 0 {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        self.peak
            .fetch_max(prev + buffered + bytes, Ordering::Relaxed);
        true
    }

    /// Highest bytes charged against the bound so far (ingest queue plus buffer).
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// True when the queue, buffer and pipeline together are at 100 % of the bound.
    pub fn is_on(&self) -> bool {
        self.queued.load(Ordering::Relaxed)
            + self.buffered.load(Ordering::Relaxed)
            + self.in_flight()
            >= self.limit
    }

    /// Records a resident memory sample against the process's `limit`.
    fn observe_resident(&self, resident: u64, limit: u64) {
        self.over_limit.store(resident > limit, Ordering::Relaxed);
        if resident > limit / 10 * 9 {
            self.stress.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How often [`watch_resident_memory`] samples.
const RESIDENT_SAMPLE: std::time::Duration = std::time::Duration::from_millis(100);

/// Samples the process's resident memory every 100 ms against `limit` (`service.memory_limit`): past
/// 90 % the buffer decides its oldest traces early (a fifth of its bytes per sample), past the limit new
/// data is refused with `memory_pressure`. This is the check on everything the byte counts do not see
/// (plugin instances, allocator slack, connections). Ends with the runtime.
pub async fn watch_resident_memory(
    pressure: Arc<Pressure>,
    limit: u64,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let mut tick = tokio::time::interval(RESIDENT_SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peak = 0u64;
    loop {
        tick.tick().await;
        metrics.pipeline_bytes.set(pressure.in_flight() as i64);
        let Some(resident) = resident_bytes() else {
            continue;
        };
        pressure.observe_resident(resident, limit);
        peak = peak.max(resident);
        metrics.resident_memory_bytes.set(resident as i64);
        metrics.resident_memory_peak_bytes.set(peak as i64);
    }
}

/// `VmRSS` of `/proc/self/status`; `None` where there is no such file.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The sending side of the bounded queue into the buffer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestHandle {
    tx: mpsc::Sender<SpanBatch>,
    pressure: Arc<Pressure>,
    /// Records accepted batches for `tailgate replay` (`--record`).
    recorder: Option<Arc<crate::record::Recorder>>,
    /// The predicates the policy in force wants evaluated while requests for this handle are scanned.
    predicates: PredicateSlot,
}

impl IngestHandle {
    /// A handle and the queue's receiving end (for the buffer). `capacity` is in batches.
    pub fn channel(
        capacity: usize,
        pressure: Arc<Pressure>,
    ) -> (IngestHandle, mpsc::Receiver<SpanBatch>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            IngestHandle {
                tx,
                pressure,
                recorder: None,
                predicates: PredicateSlot::default(),
            },
            rx,
        )
    }

    /// Records every batch accepted through this handle (and its clones).
    pub fn with_recorder(mut self, recorder: Option<Arc<crate::record::Recorder>>) -> IngestHandle {
        self.recorder = recorder;
        self
    }

    /// Requests scanned for this handle (and its clones) evaluate the predicates in `slot`.
    pub fn with_predicates(mut self, slot: PredicateSlot) -> IngestHandle {
        self.predicates = slot;
        self
    }

    /// The predicate set to scan the next request with (empty unless [`IngestHandle::with_predicates`]).
    pub fn predicates(&self) -> Arc<PredicateSet> {
        self.predicates.load()
    }

    /// The slot [`IngestHandle::predicates`] reads, for a scanner that outlives its use of the handle.
    pub fn predicate_slot(&self) -> PredicateSlot {
        self.predicates.clone()
    }

    /// Hands a batch over without waiting: receivers turn a refusal into backpressure for the client.
    pub fn try_submit(&self, mut batch: SpanBatch) -> Result<(), Refused> {
        batch.charged = batch.charged_bytes();
        if !self.pressure.try_reserve(batch.charged) {
            return Err(Refused::MemoryPressure);
        }
        let (charged, spans) = (batch.charged, batch.span_count);
        self.pressure
            .queued_spans
            .fetch_add(spans, Ordering::Relaxed);
        // Copied before the batch is moved (span bytes are shared), recorded only once accepted.
        let copy = self.recorder.as_ref().map(|_| batch.traces.clone());
        self.tx.try_send(batch).map_err(|e| {
            self.pressure.dequeued(charged);
            self.pressure.dequeued_spans(spans);
            match e {
                mpsc::error::TrySendError::Full(_) => Refused::QueueFull,
                mpsc::error::TrySendError::Closed(_) => Refused::ShuttingDown,
            }
        })?;
        if let (Some(r), Some(traces)) = (&self.recorder, copy) {
            r.record(traces);
        }
        Ok(())
    }

    /// Hands a batch over, waiting for room in the queue and under the memory bound (for sources that
    /// can pause, like a Kafka consumer).
    pub async fn submit(&self, mut batch: SpanBatch) -> Result<(), Refused> {
        batch.charged = batch.charged_bytes();
        let mut wait = std::time::Duration::from_millis(1);
        while !self.pressure.try_reserve(batch.charged) {
            if self.tx.is_closed() {
                return Err(Refused::ShuttingDown);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_millis(100));
        }
        let (charged, spans) = (batch.charged, batch.span_count);
        self.pressure
            .queued_spans
            .fetch_add(spans, Ordering::Relaxed);
        let copy = self.recorder.as_ref().map(|_| batch.traces.clone());
        self.tx.send(batch).await.map_err(|_| {
            self.pressure.dequeued(charged);
            self.pressure.dequeued_spans(spans);
            Refused::ShuttingDown
        })?;
        if let (Some(r), Some(traces)) = (&self.recorder, copy) {
            r.record(traces);
        }
        Ok(())
    }

    /// True while the buffer is at its byte bound.
    pub fn under_pressure(&self) -> bool {
        self.pressure.is_on()
    }
}
