//! End-to-end tests: real clients -> tailgate (in-process, port 0) -> a capture server standing in for
//! Jaeger. One binary, one module per scenario; see `tailgate_e2e` for the harness.
//!
//! Tests that use Python (the OpenTelemetry SDK) or rotel need `.venv`, which `scripts/test.sh` creates;
//! without it they fail with a message saying so, they never skip.

mod admin;
mod cli_more;
mod collector_oracle;
mod demo_stack;
mod exporter_retry;
mod graceful_shutdown;
mod jaeger_demo;
mod jaeger_faults;
mod jaeger_seed;
mod json_and_gzip;
mod memory_limit;
mod overload;
mod persistent_queue;
mod plugin_faults;
mod replay;
mod sdk_roundtrip;
mod second_chance;
mod shutdown_outage;
mod status_page;
mod support;
mod through_rotel;
mod two_services;
mod validate_cli;
mod walkthrough;
