//! Wires the stages together, runs them, and shuts them down in order: stop the receivers, decide what is
//! buffered, let the pipeline finish, let the exporter drain, all by one deadline (`service.shutdown_grace`
//! after the shutdown request), then log the final accounting.

use crate::admin::{self, AdminState};
use crate::buffer::{self, BufferLimits, TraceBuffer};
use crate::config::{Config, Overrides};
use crate::decisions::DecisionCache;
use crate::export::Exporter;
use crate::ingest::{IngestHandle, Pressure};
use crate::metrics::Metrics;
use crate::otlp::predicate::PredicateSlot;
use crate::pipeline::{self, PipelineContext, Policy};
use crate::receiver::{self, ReceiverContext};
use crate::reload::{self, ReloadError, Reloader};
use crate::status;
use arc_swap::ArcSwap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Capacity, in traces, of each pipeline worker's queue and of the redaction stage's queue. Small: the
/// buffer's byte bound is the memory bound, these queues only absorb bursts of traces due together.
const PIPELINE_QUEUE_TRACES: usize = 256;

/// Why tailgate could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error("policy: {0}")]
    Policy(String),
    #[error("cannot start the buffer or pipeline threads: {0}")]
    Threads(std::io::Error),
    #[error(transparent)]
    Load(#[from] ReloadError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    #[error("{0}")]
    Recording(String),
    #[error("{0}")]
    Kafka(String),
    #[error("{0}")]
    Memory(String),
}

/// Logs the memory limit and its shares, and publishes the limit.
fn log_budget(b: &crate::config::memory::MemoryBudget, metrics: &Metrics) {
    use crate::config::ByteSize;
    metrics
        .memory_limit_bytes
        .set(i64::try_from(b.limit).unwrap_or(i64::MAX));
    tracing::info!(
        limit = %ByteSize(b.limit),
        source = %b.source,
        buffer = %ByteSize(b.buffer),
        export_queue = %ByteSize(b.export_queue),
        decision_cache = %ByteSize(b.decision_cache()),
        kept_traces = b.kept_traces,
        dropped_traces = b.dropped_traces,
        allowance = %ByteSize(b.allowance()),
        "memory limit"
    );
}

/// A running tailgate. Dropping it without [`RunningApp::shutdown`] aborts nothing; call shutdown.
pub struct RunningApp {
    /// Bound OTLP/gRPC address (useful with port 0).
    pub grpc_addr: Option<SocketAddr>,
    /// Bound OTLP/HTTP address.
    pub http_addr: Option<SocketAddr>,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// The live policy (swap it to change rules at run time).
    pub policy: Arc<ArcSwap<Policy>>,
    /// Reloads the configuration file, when started from one ([`start_from_file`]).
    pub reloader: Option<Arc<Reloader>>,
    stop: watch::Sender<bool>,
    done: JoinHandle<()>,
}

impl RunningApp {
    /// Graceful shutdown: returns once everything accepted is exported, on disk in the persistent queue
    /// or counted (lost to `shutdown` at the latest when `service.shutdown_grace`, counted from this call,
    /// ran out), whatever the downstream does; then logs the final counts (`tailgate stopped`).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { what, addr, source })
}

/// Starts every stage with `policy` as the initial policy.
pub async fn start_with_policy(config: Config, policy: Policy) -> Result<RunningApp, AppError> {
    let predicates = PredicateSlot::new(policy.predicates.clone());
    let policy = Arc::new(ArcSwap::from_pointee(policy));
    let metrics = Metrics::with_topology(&config.topology);
    start_stages(config, metrics, policy, predicates, None).await
}

/// Starts tailgate from a configuration file (with `overrides` on top) and keeps it reloadable: a change
/// to the file or to a plugin it references, SIGHUP, or `POST /reload` rebuilds the policy and swaps it in
/// (see [`crate::reload`]).
pub async fn start_from_file(path: &Path, overrides: &Overrides) -> Result<RunningApp, AppError> {
    // The topology settings size metric families, so they are read before anything else (a broken file
    // is reported by the load below).
    let topology = crate::config::Config::load(path)
        .map(|c| c.topology)
        .unwrap_or_default();
    let metrics = Metrics::with_topology(&topology);
    let (path, overrides, m) = (path.to_owned(), overrides.clone(), metrics.clone());
    // Compiling and initializing plugins blocks; keep it off the async workers.
    let (reloader, config) =
        tokio::task::spawn_blocking(move || Reloader::load(&path, &overrides, m))
            .await
            .map_err(|e| AppError::Load(ReloadError::Task(e.to_string())))??;
    let (policy, predicates) = (reloader.policy(), reloader.predicates());
    start_stages(config, metrics, policy, predicates, Some(reloader)).await
}

async fn start_stages(
    config: Config,
    metrics: Arc<Metrics>,
    policy: Arc<ArcSwap<Policy>>,
    predicates: PredicateSlot,
    reloader: Option<Arc<Reloader>>,
) -> Result<RunningApp, AppError> {
    // Before anything starts: a recording of unredacted traffic must have been asked for by name.
    config.validate_record().map_err(AppError::Recording)?;
    let cfg = Arc::new(config);

    // Read certificates and build the checks first, so a bad file fails before anything listens.
    let security = crate::security::ReceiverSecurity::load(&cfg, &metrics)?;

    // Bind everything first so a taken port fails before any task starts.
    let protocols = &cfg.receivers.otlp.protocols;
    let grpc_listener = match &protocols.grpc {
        Some(g) => Some(bind("OTLP/gRPC receiver", g.endpoint).await?),
        None => None,
    };
    let http_listener = match &protocols.http {
        Some(h) => Some(bind("OTLP/HTTP receiver", h.endpoint).await?),
        None => None,
    };
    let admin_listener = bind("admin server", cfg.admin.endpoint).await?;
    let local = |l: &TcpListener| l.local_addr().ok();
    let grpc_addr = grpc_listener.as_ref().and_then(local);
    let http_addr = http_listener.as_ref().and_then(local);
    let admin_addr = local(&admin_listener).unwrap_or(cfg.admin.endpoint);

    // Downstream first, so upstream never sends into nothing.
    let budget = cfg.memory_budget().map_err(AppError::Memory)?;
    log_budget(&budget, &metrics);
    let (export, exporter) = Exporter::start_with_queue_bytes(
        &cfg.exporters.otlp,
        budget.export_queue,
        metrics.clone(),
    )?;
    let cache = Arc::new(DecisionCache::new(
        budget.kept_traces,
        budget.dropped_traces,
        cfg.buffer.decision_cache.ttl,
    ));
    let workers = cfg
        .plugins
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let ring = cfg.buffer.second_chance.enabled().then(|| {
        Arc::new(crate::rescue::Ring::new(
            usize::try_from(budget.second_chance).unwrap_or(usize::MAX),
            cfg.buffer.second_chance.grace,
        ))
    });
    let pipeline_ctx = PipelineContext {
        policy: policy.clone(),
        cache: cache.clone(),
        export,
        metrics: metrics.clone(),
        ring: ring.clone(),
    };
    let (pipeline_tx, pipeline_done) = pipeline::start(
        workers,
        PIPELINE_QUEUE_TRACES,
        pipeline_ctx,
        cfg.plugins.decide_on_buffer_thread,
    )
    .map_err(AppError::Threads)?;
    let rescuer = ring.map(|r| pipeline_tx.rescuer(r));

    let limits = BufferLimits::new(&cfg.buffer, budget.buffer);
    let pressure = Arc::new(Pressure::new(limits.max_buffer_bytes));
    tokio::spawn(crate::ingest::watch_resident_memory(
        pressure.clone(),
        budget.limit,
        metrics.clone(),
    ));
    let recorder = match &cfg.record {
        Some(r) => {
            tracing::warn!(
                path = %r.path.display(),
                "recording received traffic unredacted (record.unredacted): the file holds personal data as sent"
            );
            Some(crate::record::Recorder::start(&r.path, r.max_bytes.0)?)
        }
        None => None,
    };
    let (ingest, ingest_rx) = IngestHandle::channel(cfg.buffer.queue_size, pressure.clone());
    let ingest = ingest
        .with_recorder(recorder.clone())
        .with_predicates(predicates);
    let buffer_task = match &cfg.exporters.kafka {
        // The ingest tier: spans go to the Kafka topic instead of the buffer.
        Some(k) => kafka_sink(
            k,
            ingest_rx,
            pressure,
            metrics.clone(),
            exporter.abandon_handle(),
        )?,
        None => buffer::spawn(
            ingest_rx,
            TraceBuffer::new(limits, cache),
            pipeline_tx,
            pressure,
            metrics.clone(),
            exporter.abandon_handle(),
        )
        .map_err(AppError::Threads)?,
    };
    let kafka_source = match &cfg.receivers.kafka {
        Some(k) => Some(kafka_source(k, ingest.clone(), metrics.clone())?),
        None => None,
    };

    let (stop, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut receivers = Vec::new();
    if let (Some(l), Some(g)) = (grpc_listener, &protocols.grpc) {
        let ctx = ReceiverContext {
            ingest: ingest.clone(),
            metrics: metrics.clone(),
            max_body_bytes: g.max_recv_msg_size.as_usize(),
        };
        let (tls, auth) = (security.grpc_tls.clone(), security.grpc_auth.clone());
        receivers.push(tokio::spawn(receiver::grpc::serve_with(
            l,
            ctx,
            tls,
            auth,
            stopped(),
        )));
    }
    if let (Some(l), Some(h)) = (http_listener, &protocols.http) {
        let ctx = ReceiverContext {
            ingest: ingest.clone(),
            metrics: metrics.clone(),
            max_body_bytes: h.max_request_body_size.as_usize(),
        };
        let (tls, auth) = (security.http_tls.clone(), security.http_auth.clone());
        receivers.push(tokio::spawn(receiver::http::serve_with(
            l,
            ctx,
            tls,
            auth,
            stopped(),
        )));
    }
    drop(ingest);
    if let Some(r) = &rescuer {
        tokio::spawn(pipeline::expire_ring(r.ring(), metrics.clone(), stopped()));
    }
    let ready = Arc::new(AtomicBool::new(true));
    let history = Arc::new(status::History::new(metrics.clone()));
    tokio::spawn(status::run_sampler(history.clone(), stopped()));
    let status = Arc::new(status::StatusContext {
        metrics: metrics.clone(),
        policy: policy.clone(),
        reloader: reloader.clone(),
        history,
        jaeger_ui_url: cfg.admin.jaeger_ui_url.clone(),
        started_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    });
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            metrics: metrics.clone(),
            ready: ready.clone(),
            reloader: reloader.clone(),
            token: security.admin_token.clone(),
            status,
            rescuer,
        },
        stopped(),
    ));
    let reload_task = reloader
        .clone()
        .map(|r| reload::spawn_triggers(r, stopped()));
    tracing::info!(grpc = ?grpc_addr, http = ?http_addr, admin = %admin_addr, "tailgate is listening");

    let grace = cfg.service.shutdown_grace;
    let abandon = exporter.abandon_handle();
    let shutdown_requested = stopped();
    let done_metrics = metrics.clone();
    let done = tokio::spawn(async move {
        shutdown_requested.await;
        // The one shutdown deadline, computed once here and passed to every stage that can wait on
        // something outside the process. It is counted from the shutdown request, not from when the
        // pipeline has drained: with the downstream unreachable, the export queue is full and the
        // pipeline, the buffer and the receivers all wait on it, so a clock started after them would
        // never start. At the deadline the exporter abandons what it holds (counted as lost to
        // `shutdown`, or left in the persistent queue) and every stage upstream drains at once.
        let requested = tokio::time::Instant::now();
        let deadline = requested + grace;
        let clock = spawn_deadline_clock(deadline, grace, abandon.clone());
        if let Some(source) = &kafka_source {
            source.stop_by(deadline.into_std());
        }
        for mut r in receivers {
            // A receiver waits for its open connections to end; past the deadline it is stopped outright
            // (the buffer has closed the ingest queue by then, so nothing more is accepted).
            let ended = tokio::select! {
                ended = &mut r => Some(ended),
                _ = abandon.cancelled() => None,
            };
            match ended {
                Some(Ok(Err(e))) => tracing::error!(error = %e, "receiver stopped with an error"),
                Some(Err(e)) => tracing::error!(error = %e, "receiver task failed"),
                Some(Ok(Ok(()))) => {}
                None => {
                    tracing::warn!(
                        "a receiver still had open connections when the shutdown grace ran out; closing it"
                    );
                    r.abort();
                }
            }
        }
        ready.store(false, Ordering::Relaxed);
        if let Some(t) = reload_task {
            // A reload in progress (compiling plugins) is not waited for past the deadline.
            until_deadline(t, deadline, "configuration reload").await;
        }
        tracing::info!("receivers stopped; deciding buffered traces");
        // The buffer ends when the last ingest handle (held by receivers) is gone, then hands everything
        // to the pipeline; the pipeline ends when the buffer's senders are gone.
        let _ = buffer_task.await;
        if let Some(r) = recorder {
            // Every ingest handle is gone: nothing more can be recorded; close the file.
            let _ = tokio::task::spawn_blocking(move || r.finish()).await;
        }
        let _ = pipeline_done.await;
        // Everything the Kafka source handed over is decided: it commits and leaves the group (its wait
        // for acknowledgements ends at the deadline too).
        if let Some(source) = kafka_source {
            source.finish().await;
        }
        tracing::info!("pipeline finished; draining exporter");
        exporter.shutdown_by(deadline).await;
        // An admin request still open (a slow scrape) does not hold the exit past the deadline.
        until_deadline(admin_task, deadline, "admin server").await;
        clock.abort();
        let counts = done_metrics.accounting();
        tracing::info!(
            spans_received = counts.received,
            spans_recovered = counts.recovered,
            spans_exported = counts.exported,
            spans_sampled_out = counts.sampled_out,
            spans_lost = counts.lost_total(),
            spans_lost_to_shutdown = counts.lost_to("shutdown"),
            spans_lost_by_reason = %counts.lost_by_reason(),
            spans_in_flight = counts.in_flight,
            persistent_queue_spans = counts.persistent_queue,
            accounting_identity_holds = counts.balanced(),
            shutdown_ms = requested.elapsed().as_millis() as u64,
            "tailgate stopped"
        );
    });
    Ok(RunningApp {
        grpc_addr,
        http_addr,
        admin_addr,
        metrics,
        policy,
        reloader,
        stop,
        done,
    })
}

/// Fires `abandon` at the shutdown deadline: from then on nothing waits on the downstream.
fn spawn_deadline_clock(
    deadline: tokio::time::Instant,
    grace: std::time::Duration,
    abandon: tokio_util::sync::CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            _ = abandon.cancelled() => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    ?grace,
                    "shutdown grace ran out before every stage drained; abandoning undelivered spans"
                );
                abandon.cancel();
            }
        }
    })
}

/// Waits for `task` until the shutdown deadline, then aborts it.
async fn until_deadline<T>(mut task: JoinHandle<T>, deadline: tokio::time::Instant, what: &str) {
    if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
        tracing::warn!("{what} still busy when the shutdown grace ran out; stopping it");
        task.abort();
    }
}

#[cfg(feature = "kafka")]
fn kafka_sink(
    cfg: &crate::config::KafkaExporter,
    rx: tokio::sync::mpsc::Receiver<crate::ingest::SpanBatch>,
    pressure: Arc<Pressure>,
    metrics: Arc<crate::metrics::Metrics>,
    deadline_passed: tokio_util::sync::CancellationToken,
) -> Result<JoinHandle<()>, AppError> {
    let producer = crate::kafka::sink::producer(cfg)
        .map_err(|e| AppError::Kafka(format!("exporters.kafka: {e}")))?;
    tracing::info!(topic = %cfg.topic, brokers = ?cfg.brokers, "ingest tier: publishing to kafka");
    Ok(tokio::spawn(crate::kafka::sink::run(
        rx,
        producer,
        cfg.topic.clone(),
        pressure,
        metrics,
        deadline_passed,
    )))
}

#[cfg(feature = "kafka")]
fn kafka_source(
    cfg: &crate::config::KafkaReceiver,
    ingest: IngestHandle,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<crate::kafka::source::KafkaSource, AppError> {
    crate::kafka::source::start(cfg, ingest, metrics).map_err(|e| AppError::Kafka(e.to_string()))
}

#[cfg(not(feature = "kafka"))]
use crate::config::NO_KAFKA_FEATURE as NO_KAFKA;

#[cfg(not(feature = "kafka"))]
fn kafka_sink(
    _: &crate::config::KafkaExporter,
    _: tokio::sync::mpsc::Receiver<crate::ingest::SpanBatch>,
    _: Arc<Pressure>,
    _: Arc<crate::metrics::Metrics>,
    _: tokio_util::sync::CancellationToken,
) -> Result<JoinHandle<()>, AppError> {
    Err(AppError::Kafka(format!("exporters.kafka: {NO_KAFKA}")))
}

#[cfg(not(feature = "kafka"))]
struct NoSource;

#[cfg(not(feature = "kafka"))]
impl NoSource {
    fn stop_by(&self, _: std::time::Instant) {}
    async fn finish(self) {}
}

#[cfg(not(feature = "kafka"))]
fn kafka_source(
    _: &crate::config::KafkaReceiver,
    _: IngestHandle,
    _: Arc<crate::metrics::Metrics>,
) -> Result<NoSource, AppError> {
    Err(AppError::Kafka(format!("receivers.kafka: {NO_KAFKA}")))
}

/// Starts tailgate from a configuration: loads the policy's plugins, then every stage.
pub async fn start(config: Config) -> Result<RunningApp, AppError> {
    let policy = crate::policy::load(&config).map_err(|e| AppError::Policy(e.to_string()))?;
    start_with_policy(config, policy).await
}

/// [`run`] from a configuration file, reloadable while it runs ([`start_from_file`]).
pub async fn run_from_file(
    path: &Path,
    overrides: &Overrides,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let app = start_from_file(path, overrides).await?;
    shutdown.await;
    tracing::info!("shutdown requested");
    app.shutdown().await;
    Ok(())
}

/// Runs tailgate until `shutdown` completes, then shuts down gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
    let app = start(config).await?;
    shutdown.await;
    tracing::info!("shutdown requested");
    app.shutdown().await;
    Ok(())
}
