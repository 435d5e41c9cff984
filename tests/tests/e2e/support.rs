//! Small helpers shared by the scenarios.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use serde_json::Value;
use tailgate_e2e::otlp::{FlatSpan, decode_hex_request, flatten};
use tonic::codec::CompressionEncoding;

/// What a client script reported: the spans the SDK encoded, decoded back to OTLP.
pub struct ScriptReport {
    pub expected: Vec<FlatSpan>,
    pub trace_ids: Vec<String>,
    pub exports: u64,
}

pub fn parse_report(v: &Value) -> anyhow::Result<ScriptReport> {
    let hex = v["expected"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no `expected` in {v}"))?;
    let expected = flatten(&decode_hex_request(hex)?);
    let count = v["span_count"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        expected.len() as u64 == count,
        "script reported {count} spans, encoded {}",
        expected.len()
    );
    let trace_ids = v["trace_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok(ScriptReport {
        expected,
        trace_ids,
        exports: v["exports"].as_u64().unwrap_or(0),
    })
}

/// Sends one request over OTLP/gRPC, optionally gzip-compressed, and fails unless it is accepted whole.
pub async fn grpc_send(
    endpoint: &str,
    request: ExportTraceServiceRequest,
    gzip: bool,
) -> anyhow::Result<()> {
    let mut client = TraceServiceClient::connect(endpoint.to_owned()).await?;
    if gzip {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    let response = tokio::time::timeout(tailgate_e2e::WAIT, client.export(request))
        .await
        .map_err(|_| anyhow::anyhow!("tailgate did not answer an OTLP/gRPC export within 30 s"))??
        .into_inner();
    if let Some(p) = response.partial_success {
        anyhow::ensure!(
            p.rejected_spans == 0,
            "tailgate rejected {} spans: {}",
            p.rejected_spans,
            p.error_message
        );
    }
    Ok(())
}

/// `tailgate::testing::sample_request` with its trace id replaced, so concurrent scenarios never share a
/// trace.
pub fn sample_request_in(trace_id: u128) -> ExportTraceServiceRequest {
    let mut r = tailgate::testing::sample_request();
    for rs in &mut r.resource_spans {
        for ss in &mut rs.scope_spans {
            for s in &mut ss.spans {
                s.trace_id = trace_id.to_be_bytes().to_vec();
            }
        }
    }
    r
}
