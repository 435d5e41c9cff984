//! Overload during a downstream outage. Jaeger (the capture server) refuses every export while four
//! clients (two OTLP/gRPC, two OTLP/HTTP) send far more than tailgate can hold: a tiny buffer byte bound,
//! a small export queue and one pipeline worker make "more than sustainable" deterministic - with the
//! downstream down, tailgate can absorb only what fits in its bounded stages, and the test offers more
//! than twice what it accepts.
//!
//! Shown: every request gets an answer (accepted, or backpressure: gRPC `RESOURCE_EXHAUSTED` with
//! `RetryInfo` / `UNAVAILABLE`, HTTP 429 / 503 with `Retry-After`), none times out; the bytes charged to
//! the buffer never pass the bound; kept traces wait in the bounded queues and are all delivered, exactly
//! once, when the downstream returns; and `/metrics` accounts for every accepted span (the identity in
//! docs/operations.md) once tailgate is idle.

use crate::support::sample_request_in;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use std::collections::HashSet;
use tailgate_e2e::WAIT;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::{flatten, metric_sum};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};

const CLIENTS_PER_PROTOCOL: u128 = 2;
const REQUESTS_PER_CLIENT: u128 = 1000;
/// Export attempts the downstream refuses before it comes back: the outage outlasts many retries.
const OUTAGE_REFUSALS: usize = 40;
/// `buffer.max_buffer_bytes`.
const BOUND: u64 = 64 * 1024;

#[derive(Debug, Default)]
struct Tally {
    accepted_requests: u64,
    accepted_spans: u64,
    refused_requests: u64,
    refused_spans: u64,
    timeouts: u64,
    unexpected: Vec<String>,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.accepted_requests += o.accepted_requests;
        self.accepted_spans += o.accepted_spans;
        self.refused_requests += o.refused_requests;
        self.refused_spans += o.refused_spans;
        self.timeouts += o.timeouts;
        self.unexpected.extend(o.unexpected);
    }
}

fn trace_id(client: u128, i: u128) -> u128 {
    0x10ad_0000_0000_0000_0000_0000_0000_0000 | (client << 32) | i
}

async fn grpc_client(endpoint: String, client: u128) -> anyhow::Result<Tally> {
    let mut c = TraceServiceClient::connect(endpoint).await?;
    let mut t = Tally::default();
    for i in 0..REQUESTS_PER_CLIENT {
        let request = sample_request_in(trace_id(client, i));
        let spans = flatten(&request).len() as u64;
        match tokio::time::timeout(WAIT, c.export(request)).await {
            Err(_) => t.timeouts += 1,
            Ok(Ok(_)) => {
                t.accepted_requests += 1;
                t.accepted_spans += spans;
            }
            Ok(Err(s))
                if s.code() == tonic::Code::ResourceExhausted && !s.details().is_empty()
                    || s.code() == tonic::Code::Unavailable =>
            {
                t.refused_requests += 1;
                t.refused_spans += spans;
            }
            Ok(Err(s)) => t
                .unexpected
                .push(format!("gRPC {:?}: {}", s.code(), s.message())),
        }
    }
    Ok(t)
}

async fn http_client(endpoint: String, client: u128) -> anyhow::Result<Tally> {
    let http = reqwest::Client::new();
    let url = format!("{endpoint}/v1/traces");
    let mut t = Tally::default();
    for i in 0..REQUESTS_PER_CLIENT {
        let request = sample_request_in(trace_id(client, i));
        let spans = flatten(&request).len() as u64;
        let sent = http
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send();
        match tokio::time::timeout(WAIT, sent).await {
            Err(_) => t.timeouts += 1,
            Ok(Err(e)) => t.unexpected.push(format!("HTTP transport error: {e}")),
            Ok(Ok(r)) if r.status().is_success() => {
                t.accepted_requests += 1;
                t.accepted_spans += spans;
            }
            Ok(Ok(r))
                if matches!(r.status().as_u16(), 429 | 503)
                    && r.headers().contains_key("retry-after") =>
            {
                t.refused_requests += 1;
                t.refused_spans += spans;
            }
            Ok(Ok(r)) => t.unexpected.push(format!(
                "HTTP {} (Retry-After: {:?})",
                r.status(),
                r.headers().get("retry-after")
            )),
        }
    }
    Ok(t)
}

async fn metrics(admin: &str) -> anyhow::Result<String> {
    let r = tokio::time::timeout(WAIT, reqwest::get(format!("{admin}/metrics")))
        .await
        .map_err(|_| anyhow::anyhow!("/metrics did not answer within 30 s"))??;
    Ok(r.text().await?)
}

/// The accounting identity of docs/operations.md: (accepted, settled, still in flight).
fn accounting(text: &str) -> (f64, f64, f64) {
    let m = |name: &str| metric_sum(text, name);
    let accepted =
        m("tailgate_spans_received_total") + m("tailgate_persistent_queue_recovered_spans_total");
    let settled = m("tailgate_spans_exported_total")
        + m("tailgate_spans_sampled_out_total")
        + m("tailgate_spans_lost_total");
    let in_flight = m("tailgate_ingest_queue_spans")
        + m("tailgate_buffer_spans")
        + m("tailgate_pipeline_spans")
        + m("tailgate_export_queue_spans")
        + m("tailgate_persistent_queue_spans");
    (accepted, settled, in_flight)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_during_a_downstream_outage_is_bounded_and_accounted() -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    capture.set_outage(true);
    let mut config = TestConfig::passthrough_to(capture.grpc_endpoint());
    config.settle = "20ms";
    config.idle_timeout = "200ms";
    config.batch_timeout = "20ms";
    config.retry_initial_interval = "20ms";
    config.retry_max_interval = "100ms";
    config.max_buffer_bytes = "64KiB";
    config.batch_extra = "      send_batch_size: 50\n      send_batch_max_size: 100\n".into();
    config.exporter_extra =
        "    sending_queue:\n      queue_size: 200\n      num_consumers: 2\n".into();
    config.workers = Some(1);
    let app = config.start().await?;
    let admin = app.admin_endpoint();

    // Only reported (a figure for the notes), never asserted.
    let started = std::time::Instant::now();
    let mut clients = Vec::new();
    for c in 0..CLIENTS_PER_PROTOCOL {
        clients.push(tokio::spawn(grpc_client(app.grpc_endpoint(), c)));
        clients.push(tokio::spawn(http_client(
            app.http_endpoint(),
            CLIENTS_PER_PROTOCOL + c,
        )));
    }
    let mut t = Tally::default();
    for c in clients {
        t.add(c.await??);
    }
    let offered = 2 * CLIENTS_PER_PROTOCOL * REQUESTS_PER_CLIENT;
    let during = metrics(&admin).await?;
    let peak = metric_sum(&during, "tailgate_buffer_bytes_peak");
    let outage_refusals = capture.refused();
    eprintln!(
        "overload: offered {offered} requests; accepted {} ({} spans), refused {} ({} spans), \
         timeouts {}; peak buffered {peak} bytes of a {BOUND}-byte bound; downstream refused {outage_refusals} exports",
        t.accepted_requests, t.accepted_spans, t.refused_requests, t.refused_spans, t.timeouts
    );
    assert_eq!(t.timeouts, 0, "every request is answered: {t:?}");
    assert!(
        t.unexpected.is_empty(),
        "only acceptance or backpressure: {t:?}"
    );
    assert_eq!(t.accepted_requests + t.refused_requests, offered as u64);
    assert!(
        offered as u64 >= 2 * t.accepted_requests,
        "the load was at least twice what tailgate could take: {t:?}"
    );
    assert!(
        peak > 0.0 && peak <= BOUND as f64,
        "peak {peak} within {BOUND}"
    );
    assert_eq!(
        metric_sum(&during, "tailgate_spans_received_total"),
        t.accepted_spans as f64
    );
    assert_eq!(
        metric_sum(&during, "tailgate_spans_refused_total"),
        t.refused_spans as f64,
        "every refused span is counted with its reason:\n{during}"
    );
    assert!(outage_refusals > 0, "the exporter met the outage");
    assert!(capture.spans().is_empty(), "nothing got through the outage");

    // The outage goes on (tailgate still answering) until the exporter has retried many times.
    tailgate_e2e::poll_until("the exporter to retry through the outage", WAIT, || {
        (capture.refused() >= OUTAGE_REFUSALS).then_some(())
    })
    .await?;
    // The downstream returns: everything accepted arrives, exactly once.
    let outage = started.elapsed();
    capture.set_outage(false);
    let arrived = capture.wait_for_spans(t.accepted_spans as usize).await?;
    let unique: HashSet<(Vec<u8>, Vec<u8>)> = arrived
        .iter()
        .map(|s| (s.span.trace_id.clone(), s.span.span_id.clone()))
        .collect();
    assert_eq!(arrived.len(), unique.len(), "no span arrived twice");
    assert_eq!(unique.len() as u64, t.accepted_spans);

    // Once idle, /metrics accounts for every accepted span.
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let text = metrics(&admin).await?;
        let (accepted, settled, in_flight) = accounting(&text);
        if accepted == settled && in_flight == 0.0 {
            break text;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "accounting never settled: accepted {accepted}, settled {settled}, in flight {in_flight}\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        metric_sum(&text, "tailgate_spans_exported_total"),
        t.accepted_spans as f64
    );
    assert_eq!(metric_sum(&text, "tailgate_spans_lost_total"), 0.0);
    eprintln!(
        "outage: {:?} with {} export attempts refused; {} spans kept and delivered after it, none lost",
        outage,
        capture.refused(),
        unique.len()
    );
    app.shutdown().await;
    Ok(())
}
