//! tailgate: a tail-sampling, PII-redacting OpenTelemetry trace proxy whose policies are WebAssembly
//! components.
//!
//! # Layout
//!
//! ```text
//!  OTLP/gRPC, OTLP/HTTP ──► receiver ──► ingest (bounded, bytes-bounded) ──► buffer ──► pipeline workers
//!   (or another source:                                                    (per trace)   samplers, then
//!    SpanBatch + Ack)                                                                    redactors
//!                                                                                            │
//!                                       Jaeger / any OTLP receiver ◄── export (bounded) ◄────┘
//! ```
//!
//! - [`otlp`]: the wire format: validating zero-copy scan of requests into [`otlp::SpanRecord`]s, encoder.
//! - [`receiver`]: OTLP/gRPC and OTLP/HTTP (protobuf, JSON, gzip) servers; validation and backpressure.
//! - [`ingest`]: the bounded way into the buffer for any source, with completion acks (for Kafka offsets).
//! - [`buffer`]: groups spans by trace until a trigger fires (settle, idle, max wait, size, memory).
//! - [`decisions`]: remembered keep/drop decisions so late spans follow their trace.
//! - [`pipeline`]: decides each trace with the ordered rules, annotates kept spans, runs redactors.
//! - [`plugin`]: the WebAssembly host: loads, bounds and calls sampler and redactor components.
//! - [`policy`]: builds the pipeline's policy from the config (loads plugins).
//! - [`export`]: batches, sends downstream (OTLP/gRPC, OTLP/HTTP, file), retries with backoff.
//! - [`config`] / [`cli`]: YAML configuration, flags and environment overrides.
//! - [`metrics`] / [`admin`]: Prometheus metrics, `/healthz` and `/metrics`.
//! - [`app`]: wires the stages and shuts them down in order.

pub mod admin;
pub mod app;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod decisions;
pub mod export;
pub mod ingest;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod receiver;
#[doc(hidden)]
pub mod testing;
