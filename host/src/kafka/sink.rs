//! The ingest tier's Kafka sink: takes the spans the OTLP receivers accepted off the ingest queue and
//! publishes each trace's spans of a request as one `otlp_proto` message (an `ExportTraceServiceRequest`)
//! keyed by the trace id, so every span of a trace lands in the same partition and so at the same sampler
//! replica. The key is the trace id in lowercase hex and the partitioner is `murmur2_random` (the Java
//! client's), as the OpenTelemetry Collector's Kafka exporter does with `partition_traces_by_id`, so both
//! can feed one topic.
//!
//! Bytes waiting for the broker's acknowledgement count against `buffer.max_buffer_bytes`, so a slow or
//! absent broker becomes backpressure for OTLP clients (429 / `RESOURCE_EXHAUSTED`). A message the broker
//! never acknowledged (`timeout` passed) has its spans counted in `tailgate_spans_lost_total{reason=
//! "kafka_produce"}`.

use crate::config::KafkaExporter;
use crate::ingest::{Pressure, SpanBatch};
use crate::metrics::Metrics;
use crate::otlp::{ExportBuilder, SpanRecord, TraceId};
use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The librdkafka producer configuration for `cfg`.
pub fn producer_config(cfg: &KafkaExporter) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cfg.brokers.join(","))
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", cfg.timeout.as_millis().to_string())
        .set("enable.idempotence", "false")
        .set("linger.ms", "5");
    for (k, v) in &cfg.client_options {
        c.set(k, v);
    }
    c
}

/// Creates the producer (fails on a bad option; brokers are contacted lazily).
pub fn producer(cfg: &KafkaExporter) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    producer_config(cfg).create()
}

/// The message key of a trace: its id in lowercase hex (32 characters).
pub fn trace_key(trace_id: TraceId) -> String {
    format!("{trace_id:032x}")
}

/// One trace's spans as an `ExportTraceServiceRequest`.
pub fn encode_trace(spans: &[SpanRecord]) -> Bytes {
    let mut b = ExportBuilder::new();
    for s in spans {
        b.push(s, Bytes::new());
    }
    b.finish()
}

/// Publishes batches until the ingest queue closes (the receivers stopped), then waits for the broker's
/// acknowledgements of everything in flight, until `deadline_passed` fires (the app's shutdown deadline):
/// what is unacknowledged then is counted in `tailgate_spans_lost_total{reason="shutdown"}`.
pub async fn run(
    mut rx: mpsc::Receiver<SpanBatch>,
    producer: FutureProducer,
    topic: String,
    pressure: Arc<Pressure>,
    metrics: Arc<Metrics>,
    deadline_passed: CancellationToken,
) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut deliveries = JoinSet::new();
    while let Some(batch) = rx.recv().await {
        let charged = batch.charged;
        in_flight.fetch_add(charged, Ordering::Relaxed);
        pressure.dequeued(charged);
        pressure.set_buffered(in_flight.load(Ordering::Relaxed));
        let mut waits = Vec::with_capacity(batch.traces.len());
        for (trace_id, spans) in &batch.traces {
            let body = encode_trace(spans);
            let key = trace_key(*trace_id);
            let mut record = FutureRecord::to(&topic).key(&key).payload(&body[..]);
            let n = spans.len() as u64;
            // The local queue is full only while librdkafka cannot keep up; wait for room.
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(d) => break Some(d),
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        record = r;
                        if deadline_passed.is_cancelled() {
                            break None;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => {
                        tracing::warn!(error = %e, "kafka exporter: cannot queue a message");
                        break None;
                    }
                }
            };
            waits.push((delivery, n));
        }
        // Reap finished delivery tasks so the set stays small.
        while deliveries.try_join_next().is_some() {}
        let (in_flight, pressure, metrics) = (in_flight.clone(), pressure.clone(), metrics.clone());
        let abandon = deadline_passed.clone();
        deliveries.spawn(async move {
            for (delivery, n) in waits {
                let ok = match delivery {
                    Some(d) => tokio::select! {
                        biased;
                        r = d => matches!(r, Ok(Ok(_))),
                        _ = abandon.cancelled() => false,
                    },
                    None => false,
                };
                if !ok && abandon.is_cancelled() {
                    // Unacknowledged at the shutdown deadline (or never queued because of it).
                    metrics.lost("shutdown", n);
                    continue;
                }
                let outcome = if ok { "ok" } else { "error" };
                metrics
                    .kafka
                    .messages_produced
                    .get_or_create(&super::OutcomeLabels { outcome })
                    .inc();
                if ok {
                    // Handed on downstream: for the ingest tier the topic is the downstream.
                    metrics.spans_exported.inc_by(n);
                } else {
                    metrics.lost("kafka_produce", n);
                }
            }
            // Still counted in `batch.charged` (`from_scanned` sizes never change after submit).
            let left = in_flight.fetch_sub(charged, Ordering::Relaxed) - charged;
            pressure.set_buffered(left);
        });
    }
    while deliveries.join_next().await.is_some() {}
    if !deadline_passed.is_cancelled() {
        // Every delivery above is settled: this only hands librdkafka's last requests to the broker.
        let p = producer.clone();
        let _ = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(5))).await;
    }
    pressure.set_buffered(0);
    tracing::info!("kafka exporter: everything in flight acknowledged");
}
