//! OTLP/gRPC export: the pre-encoded request bytes go out as the message as-is (no decode and re-encode),
//! over a lazily connected tonic channel.

use super::{Accepted, ExportError, Failure};
use crate::config::{Compression, OtlpExporter};
use crate::otlp::rpc::RetryInfo;
use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use std::time::Duration;
use tonic::Code;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A gRPC client for `TraceService/Export`.
pub(crate) struct GrpcTransport {
    channel: Channel,
    metadata: MetadataMap,
    gzip: bool,
    timeout: Duration,
}

impl GrpcTransport {
    pub fn new(cfg: &OtlpExporter) -> Result<Self, ExportError> {
        let bad = |reason: String| ExportError::Endpoint {
            endpoint: cfg.endpoint.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(cfg.endpoint.clone())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(cfg.timeout)
            .tcp_nodelay(true);
        if cfg.endpoint.starts_with("https://") {
            let tls = crate::tls::grpc_client(&cfg.tls.clone().unwrap_or_default())?;
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(e.to_string()))?;
        }
        let mut metadata = MetadataMap::new();
        for (name, value) in &cfg.headers {
            let header = |reason: String| ExportError::Header {
                name: name.clone(),
                reason,
            };
            let key = AsciiMetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|e| header(e.to_string()))?;
            let value =
                AsciiMetadataValue::try_from(value.as_str()).map_err(|e| header(e.to_string()))?;
            metadata.insert(key, value);
        }
        Ok(GrpcTransport {
            channel: endpoint.connect_lazy(),
            metadata,
            gzip: cfg.compression == Compression::Gzip,
            timeout: cfg.timeout,
        })
    }

    pub async fn send(&self, body: Bytes) -> Result<Accepted, Failure> {
        match tokio::time::timeout(self.timeout, self.call(body)).await {
            Ok(Ok(resp)) => {
                let partial = resp.partial_success.unwrap_or_default();
                Ok(Accepted {
                    rejected_spans: u64::try_from(partial.rejected_spans).unwrap_or(0),
                    message: partial.error_message,
                })
            }
            Ok(Err(status)) => Err(classify(&status)),
            Err(_) => Err(Failure {
                reason: "timeout",
                retryable: true,
                retry_after: None,
                message: format!("no response within {:?}", self.timeout),
            }),
        }
    }

    async fn call(&self, body: Bytes) -> Result<ExportTraceServiceResponse, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        if self.gzip {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
        let mut req = tonic::Request::new(body);
        *req.metadata_mut() = self.metadata.clone();
        req.set_timeout(self.timeout);
        let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
        Ok(grpc.unary(req, path, RawRequestCodec).await?.into_inner())
    }
}

/// Maps a gRPC status to a failure, retryable as the OTLP specification lists: CANCELLED,
/// DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS, and RESOURCE_EXHAUSTED only when the
/// server sent `RetryInfo` (otherwise it means the request can never fit, e.g. it is too large).
pub(super) fn classify(status: &tonic::Status) -> Failure {
    let retry_after = RetryInfo::delay_in(status.details());
    let (reason, retryable) = match status.code() {
        Code::Cancelled => ("cancelled", true),
        Code::DeadlineExceeded => ("deadline_exceeded", true),
        Code::Aborted => ("aborted", true),
        Code::OutOfRange => ("out_of_range", true),
        Code::Unavailable => ("unavailable", true),
        Code::DataLoss => ("data_loss", true),
        Code::ResourceExhausted => ("resource_exhausted", retry_after.is_some()),
        Code::InvalidArgument => ("invalid_argument", false),
        Code::Unauthenticated => ("unauthenticated", false),
        Code::PermissionDenied => ("permission_denied", false),
        Code::Unimplemented => ("unimplemented", false),
        Code::NotFound => ("not_found", false),
        Code::Internal => ("internal", false),
        Code::Unknown if failed_below_grpc(status) => ("transport", true),
        Code::Unknown => ("unknown", false),
        _ => ("grpc_other", false),
    };
    Failure {
        reason,
        retryable,
        retry_after,
        message: format!("{:?}: {}", status.code(), status.message()),
    }
}

/// True when the call failed below gRPC, with no status from the server: the connection was reset or
/// closed mid-call (the downstream restarting, for one). tonic reports that as UNKNOWN ("transport
/// error"), which would otherwise give the batch up at once; it is as retryable as UNAVAILABLE, and the
/// OTLP/HTTP exporter retries transport failures the same way. A batch the server had stored before the
/// connection dropped may then arrive twice (at least once, as OTLP retries are).
fn failed_below_grpc(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Sends an already encoded `ExportTraceServiceRequest` verbatim; decodes the response with prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        use prost::Message;
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable export response: {e}")))
    }
}
