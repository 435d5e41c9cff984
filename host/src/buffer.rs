//! The trace buffer: groups spans by trace id until each trace is due for a decision, within a byte bound.
//!
//! A trace is due when the first of these fires: its root arrived and nothing new came for `settle`;
//! nothing new came for `idle_timeout`; `max_wait` passed since its first span; it reached
//! `max_spans_per_trace` / `max_bytes_per_trace`; or the buffer is past 90 % of `max_buffer_bytes`, in which
//! case the oldest traces are decided early (never dropped undecided) until it is below 80 %. Spans of a
//! trace that was already handed on follow it to the pipeline as late spans (see `decisions`).
//!
//! [`TraceBuffer`] is plain synchronous state with an explicit clock, so every trigger is unit-tested
//! with exact instants; [`run`] is the task around it, and [`spawn`] runs
//! that task on a thread of its own.

use crate::config::BufferConfig;
use crate::decisions::DecisionCache;
use crate::inbox::{BufferOutput, DueTrace, LateSpans, TraceInbox, Trigger};
use crate::ingest::{Ack, Pressure, SpanBatch};
use crate::metrics::{Metrics, TriggerLabels};
use crate::otlp::{SpanRecord, TraceId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Timing and size limits (from [`BufferConfig`] and the memory budget's buffer share).
#[derive(Debug, Clone)]
pub struct BufferLimits {
    pub settle: Duration,
    pub idle_timeout: Duration,
    pub max_wait: Duration,
    pub max_spans_per_trace: usize,
    pub max_bytes_per_trace: usize,
    pub max_buffer_bytes: usize,
}

impl BufferLimits {
    /// The limits of `c`, with `max_buffer_bytes` resolved (see `config::memory`).
    pub fn new(c: &BufferConfig, max_buffer_bytes: u64) -> Self {
        BufferLimits {
            settle: c.settle,
            idle_timeout: c.idle_timeout,
            max_wait: c.max_wait,
            max_spans_per_trace: c.max_spans_per_trace,
            max_bytes_per_trace: c.max_bytes_per_trace.as_usize(),
            max_buffer_bytes: usize::try_from(max_buffer_bytes).unwrap_or(usize::MAX),
        }
    }
}

struct Entry {
    spans: Vec<SpanRecord>,
    acks: Vec<Ack>,
    first_seen: Instant,
    last_seen: Instant,
    bytes: usize,
    has_root: bool,
    /// Due time of this trace's live entry in the heap (older heap entries for it are stale).
    heap_due: Instant,
}

impl Entry {
    fn deadline(&self, l: &BufferLimits) -> (Instant, Trigger) {
        let mut best = (self.first_seen + l.max_wait, Trigger::MaxWait);
        let idle = (self.last_seen + l.idle_timeout, Trigger::Idle);
        if idle.0 < best.0 {
            best = idle;
        }
        if self.has_root {
            let settle = (self.last_seen + l.settle, Trigger::Settle);
            if settle.0 <= best.0 {
                best = settle;
            }
        }
        best
    }
}

/// The buffer's state. See the module header.
pub struct TraceBuffer {
    limits: BufferLimits,
    traces: HashMap<TraceId, Entry>,
    /// Lazy min-heap of (due, trace): an entry is live only if it equals the trace's `heap_due`.
    heap: BinaryHeap<Reverse<(Instant, TraceId)>>,
    /// Traces in creation order, for deciding the oldest first under memory pressure (lazy as well).
    order: VecDeque<(Instant, TraceId)>,
    bytes: usize,
    spans: usize,
    cache: Arc<DecisionCache>,
}

impl TraceBuffer {
    pub fn new(limits: BufferLimits, cache: Arc<DecisionCache>) -> TraceBuffer {
        TraceBuffer {
            limits,
            traces: HashMap::new(),
            heap: BinaryHeap::new(),
            order: VecDeque::new(),
            bytes: 0,
            spans: 0,
            cache,
        }
    }

    /// Bytes charged for buffered spans.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Buffered traces.
    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    /// Buffered spans.
    pub fn span_count(&self) -> usize {
        self.spans
    }

    /// Adds a batch; returns what is due right away (late spans, traces that hit a size limit, and traces
    /// decided early under memory pressure).
    pub fn insert(&mut self, batch: SpanBatch, now: Instant, out: &mut Vec<BufferOutput>) {
        for (trace_id, spans) in batch.traces {
            self.insert_trace(trace_id, spans, batch.ack.as_ref(), now, out);
        }
        for trace_id in batch.decide_now {
            self.take(trace_id, Trigger::Handoff, now, now, out);
        }
        self.relieve_pressure(now, out);
    }

    fn insert_trace(
        &mut self,
        trace_id: TraceId,
        spans: Vec<SpanRecord>,
        ack: Option<&Ack>,
        now: Instant,
        out: &mut Vec<BufferOutput>,
    ) {
        let added: usize = spans.iter().map(SpanRecord::charged_bytes).sum();
        let has_root = spans.iter().any(SpanRecord::is_root);
        let entry = match self.traces.get_mut(&trace_id) {
            Some(e) => e,
            None => {
                if self.cache.lookup(trace_id, now).is_some() {
                    out.push(BufferOutput::Late(LateSpans {
                        trace_id,
                        spans,
                        acks: ack.cloned().into_iter().collect(),
                        charge: Default::default(),
                    }));
                    return;
                }
                self.order.push_back((now, trace_id));
                self.traces.entry(trace_id).or_insert(Entry {
                    spans: Vec::new(),
                    acks: Vec::new(),
                    first_seen: now,
                    last_seen: now,
                    bytes: 0,
                    has_root: false,
                    heap_due: now + self.limits.max_wait,
                })
            }
        };
        let fresh = entry.spans.is_empty();
        self.bytes += added;
        self.spans += spans.len();
        entry.bytes += added;
        entry.last_seen = now;
        entry.has_root |= has_root;
        if entry.spans.is_empty() {
            entry.spans = spans;
        } else {
            entry.spans.extend(spans);
        }
        if let Some(a) = ack {
            entry.acks.push(a.clone());
        }
        if entry.spans.len() >= self.limits.max_spans_per_trace
            || entry.bytes >= self.limits.max_bytes_per_trace
        {
            self.take(trace_id, Trigger::Size, now, now, out);
            return;
        }
        // Only schedule when the deadline moved earlier (new trace, or root arrived); a later deadline is
        // found when the existing heap entry pops.
        let (due, _) = entry.deadline(&self.limits);
        if fresh || due < entry.heap_due {
            entry.heap_due = due;
            self.heap.push(Reverse((due, trace_id)));
        }
    }

    /// Removes a trace and emits it; `due_at` is when it became due (at the latest `now`).
    fn take(
        &mut self,
        trace_id: TraceId,
        trigger: Trigger,
        now: Instant,
        due_at: Instant,
        out: &mut Vec<BufferOutput>,
    ) {
        if let Some(e) = self.traces.remove(&trace_id) {
            self.bytes -= e.bytes;
            self.spans -= e.spans.len();
            self.cache.mark_pending(trace_id);
            out.push(BufferOutput::Due(DueTrace {
                trace_id,
                spans: e.spans,
                acks: e.acks,
                trigger,
                first_seen: e.first_seen,
                due_at: due_at.min(now),
                charge: Default::default(),
            }));
        }
    }

    /// The earliest instant at which [`TraceBuffer::expire`] may have something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }

    /// Emits every trace whose deadline has passed.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<BufferOutput>) {
        while let Some(Reverse((due, id))) = self.heap.peek().copied() {
            if due > now {
                break;
            }
            self.heap.pop();
            let Some(e) = self.traces.get_mut(&id) else {
                continue;
            };
            if e.heap_due != due {
                continue; // stale
            }
            let (actual, trigger) = e.deadline(&self.limits);
            if actual <= now {
                self.take(id, trigger, now, actual, out);
            } else {
                e.heap_due = actual;
                self.heap.push(Reverse((actual, id)));
            }
        }
        // Drop creation-order entries of traces that are gone, so the queue tracks live traces only.
        while let Some((first, id)) = self.order.front() {
            match self.traces.get(id) {
                Some(e) if e.first_seen == *first => break,
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    /// Past 90 % of the byte bound, decides the oldest traces until below 80 %.
    pub fn relieve_pressure(&mut self, now: Instant, out: &mut Vec<BufferOutput>) {
        let max = self.limits.max_buffer_bytes;
        if self.bytes <= max / 10 * 9 {
            return;
        }
        self.decide_oldest(max / 10 * 8, now, out);
    }

    /// Decides the oldest traces until a fifth of the bytes held is gone (the process's resident memory is
    /// past 90 % of its limit).
    pub fn shed(&mut self, now: Instant, out: &mut Vec<BufferOutput>) {
        self.decide_oldest(self.bytes / 5 * 4, now, out);
    }

    /// Decides the oldest traces (trigger `pressure`) until at most `target` bytes are held.
    fn decide_oldest(&mut self, target: usize, now: Instant, out: &mut Vec<BufferOutput>) {
        while self.bytes > target {
            let Some((first, id)) = self.order.pop_front() else {
                break;
            };
            if self.traces.get(&id).is_some_and(|e| e.first_seen == first) {
                self.take(id, Trigger::Pressure, now, now, out);
            }
        }
    }

    /// Emits everything (shutdown).
    pub fn drain(&mut self, now: Instant, out: &mut Vec<BufferOutput>) {
        let ids: Vec<TraceId> = self.order.drain(..).map(|(_, id)| id).collect();
        for id in ids {
            self.take(id, Trigger::Shutdown, now, now, out);
        }
        self.heap.clear();
    }
}

/// Runs [`run`] on a thread of its own, with a single-threaded runtime, so the buffer's timers fire on
/// time however busy the receivers keep the main runtime (a due trace waiting behind request decoding is
/// decision latency). The returned task ends when the buffer does.
pub fn spawn(
    rx: mpsc::Receiver<SpanBatch>,
    buffer: TraceBuffer,
    pipeline: impl TraceInbox + 'static,
    pressure: Arc<Pressure>,
    metrics: Arc<Metrics>,
    closing: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("tailgate-buffer".into())
        .spawn(move || {
            rt.block_on(run(rx, buffer, pipeline, pressure, metrics, closing));
            let _ = done.send(());
        })?;
    // Also ends (with an error, ignored) if the thread panicked and dropped `done`.
    Ok(tokio::spawn(async move {
        let _ = finished.await;
    }))
}

/// Runs the buffer until the ingest queue closes (all receivers stopped), then hands everything still
/// buffered to the pipeline (shutdown trigger) and returns. Blocks its thread for up to `TIMER_SLACK` before
/// each deadline: run it on a thread of its own ([`spawn`]).
///
/// `closing` closes the ingest queue from this side: when the shutdown grace runs out while a receiver
/// still holds an ingest handle (a client connection that never ends), the queue refuses new batches
/// (`Refused::ShuttingDown`), what it holds is taken in, and the buffer ends as if every handle had gone.
pub async fn run(
    mut rx: mpsc::Receiver<SpanBatch>,
    mut buffer: TraceBuffer,
    pipeline: impl TraceInbox,
    pressure: Arc<Pressure>,
    metrics: Arc<Metrics>,
    closing: CancellationToken,
) {
    metrics
        .buffer_bytes_limit
        .set(buffer.limits.max_buffer_bytes as i64);
    let mut out = Vec::new();
    // Pinned once: polling a registered cancellation future costs no new registration per batch.
    let closing = closing.cancelled_owned();
    tokio::pin!(closing);
    let mut closed = false;
    loop {
        let deadline = buffer.next_deadline();
        tokio::select! {
            _ = &mut closing, if !closed => {
                rx.close();
                closed = true;
                continue;
            }
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                let (charged, spans) = (batch.charged, batch.span_count);
                buffer.insert(batch, Instant::now(), &mut out);
                pressure.dequeued(charged);
                pressure.dequeued_spans(spans);
            }
            _ = sleep_until(deadline.map(|d| d.checked_sub(TIMER_SLACK).unwrap_or(d))) => {
                // The runtime's timers have millisecond resolution and fire up to ~2 ms late; wake that much
                // early and sleep the rest precisely, so a trace is decided when it is due, not a tick later.
                // Batches arriving meanwhile wait in the (bounded) ingest queue for at most `TIMER_SLACK`.
                // (Under a paused test clock the thread sleep does not move time: the timer finishes the wait.)
                if let Some(d) = deadline {
                    if let Some(rest) = d.checked_duration_since(Instant::now()) {
                        std::thread::sleep(rest);
                    }
                    if Instant::now() < d {
                        tokio::time::sleep_until(d).await;
                    }
                }
                buffer.expire(Instant::now(), &mut out);
            }
        }
        if pressure.take_stress() {
            buffer.shed(Instant::now(), &mut out);
        }
        pressure.set_buffered(buffer.bytes());
        metrics.buffer_bytes_peak.set(pressure.peak() as i64);
        metrics
            .ingest_queue_spans
            .set(pressure.queued_spans() as i64);
        if !flush(&mut out, &pipeline, &pressure, &metrics).await {
            break;
        }
        metrics.buffer_traces.set(buffer.trace_count() as i64);
        metrics.buffer_spans.set(buffer.span_count() as i64);
        metrics.buffer_bytes.set(buffer.bytes() as i64);
    }
    buffer.drain(Instant::now(), &mut out);
    pressure.set_buffered(0);
    flush(&mut out, &pipeline, &pressure, &metrics).await;
    metrics.buffer_traces.set(0);
    metrics.buffer_spans.set(0);
    metrics.buffer_bytes.set(0);
}

async fn flush(
    out: &mut Vec<BufferOutput>,
    pipeline: &impl TraceInbox,
    pressure: &Arc<Pressure>,
    metrics: &Metrics,
) -> bool {
    for mut o in out.drain(..) {
        o.charge_to(pressure);
        if let BufferOutput::Due(t) = &o {
            metrics
                .decision_triggers
                .get_or_create(&TriggerLabels {
                    trigger: t.trigger.as_str(),
                })
                .inc();
        }
        let n = o.span_count() as i64;
        metrics.pipeline_spans.inc_by(n);
        if !pipeline.send(o).await {
            // The pipeline is gone (a bug: it outlives the buffer); these spans are lost.
            metrics.pipeline_spans.dec_by(n);
            metrics.lost("pipeline_closed", n as u64);
            return false;
        }
    }
    true
}

/// How early the buffer's timer wakes before a deadline (see [`run`]).
const TIMER_SLACK: Duration = Duration::from_millis(2);

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
