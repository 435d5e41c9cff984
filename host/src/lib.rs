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
//! The modules, grouped in the order a span meets them:
//!
//! **Wire**
//! - [`otlp`]: the wire format: validating zero-copy scan of requests into [`otlp::SpanRecord`]s, the
//!   read-only views, the encoder, the gRPC status types ([`otlp::rpc`]).
//! - [`predicate`]: the attribute predicates 0.2 samplers declare, evaluated once per span by the ingest
//!   scan ([`otlp::predicate`]), and the per-rule bindings the decision reads.
//!
//! **Intake**
//! - [`tls`] / [`auth`] / [`security`]: TLS for the receivers and the exporter (rustls, ring); bearer-token
//!   or header authentication of receivers and of the admin API's `POST` endpoints (constant-time
//!   comparison); `security` loads both once at startup and hands them to each server.
//! - [`receiver`]: OTLP/gRPC and OTLP/HTTP (protobuf, JSON, gzip) servers; validation and backpressure.
//! - [`kafka`]: scale-out (feature `kafka`): the ingest tier's sink and the consumer-group source, with
//!   offsets committed only up to the oldest undecided message.
//! - [`ingest`]: the bounded way into the buffer for any source, with completion acks (for Kafka offsets).
//!
//! **Decide**
//! - [`buffer`]: groups spans by trace until a trigger fires (settle, idle, max wait, size, memory).
//! - [`inbox`]: what the buffer hands the pipeline (due traces, late spans) and the trait it sends through.
//! - [`decisions`]: remembered keep/drop decisions so late spans follow their trace.
//! - [`pipeline`]: decides each trace with the ordered rules (by default on the buffer's thread, at the
//!   trace's deadline), counts shadow rules, and hands kept traces to its redaction stage.
//! - [`plugin`]: the WebAssembly host: loads, bounds and calls sampler and redactor components.
//! - [`policy`]: builds the pipeline's policy from the config (loads plugins).
//! - [`reload`]: hot reload (file watch, SIGHUP, `POST /reload`): rebuilds the policy off the hot path,
//!   keeps unchanged rules' plugins, swaps it atomically.
//!
//! **Redact**
//! - [`redact`]: applies redactors' edits to kept traces (re-encoding only what changed), audits them, and
//!   fails closed (strict scrub or drop) when a redactor fails.
//!
//! **Export**
//! - [`export`]: batches, sends downstream (OTLP/gRPC, OTLP/HTTP, file, or one Kafka message per batch for
//!   Jaeger's kafka receiver), retries with backoff.
//!
//! **Operate**
//! - [`config`] / [`cli`]: YAML configuration, flags and environment overrides.
//! - [`app`]: wires the stages and shuts them down in order.
//! - [`metrics`] / [`admin`]: Prometheus metrics, `/healthz`, `/health`, `/metrics` and `POST /reload`.
//! - [`health`]: per-plugin recent failure ratios; a plugin that keeps failing is reported degraded.
//! - [`topology`]: RED metrics and the service graph from every trace, before sampling (labels pass the
//!   redaction policy).
//! - [`status`] / [`explain`]: the live status page (`/`, `/api/status`) and why a recent trace was kept or
//!   dropped (`/debug/traces/{id}`).
//! - [`record`] / [`replay`]: record received traffic (`--record`) and run it offline through a policy
//!   (`tailgate replay`).
//!
//! Imports follow the flow: no two modules import each other (`host/tests/module_graph.rs` checks it).

// Wire
pub mod otlp;
pub mod predicate;

// Intake
pub mod auth;
pub mod ingest;
pub mod kafka;
pub mod receiver;
pub mod security;
pub mod tls;

// Decide
pub mod buffer;
pub mod decisions;
pub mod inbox;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod reload;
pub mod rescue;

// Redact
pub mod redact;

// Export
pub mod export;

// Operate
pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod explain;
pub mod health;
pub mod metrics;
pub mod record;
pub mod replay;
pub mod status;
pub mod topology;

// For the fuzz targets and the tests.
#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod testing;
