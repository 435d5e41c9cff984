//! The plugin sandbox, probed from inside: `test-sandbox` (plugins/test-sandbox) tries to read files,
//! list directories, write a file, read the environment, open TCP and UDP sockets, resolve a name and
//! time itself, and reports each outcome. Everything must be denied, and both WASI clocks must read the
//! `now-unix-nano` the host granted for the call, frozen while the call runs.

use bytes::Bytes;
use prost::Message;
use std::time::Duration;
use tailgate::otlp::{SpanRecord, TraceId, scan_export_request};
use tailgate::plugin::{PluginRuntime, PluginSpec, RuntimeSettings};

fn trace() -> (TraceId, Vec<SpanRecord>) {
    let body = Bytes::from(tailgate::testing::sample_request().encode_to_vec());
    let scanned = scan_export_request(&body).expect("valid request");
    let id = scanned.spans[0].0;
    (id, scanned.spans.into_iter().map(|(_, s)| s).collect())
}

fn runtime() -> PluginRuntime {
    PluginRuntime::new(RuntimeSettings {
        default_deadline: Duration::from_secs(5),
        init_deadline: Duration::from_secs(20),
        ..Default::default()
    })
    .expect("runtime")
}

/// Runs one probe and returns the plugin's report.
fn probe(rt: &PluginRuntime, probe: &str, connect: &str) -> String {
    let config = serde_json::json!({ "probe": probe, "connect": connect }).to_string();
    let path = tailgate::testing::built_plugin("test-sandbox");
    let sampler = rt
        .load_sampler(&PluginSpec::new(format!("sandbox-{probe}"), path, config))
        .expect("test-sandbox loads");
    let (id, spans) = trace();
    let verdict = sampler
        .decide(id, &spans)
        .expect("the probe itself never fails");
    verdict.reason.unwrap_or_default()
}

#[test]
fn plugins_cannot_reach_files_environment_network_or_a_clock_of_their_own() {
    let rt = runtime();
    // A listener the plugin is told to connect to: nothing may arrive.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let target = listener.local_addr().expect("addr").to_string();
    let home = std::env::var("HOME").unwrap_or_default();

    for name in [
        "read_file",
        "read_dir",
        "read_cwd",
        "write_file",
        "tcp",
        "udp",
        "dns",
    ] {
        let report = probe(&rt, name, &target);
        assert!(
            report.starts_with("denied("),
            "{name}: the plugin got through: {report}"
        );
    }
    assert_eq!(
        listener.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "no connection reached the listener"
    );
    assert!(
        !std::path::Path::new("/tmp/tailgate-sandbox-probe").exists(),
        "the plugin wrote a file"
    );

    let report = probe(&rt, "env", &target);
    assert_eq!(
        report, "vars=0 args=0",
        "no environment (HOME={home} on the host)"
    );

    // Both clocks read the granted time and stand still for the whole call.
    let report = probe(&rt, "clock", &target);
    assert_eq!(report, "granted=true advanced=false monotonic_elapsed=0");
}
