//! The other encodings a client may use, through the whole app: OTLP/JSON over HTTP (plain and gzip),
//! gzip-compressed protobuf over HTTP, and gzip-compressed OTLP/gRPC.

use crate::support::{grpc_send, sample_request_in};
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span, status};
use prost::Message;
use std::io::Write;
use tailgate::testing::{kv_int, kv_str, request};
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::{FlatSpan, assert_same_spans, flatten, from_hex};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    e.write_all(bytes).expect("gzip into memory");
    e.finish().expect("gzip into memory")
}

/// An OTLP/JSON body (hex ids, lowerCamelCase names, enums as integers, 64-bit integers as strings or
/// numbers, as the spec allows) and the same request as protobuf types.
fn json_request(trace: &str) -> (String, ExportTraceServiceRequest) {
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json-client"}}}}]}},
  "scopeSpans":[{{"scope":{{"name":"manual","version":"1.0"}},"spans":[
    {{"traceId":"{trace}","spanId":"eee19b7ec3c1b174","name":"json root","kind":2,
     "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000001000000000",
     "attributes":[{{"key":"http.route","value":{{"stringValue":"/orders/{{id}}"}}}},
                   {{"key":"retries","value":{{"intValue":"42"}}}},
                   {{"key":"ratio","value":{{"doubleValue":1.5}}}},
                   {{"key":"cached","value":{{"boolValue":true}}}},
                   {{"key":"mixed","value":{{"arrayValue":{{"values":[{{"stringValue":"x"}},{{"intValue":7}}]}}}}}}],
     "events":[{{"timeUnixNano":"1700000000500000000","name":"cache miss","attributes":[{{"key":"k","value":{{"stringValue":"v"}}}}]}}],
     "status":{{"code":2,"message":"boom"}}}},
    {{"traceId":"{trace}","spanId":"eee19b7ec3c1b175","parentSpanId":"eee19b7ec3c1b174","name":"json child","kind":3,
     "startTimeUnixNano":1700000000100000000,"endTimeUnixNano":1700000000200000000,
     "links":[{{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","attributes":[{{"key":"why","value":{{"stringValue":"retry of"}}}}]}}]}}
  ]}}]}}]}}"#
    );
    let id = |h: &str| from_hex(h).expect("valid hex");
    let str_value = |s: &str| AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    };
    let root = Span {
        trace_id: id(trace),
        span_id: id("eee19b7ec3c1b174"),
        name: "json root".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_001_000_000_000,
        attributes: vec![
            kv_str("http.route", "/orders/{id}"),
            kv_int("retries", 42),
            KeyValue {
                key: "ratio".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::DoubleValue(1.5)),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "cached".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::BoolValue(true)),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "mixed".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            str_value("x"),
                            AnyValue {
                                value: Some(any_value::Value::IntValue(7)),
                            },
                        ],
                    })),
                }),
                ..Default::default()
            },
        ],
        events: vec![span::Event {
            time_unix_nano: 1_700_000_000_500_000_000,
            name: "cache miss".into(),
            attributes: vec![kv_str("k", "v")],
            dropped_attributes_count: 0,
        }],
        status: Some(Status {
            message: "boom".into(),
            code: status::StatusCode::Error as i32,
        }),
        ..Default::default()
    };
    let child = Span {
        trace_id: id(trace),
        span_id: id("eee19b7ec3c1b175"),
        parent_span_id: id("eee19b7ec3c1b174"),
        name: "json child".into(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: 1_700_000_000_100_000_000,
        end_time_unix_nano: 1_700_000_000_200_000_000,
        links: vec![span::Link {
            trace_id: id("0af7651916cd43dd8448eb211c80319c"),
            span_id: id("b7ad6b7169203331"),
            attributes: vec![kv_str("why", "retry of")],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut proto = request("json-client", vec![root, child]);
    // The JSON above has no schema URLs; the fixture sets some.
    for rs in &mut proto.resource_spans {
        rs.schema_url.clear();
        for ss in &mut rs.scope_spans {
            ss.scope = Some(
                opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                    name: "manual".into(),
                    version: "1.0".into(),
                    ..Default::default()
                },
            );
        }
    }
    (json, proto)
}

async fn post(url: &str, content_type: &str, gzipped: bool, body: Vec<u8>) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut req = client.post(url).header("content-type", content_type);
    let body = if gzipped {
        req = req.header("content-encoding", "gzip");
        gzip(&body)
    } else {
        body
    };
    let response = tokio::time::timeout(tailgate_e2e::WAIT, req.body(body).send())
        .await
        .map_err(|_| anyhow::anyhow!("tailgate did not answer within 30 s"))??;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "POST {content_type} (gzip: {gzipped}) -> {status}: {text}"
    );
    Ok(())
}

#[tokio::test]
async fn json_and_gzip() -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    let app = TestConfig::passthrough_to(capture.grpc_endpoint())
        .start()
        .await?;
    let url = format!("{}/v1/traces", app.http_endpoint());
    let mut expected: Vec<FlatSpan> = Vec::new();

    // OTLP/JSON, plain and gzip.
    let (json, proto) = json_request("5b8efff798038103d269b633813fc60c");
    post(&url, "application/json", false, json.into_bytes()).await?;
    expected.extend(flatten(&proto));
    let (json, proto) = json_request("5b8efff798038103d269b633813fc60d");
    post(&url, "application/json", true, json.into_bytes()).await?;
    expected.extend(flatten(&proto));

    // gzip-compressed protobuf over HTTP.
    let proto = sample_request_in(0x6a6a_0000_0000_0000_0000_0000_0000_0001);
    post(&url, "application/x-protobuf", true, proto.encode_to_vec()).await?;
    expected.extend(flatten(&proto));

    // gzip-compressed OTLP/gRPC.
    let proto = sample_request_in(0x6a6a_0000_0000_0000_0000_0000_0000_0002);
    grpc_send(&app.grpc_endpoint(), proto.clone(), true).await?;
    expected.extend(flatten(&proto));

    capture.wait_for_spans(expected.len()).await?;
    app.shutdown().await;
    assert_same_spans(&expected, &capture.spans());
    Ok(())
}
