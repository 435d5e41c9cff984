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
//! - [`redact`]: applies redactors' edits to kept traces (re-encoding only what changed), audits them, and
//!   fails closed (strict scrub or drop) when a redactor fails.
//! - [`policy`]: builds the pipeline's policy from the config (loads plugins).
//! - [`reload`]: hot reload (file watch, SIGHUP, `POST /reload`): rebuilds the policy off the hot path,
//!   keeps unchanged rules' plugins, swaps it atomically; shadow rules are counted in [`pipeline`].
//! - [`export`]: batches, sends downstream (OTLP/gRPC, OTLP/HTTP, file), retries with backoff.
//! - [`config`] / [`cli`]: YAML configuration, flags and environment overrides.
//! - [`topology`]: RED metrics and the service graph from every trace, before sampling.
//! - [`metrics`] / [`admin`]: Prometheus metrics, `/healthz`, `/metrics` and `POST /reload`.
//! - [`app`]: wires the stages and shuts them down in order.

pub mod admin;
pub mod app;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod decisions;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod receiver;
pub mod redact;
pub mod reload;
#[doc(hidden)]
pub mod testing;
pub mod topology;
