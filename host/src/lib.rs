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
//!                     Jaeger / any OTLP receiver / Kafka topic ◄── export (bounded) ◄────┘
//! ```
//!
//! - [`otlp`]: the wire format: validating zero-copy scan of requests into [`otlp::SpanRecord`]s, encoder.
//! - [`receiver`]: OTLP/gRPC and OTLP/HTTP (protobuf, JSON, gzip) servers; validation and backpressure.
//! - [`ingest`]: the bounded way into the buffer for any source, with completion acks (for Kafka offsets).
//! - [`buffer`]: groups spans by trace until a trigger fires (settle, idle, max wait, size, memory).
//! - [`decisions`]: remembered keep/drop decisions so late spans follow their trace.
//! - [`pipeline`]: decides each trace with the ordered rules (by default on the buffer's thread, at the
//!   trace's deadline: [`pipeline::InlineDecider`]), annotates kept spans, runs redactors.
//! - [`plugin`]: the WebAssembly host: loads, bounds and calls sampler and redactor components.
//! - [`redact`]: applies redactors' edits to kept traces (re-encoding only what changed), audits them, and
//!   fails closed (strict scrub or drop) when a redactor fails.
//! - [`policy`]: builds the pipeline's policy from the config (loads plugins).
//! - [`reload`]: hot reload (file watch, SIGHUP, `POST /reload`): rebuilds the policy off the hot path,
//!   keeps unchanged rules' plugins, swaps it atomically; shadow rules are counted in [`pipeline`].
//! - [`export`]: batches, sends downstream (OTLP/gRPC, OTLP/HTTP, file, or one Kafka message per batch for
//!   Jaeger's kafka receiver), retries with backoff.
//! - [`kafka`]: scale-out (feature `kafka`): the ingest tier's sink and the consumer-group source, with
//!   offsets committed only up to the oldest undecided message.
//! - [`config`] / [`cli`]: YAML configuration, flags and environment overrides.
//! - [`topology`]: RED metrics and the service graph from every trace, before sampling.
//! - [`metrics`] / [`admin`]: Prometheus metrics, `/healthz`, `/health`, `/metrics` and `POST /reload`.
//! - [`health`]: per-plugin recent failure ratios; a plugin that keeps failing is reported degraded.
//! - [`record`] / [`replay`]: record received traffic (`--record`) and run it offline through a policy
//!   (`tailgate replay`).
//! - [`status`] / [`explain`]: the live status page (`/`, `/api/status`) and why a recent trace was kept or
//!   dropped (`/debug/traces/{id}`).
//! - [`app`]: wires the stages and shuts them down in order.
//! - [`tls`] / [`auth`]: TLS for the receivers and the exporter (rustls, ring); bearer-token or header
//!   authentication of receivers and of the admin API's `POST` endpoints (constant-time comparison).

pub mod admin;
pub mod app;
pub mod auth;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod decisions;
pub mod explain;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod inbox;
pub mod ingest;
pub mod kafka;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod predicate;
pub mod receiver;
pub mod record;
pub mod redact;
pub mod reload;
pub mod replay;
pub mod security;
pub mod status;
#[doc(hidden)]
pub mod testing;
pub mod tls;
pub mod topology;
