//! OTLP receivers: gRPC `TraceService/Export` and HTTP `POST /v1/traces` (protobuf and JSON, gzip). They
//! validate, count, and hand spans to the buffer through the ingest queue; a full queue or memory pressure
//! becomes backpressure for the client.

pub mod grpc;
pub mod http;

use crate::ingest::IngestHandle;
use crate::metrics::Metrics;
use std::sync::Arc;

/// What every receiver needs.
#[derive(Clone)]
pub struct ReceiverContext {
    pub ingest: IngestHandle,
    pub metrics: Arc<Metrics>,
    /// Largest request accepted, decompressed.
    pub max_body_bytes: usize,
}
