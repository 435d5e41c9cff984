//! The gRPC status types OTLP carries on the wire: `google.rpc.Status` (the error body of OTLP/HTTP
//! and gRPC's `grpc-status-details-bin` trailer), with `google.protobuf.Any`, `google.rpc.RetryInfo` and
//! `google.protobuf.Duration`. One copy for the receivers (which send them), the exporter (which reads
//! them from Jaeger or a Collector) and the authenticator (which refuses with them).

use prost::Message;
use std::time::Duration;

/// `google.rpc.Status`: the error body of OTLP/HTTP and the `grpc-status-details-bin` of gRPC errors.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// A `google.rpc.Code` (gRPC status code).
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`: how long to wait before retrying; OTLP/gRPC clients honour it on
/// `RESOURCE_EXHAUSTED`, which is only retryable when it is present.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// Type URL of [`RetryInfo`] inside an `Any`.
pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

impl RetryInfo {
    /// `RetryInfo` for `delay`, wrapped in an `Any`.
    pub fn any(delay: Duration) -> ProtoAny {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
                // Sub-second nanos are always below 10^9, which fits an i32.
                nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
            }),
        };
        ProtoAny {
            type_url: RETRY_INFO_TYPE_URL.into(),
            value: info.encode_to_vec(),
        }
    }
}

/// The message name at the end of a `RetryInfo` detail's type URL (any host part is accepted).
pub const RETRY_INFO_TYPE: &str = "google.rpc.RetryInfo";

impl RetryInfo {
    /// The delay of the first `RetryInfo` in encoded `google.rpc.Status` details, if there is one.
    pub fn delay_in(status_details: &[u8]) -> Option<Duration> {
        let status = RpcStatus::decode(status_details).ok()?;
        status
            .details
            .iter()
            .filter(|a| a.type_url.rsplit('/').next() == Some(RETRY_INFO_TYPE))
            .find_map(|a| {
                let d = RetryInfo::decode(a.value.as_slice()).ok()?.retry_delay?;
                let secs = u64::try_from(d.seconds).ok()?;
                let nanos = u32::try_from(d.nanos).ok()?.min(999_999_999);
                Some(Duration::new(secs, nanos))
            })
    }
}
