//! OTLP/HTTP export: `POST <endpoint>/v1/traces` with `application/x-protobuf`, optionally gzipped.

use super::retry::parse_retry_after;
use super::{Accepted, ExportError, Failure};
use crate::config::{Compression, OtlpExporter};
use crate::otlp::rpc::RpcStatus;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use reqwest::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use std::io::Write;
use std::time::SystemTime;

/// An HTTP client for OTLP/HTTP protobuf.
pub(crate) struct HttpTransport {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    gzip: bool,
}

impl HttpTransport {
    pub fn new(cfg: &OtlpExporter) -> Result<Self, ExportError> {
        let bad = |reason: String| ExportError::Endpoint {
            endpoint: cfg.endpoint.clone(),
            reason,
        };
        let url = traces_url(&cfg.endpoint).map_err(bad)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let header = |reason: String| ExportError::Header {
                name: name.clone(),
                reason,
            };
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| header(e.to_string()))?;
            let v = HeaderValue::from_str(value).map_err(|e| header(e.to_string()))?;
            headers.insert(n, v);
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        let gzip = cfg.compression == Compression::Gzip;
        if gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let mut client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout);
        if url.scheme() == "https" {
            let tls = crate::tls::http_client(&cfg.tls.clone().unwrap_or_default())?;
            client = client.use_preconfigured_tls(tls).https_only(true);
        }
        let client = client.build().map_err(|e| bad(e.to_string()))?;
        Ok(HttpTransport {
            client,
            url,
            headers,
            gzip,
        })
    }

    pub async fn send(&self, body: Bytes) -> Result<Accepted, Failure> {
        let body = if self.gzip {
            // Compressing megabytes takes milliseconds: keep it off the async workers.
            tokio::task::spawn_blocking(move || gzip(&body))
                .await
                .map_err(|e| Failure {
                    reason: "encode",
                    retryable: false,
                    retry_after: None,
                    message: format!("gzip task failed: {e}"),
                })?
        } else {
            body
        };
        let resp = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(request_failure)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = read_capped(resp, MAX_RESPONSE_BYTES).await;
        if status.is_success() {
            let partial = ExportTraceServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success);
            let partial = partial.unwrap_or_default();
            return Ok(Accepted {
                rejected_spans: u64::try_from(partial.rejected_spans).unwrap_or(0),
                message: partial.error_message,
            });
        }
        let (reason, retryable) = match status.as_u16() {
            429 => ("http_429", true),
            502 => ("http_502", true),
            503 => ("http_503", true),
            504 => ("http_504", true),
            400..=499 => ("http_4xx", false),
            500..=599 => ("http_5xx", false),
            _ => ("http_other", false),
        };
        Err(Failure {
            reason,
            retryable,
            retry_after,
            message: format!("HTTP {status}: {}", error_text(&body)),
        })
    }
}

/// Most of a response body read: an export response is a few bytes, an error a short message.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Reads at most `max` bytes of a response body; a read error ends it early (the status is what counts).
async fn read_capped(mut resp: reqwest::Response, max: usize) -> Bytes {
    let mut out = Vec::new();
    while out.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(max - out.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    Bytes::from(out)
}

/// The URL to POST to: the endpoint with `/v1/traces` appended unless it already has a path.
pub(super) fn traces_url(endpoint: &str) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(endpoint).map_err(|e| e.to_string())?;
    if url.path().is_empty() || url.path() == "/" {
        url.set_path("/v1/traces");
    }
    Ok(url)
}

fn gzip(body: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    Bytes::from(enc.finish().unwrap_or_default())
}

/// Transport-level failures (no HTTP status) are retryable: the downstream may come back.
fn request_failure(e: reqwest::Error) -> Failure {
    let reason = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    Failure {
        reason,
        retryable: true,
        retry_after: None,
        message: error_chain(&e),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The message of an error response: a protobuf `google.rpc.Status` (as OTLP/HTTP specifies), or text.
fn error_text(body: &[u8]) -> String {
    if let Ok(status) = RpcStatus::decode(body)
        && !status.message.is_empty()
    {
        return status.message;
    }
    let text = String::from_utf8_lossy(body);
    text.chars().take(300).collect()
}
