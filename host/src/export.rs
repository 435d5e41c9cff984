//! The exporter: batches kept spans, sends them downstream over OTLP/gRPC, OTLP/HTTP, to a file or to a
//! Kafka topic, retries what can be retried, and holds a bounded queue (in spans) meanwhile.
//!
//! ```text
//!  ExportHandle::send ──► span permits (queue_size) ──► channel ──► Batcher ──► num_consumers senders
//!     (waits while full)                                  (size / time bounded)    │ retry with backoff
//!                                                                                  ▼
//!                                   Transport: gRPC | HTTP | file (OTLP/JSON lines) | Kafka (feature `kafka`)
//! ```
//!
//! Every span holds one permit of a semaphore sized `sending_queue.queue_size`, and one permit per byte
//! of a semaphore sized `sending_queue.queue_bytes` ([`span_cost`]), from the moment it is queued until
//! its batch is accepted downstream or given up on, so the exporter never holds more than that many
//! spans or bytes and a slow downstream becomes backpressure on the pipeline. Each span ends in exactly
//! one of `spans_exported`, `spans_lost{reason="rejected_downstream"}` (partial success),
//! `spans_lost{reason="export_failed"}` (non-retryable error or retries exhausted) or
//! `spans_lost{reason="shutdown"}` (still undelivered when the shutdown grace ran out).
//!
//! With `sending_queue.persistent` set, the batcher writes each batch to the on-disk queue
//! ([`spool`]) and gives its span permits back at once; a dispatcher feeds the senders from disk. What is
//! undelivered at shutdown (or at a crash) stays on disk and is sent after the next start. A batch that
//! cannot be written (I/O error, larger than the whole queue) is sent from memory as without the queue.

mod batch;
mod file;
mod grpc;
mod http;
#[cfg(feature = "kafka")]
mod kafka;
mod retry;
pub mod spool;
#[cfg(test)]
mod tests;

use crate::config::{ExportProtocol, OtlpExporter, RetryConfig};
use crate::metrics::{Metrics, ReasonLabels};
use crate::otlp::SpanRecord;
use bytes::Bytes;
use retry::Backoff;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Spans of one kept trace (or late spans of a kept trace), ready to leave.
#[derive(Debug)]
pub struct KeptSpans {
    pub spans: Vec<SpanRecord>,
    /// Encoded fields appended to every span (see `otlp::SpanPatch`), unless `per_span` is set.
    pub patch: Bytes,
    /// One patch per span, used instead of `patch` when the spans need different ones (their
    /// `tracestate`s differ); empty otherwise.
    pub per_span: Vec<Bytes>,
}

impl KeptSpans {
    /// The fields appended to span `i`.
    pub fn patch_of(&self, i: usize) -> &Bytes {
        self.per_span.get(i).unwrap_or(&self.patch)
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("exporter endpoint `{endpoint}`: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("exporter header `{name}`: {reason}")]
    Header { name: String, reason: String },
    #[error("exporter file `{path}`: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("exporters.otlp.sending_queue.{0}")]
    Spool(#[from] spool::SpoolError),
    /// `protocol: kafka`: the producer could not be created, or the build has no `kafka` feature.
    #[error("exporters.otlp (protocol kafka): {0}")]
    Kafka(String),
}

/// The exporter is gone (shut down).
#[derive(Debug, thiserror::Error)]
#[error("exporter is shut down")]
pub struct ExporterClosed;

/// Items (not spans) the channel between the handles and the batcher holds. The span bound is the
/// semaphore; this only caps the number of `KeptSpans` envelopes.
const CHANNEL_ITEMS: usize = 1024;

/// Sending side of the export queue. Cheap to clone.
#[derive(Clone)]
pub struct ExportHandle {
    tx: mpsc::Sender<KeptSpans>,
    queue: Arc<SpanQueue>,
}

impl ExportHandle {
    /// Queues spans for export, waiting while the queue is full (backpressure to the pipeline).
    ///
    /// A `KeptSpans` larger than the whole queue is queued in queue-sized parts. On error nothing more
    /// of `spans` was queued (parts queued before the exporter closed are still exported).
    pub async fn send(&self, kept: KeptSpans) -> Result<(), ExporterClosed> {
        if kept.spans.is_empty() {
            return Ok(());
        }
        let KeptSpans {
            mut spans,
            patch,
            mut per_span,
        } = kept;
        while !spans.is_empty() {
            // A part is at most `max_part` spans and `max_part_bytes` bytes (at least one span).
            let mut at = 0;
            let mut bytes = 0;
            while at < spans.len().min(self.queue.max_part) {
                let cost = self
                    .queue
                    .cost(&spans[at], per_span.get(at).unwrap_or(&patch));
                if at > 0 && bytes + cost > self.queue.max_part_bytes {
                    break;
                }
                bytes += cost;
                at += 1;
            }
            let rest = spans.split_off(at);
            let per_span_rest = per_span.split_off(at.min(per_span.len()));
            let part = KeptSpans {
                spans: std::mem::replace(&mut spans, rest),
                patch: patch.clone(),
                per_span: std::mem::replace(&mut per_span, per_span_rest),
            };
            let n = part.spans.len();
            self.queue.acquire(n, bytes).await?;
            if self.tx.send(part).await.is_err() {
                self.queue.release(n, bytes);
                return Err(ExporterClosed);
            }
        }
        Ok(())
    }

    /// Blocking variant for plugin worker threads. Must not be called from async code (it parks the
    /// calling thread until the queue has room).
    pub fn blocking_send(&self, kept: KeptSpans) -> Result<(), ExporterClosed> {
        block_on(self.send(kept))
    }
}

/// Runs a future to completion on the current (non-async) thread, parking it while the future waits.
/// The futures used here only wait on tokio semaphores and channels, which wake any waker.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// What a span costs the export queue's byte bound: its encoded bytes, the fields appended to it and
/// the framing `ExportBuilder::approx_encoded_len` counts for it.
pub(crate) fn span_cost(span: &SpanRecord, patch: &Bytes) -> usize {
    span.raw.len() + patch.len() + 8
}

/// The bound on what the exporter holds: one semaphore permit per span and one per byte
/// ([`span_cost`]), taken when queued and given back when the span's batch is settled (delivered or
/// given up on).
pub(crate) struct SpanQueue {
    permits: Semaphore,
    capacity: usize,
    bytes: Semaphore,
    capacity_bytes: usize,
    /// Largest part of a `KeptSpans` queued at once (the capacity, capped to what a semaphore call takes).
    max_part: usize,
    /// Largest byte cost of such a part; a span costing more counts as this much.
    max_part_bytes: usize,
    metrics: Arc<Metrics>,
}

impl SpanQueue {
    fn new(capacity: usize, capacity_bytes: u64, metrics: Arc<Metrics>) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        let capacity_bytes = usize::try_from(capacity_bytes)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        metrics
            .export_queue_capacity
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
        metrics
            .export_queue_capacity_bytes
            .set(i64::try_from(capacity_bytes).unwrap_or(i64::MAX));
        SpanQueue {
            permits: Semaphore::new(capacity),
            capacity,
            bytes: Semaphore::new(capacity_bytes),
            capacity_bytes,
            max_part: capacity.min(u32::MAX as usize),
            max_part_bytes: capacity_bytes.min(u32::MAX as usize),
            metrics,
        }
    }

    /// [`span_cost`], capped to what one part may hold (so that one huge span still gets through, alone).
    fn cost(&self, span: &SpanRecord, patch: &Bytes) -> usize {
        span_cost(span, patch).min(self.max_part_bytes)
    }

    /// The byte cost of `kept` as [`ExportHandle::send`] charged it.
    fn cost_of(&self, kept: &KeptSpans) -> usize {
        kept.spans
            .iter()
            .enumerate()
            .map(|(i, s)| self.cost(s, kept.patch_of(i)))
            .sum()
    }

    async fn acquire(&self, n: usize, bytes: usize) -> Result<(), ExporterClosed> {
        // `n <= max_part <= u32::MAX` and `bytes <= max_part_bytes <= u32::MAX`, see `ExportHandle::send`.
        let n32 = u32::try_from(n).map_err(|_| ExporterClosed)?;
        let b32 = u32::try_from(bytes).map_err(|_| ExporterClosed)?;
        let spans = self
            .permits
            .acquire_many(n32)
            .await
            .map_err(|_| ExporterClosed)?;
        self.bytes
            .acquire_many(b32)
            .await
            .map_err(|_| ExporterClosed)?
            .forget();
        spans.forget();
        self.metrics.export_queue_spans.inc_by(n as i64);
        self.metrics.export_queue_bytes.inc_by(bytes as i64);
        Ok(())
    }

    fn release(&self, n: usize, bytes: usize) {
        self.permits.add_permits(n);
        self.bytes.add_permits(bytes);
        self.metrics.export_queue_spans.dec_by(n as i64);
        self.metrics.export_queue_bytes.dec_by(bytes as i64);
    }
}

/// An encoded `ExportTraceServiceRequest`, the number of spans in it and their byte cost (the permits
/// it holds).
pub(crate) struct Batch {
    pub body: Bytes,
    pub spans: usize,
    pub bytes: usize,
}

/// What a downstream said when it took a request.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    /// Spans refused by the downstream (OTLP partial success); they are not retried.
    pub rejected_spans: u64,
    /// The downstream's explanation of the partial success.
    pub message: String,
}

/// A failed export attempt.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Short label for `export_failures{reason}`: `unavailable`, `http_503`, `connect`, `timeout`, ...
    pub reason: &'static str,
    /// Whether trying again may succeed.
    pub retryable: bool,
    /// Delay the downstream asked for (`Retry-After`, gRPC `RetryInfo`).
    pub retry_after: Option<Duration>,
    pub message: String,
}

/// Where batches go.
pub(crate) enum Transport {
    Grpc(grpc::GrpcTransport),
    Http(http::HttpTransport),
    File(file::FileSink),
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaTransport),
}

impl Transport {
    fn new(cfg: &OtlpExporter) -> Result<Self, ExportError> {
        Ok(match cfg.protocol {
            ExportProtocol::Grpc => Transport::Grpc(grpc::GrpcTransport::new(cfg)?),
            ExportProtocol::Http => Transport::Http(http::HttpTransport::new(cfg)?),
            ExportProtocol::File => Transport::File(file::FileSink::open(&cfg.endpoint)?),
            #[cfg(feature = "kafka")]
            ExportProtocol::Kafka => Transport::Kafka(kafka::KafkaTransport::new(cfg)?),
            #[cfg(not(feature = "kafka"))]
            ExportProtocol::Kafka => {
                return Err(ExportError::Kafka(crate::config::NO_KAFKA_FEATURE.into()));
            }
        })
    }

    async fn send(&self, body: Bytes) -> Result<Accepted, Failure> {
        match self {
            Transport::Grpc(t) => t.send(body).await,
            Transport::Http(t) => t.send(body).await,
            Transport::File(t) => t.send(body).await,
            #[cfg(feature = "kafka")]
            Transport::Kafka(t) => t.send(body).await,
        }
    }
}

/// Delivers batches with retries and settles their spans in the metrics and the queue.
pub(crate) struct BatchSender {
    transport: Transport,
    endpoint: String,
    retry: RetryConfig,
    queue: Arc<SpanQueue>,
    metrics: Arc<Metrics>,
    /// Fires when the shutdown grace has run out: whatever is still held is lost.
    cancel: CancellationToken,
    /// True while the downstream is failing, so a failure streak logs one warning, not one per attempt.
    failing: AtomicBool,
    /// Rate limit for the per-batch warnings (gave up, partial success).
    warn_limit: LogLimit,
}

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered { rejected: u64 },
    Failed,
    Shutdown,
}

impl BatchSender {
    /// Sends a batch until it is accepted, a non-retryable error occurs, retries run out
    /// (`max_elapsed_time`) or the shutdown grace ends; then settles it.
    pub async fn deliver(&self, batch: Batch) {
        let outcome = self.attempt(&batch).await;
        self.settle(batch.spans, batch.bytes, outcome);
    }

    /// Sends a batch (with retries) until it is settled or the shutdown grace ends; counts nothing.
    pub async fn attempt(&self, batch: &Batch) -> Outcome {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Outcome::Shutdown,
            o = self.attempts(batch) => o,
        }
    }

    async fn attempts(&self, batch: &Batch) -> Outcome {
        let started = Instant::now();
        let mut backoff = Backoff::new(&self.retry);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.transport.send(batch.body.clone()).await {
                Ok(accepted) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(endpoint = %self.endpoint, "export downstream recovered");
                    }
                    if accepted.rejected_spans > 0 && self.warn_limit.allow() {
                        tracing::warn!(
                            endpoint = %self.endpoint,
                            rejected = accepted.rejected_spans,
                            message = %accepted.message,
                            "downstream rejected part of an export (partial success)"
                        );
                    }
                    return Outcome::Delivered {
                        rejected: accepted.rejected_spans,
                    };
                }
                Err(f) => {
                    self.metrics
                        .export_failures
                        .get_or_create(&ReasonLabels { reason: f.reason })
                        .inc();
                    let delay = f.retry_after.unwrap_or_else(|| backoff.next_delay());
                    let give_up = !f.retryable
                        || !self.retry.enabled
                        || started.elapsed() + delay > self.retry.max_elapsed_time;
                    if give_up {
                        if self.warn_limit.allow() {
                            tracing::warn!(
                                endpoint = %self.endpoint,
                                reason = f.reason,
                                retryable = f.retryable,
                                attempts = attempt,
                                spans = batch.spans,
                                error = %f.message,
                                "export failed; giving up on the batch"
                            );
                        }
                        return Outcome::Failed;
                    }
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            endpoint = %self.endpoint,
                            reason = f.reason,
                            error = %f.message,
                            "export failed; retrying with backoff (further failures logged at debug)"
                        );
                    } else {
                        tracing::debug!(
                            endpoint = %self.endpoint, reason = f.reason, attempt, ?delay, error = %f.message,
                            "export attempt failed; retrying"
                        );
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Records how `spans` ended and gives their queue permits (spans and `bytes`) back.
    pub fn settle(&self, spans: usize, bytes: usize, outcome: Outcome) {
        self.count(spans, outcome);
        self.queue.release(spans, bytes);
    }

    /// Records how `spans` ended in the metrics.
    pub fn count(&self, spans: usize, outcome: Outcome) {
        let n = spans as u64;
        match outcome {
            Outcome::Delivered { rejected } => {
                let rejected = rejected.min(n);
                self.metrics.spans_exported.inc_by(n - rejected);
                if rejected > 0 {
                    self.metrics.lost("rejected_downstream", rejected);
                }
            }
            Outcome::Failed => self.metrics.lost("export_failed", n),
            Outcome::Shutdown => self.metrics.lost("shutdown", n),
        }
    }
}

/// Allows a log line at most once per interval; counts what it held back.
struct LogLimit {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogLimit {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn new() -> Self {
        LogLimit {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Self::INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *last = Some(now);
        let held = self.suppressed.swap(0, Ordering::Relaxed);
        if held > 0 {
            tracing::warn!(
                suppressed = held,
                "similar export warnings suppressed in the last 10s"
            );
        }
        true
    }
}

/// The running exporter.
pub struct Exporter {
    task: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
    sender: Arc<BatchSender>,
}

impl Exporter {
    /// Starts the exporter tasks. Must be called inside a tokio runtime. The gRPC connection is made
    /// lazily, so tailgate starts before its downstream does.
    /// Starts the exporter; `sending_queue.queue_bytes: auto` is a fifth of this machine's `auto` memory
    /// limit (the process passes its budget's share to [`Exporter::start_with_queue_bytes`]).
    pub fn start(
        cfg: &OtlpExporter,
        metrics: Arc<Metrics>,
    ) -> Result<(ExportHandle, Exporter), ExportError> {
        let bytes = cfg.sending_queue.queue_bytes.get().map_or_else(
            || crate::config::memory::SystemMemory::detect().auto_limit().0 / 5,
            |b| b.0,
        );
        Self::start_with_queue_bytes(cfg, bytes, metrics)
    }

    /// Starts the exporter with an export queue of at most `queue_bytes` bytes.
    pub fn start_with_queue_bytes(
        cfg: &OtlpExporter,
        queue_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Result<(ExportHandle, Exporter), ExportError> {
        let transport = Transport::new(cfg)?;
        let queue = Arc::new(SpanQueue::new(
            cfg.sending_queue.queue_size,
            queue_bytes,
            metrics.clone(),
        ));
        let spool = match &cfg.sending_queue.persistent {
            Some(p) => Some(Arc::new(spool::Spool::open(p, metrics.clone())?)),
            None => None,
        };
        let cancel = CancellationToken::new();
        let sender = Arc::new(BatchSender {
            transport,
            endpoint: cfg.endpoint.clone(),
            retry: cfg.retry_on_failure.clone(),
            queue: queue.clone(),
            metrics,
            cancel: cancel.clone(),
            failing: AtomicBool::new(false),
            warn_limit: LogLimit::new(),
        });
        let (tx, rx) = mpsc::channel(CHANNEL_ITEMS);
        let batcher = batch::Batcher::new(
            &cfg.batch,
            cfg.protocol,
            cfg.sending_queue.num_consumers,
            rx,
            sender.clone(),
            spool.clone(),
        );
        let task = match (spool, &cfg.sending_queue.persistent) {
            (Some(spool), Some(p)) => {
                let dispatcher = tokio::spawn(spool::dispatch(
                    spool.clone(),
                    sender.clone(),
                    batcher.consumers(),
                ));
                let stop_sync = CancellationToken::new();
                let syncer = (p.fsync == crate::config::FsyncPolicy::Interval).then(|| {
                    tokio::spawn(spool::sync_every(
                        spool.clone(),
                        p.fsync_interval,
                        stop_sync.clone(),
                    ))
                });
                tokio::spawn(async move {
                    batcher.run().await;
                    spool.close_input();
                    if let Err(e) = dispatcher.await {
                        tracing::error!(error = %e, "persistent queue dispatcher failed");
                    }
                    if let Some(s) = syncer {
                        stop_sync.cancel();
                        let _ = s.await;
                    }
                })
            }
            _ => tokio::spawn(batcher.run()),
        };
        Ok((
            ExportHandle { tx, queue },
            Exporter {
                task,
                cancel,
                sender,
            },
        ))
    }

    /// A handle that abandons what is still undelivered when cancelled, as the end of `shutdown`'s
    /// grace does: in-flight and queued batches settle as `spans_lost{reason="shutdown"}` (or stay in
    /// the persistent queue), and `ExportHandle::send` fails from then on, so nothing upstream waits on
    /// the downstream any more. The app cancels it when the shutdown grace, counted from the moment
    /// shutdown was requested, runs out, whatever stage is still draining.
    pub fn abandon_handle(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// [`Exporter::shutdown_by`] a deadline `grace` from now, for callers without a deadline of their
    /// own (tests, tools).
    pub async fn shutdown(self, grace: Duration) {
        self.shutdown_by(tokio::time::Instant::now() + grace).await;
    }

    /// Waits until every queued span is delivered or given up on, at most until `deadline` (the app's
    /// one shutdown deadline, not a grace of its own); call after all `ExportHandle`s are dropped. What
    /// is still undelivered at the deadline is counted in `spans_lost{reason="shutdown"}`, or stays in
    /// the persistent queue. Every retry, backoff sleep, in-flight call and queue drain watches the same
    /// cancellation, so this returns right after the deadline whatever the downstream does.
    pub async fn shutdown_by(self, deadline: tokio::time::Instant) {
        let mut task = self.task;
        let ended = match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(ended) => ended,
            Err(_) => {
                tracing::warn!(
                    "exporter did not drain by the shutdown deadline; abandoning the rest"
                );
                self.cancel.cancel();
                task.await
            }
        };
        if let Err(e) = ended {
            tracing::error!(error = %e, "exporter task failed during shutdown");
        }
        let queue = &self.sender.queue;
        queue.permits.close();
        queue.bytes.close();
        let held_bytes = queue
            .capacity_bytes
            .saturating_sub(queue.bytes.available_permits());
        queue.metrics.export_queue_bytes.dec_by(held_bytes as i64);
        // Every path above settles its spans; this only catches a batcher that panicked.
        let held = queue
            .capacity
            .saturating_sub(queue.permits.available_permits());
        if held > 0 {
            tracing::error!(
                spans = held,
                "exporter ended with spans unsettled; counting them lost"
            );
            queue.metrics.lost("shutdown", held as u64);
            queue.metrics.export_queue_spans.dec_by(held as i64);
        }
    }
}
