//! `test-sandbox`: a sampler for tailgate's host tests that tries to reach beyond its sandbox and reports
//! what it saw in its decision's reason. `{"probe": ..., "connect": "IP:PORT"}`: `read_file`
//! (/etc/passwd), `read_dir` (/), `read_cwd` (.), `write_file` (/tmp), `env` (variables and arguments),
//! `tcp` (a connection to `connect`), `udp` (binding a socket), `dns` (resolving localhost), `clock`
//! (the wall and monotonic clocks read around a busy loop, compared with the granted `now-unix-nano`).
//! Outcomes are `ok` or `denied(<error>)`.

use std::net::ToSocketAddrs;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{Decision, Interest, ProjectedAttribute, Sampler, Trace, TraceSummary};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {
    probe: String,
    /// Where to try a TCP connection (`tcp` probe).
    #[serde(default)]
    connect: String,
}

/// The probing sampler.
pub struct Sandbox {
    config: Config,
}

/// `ok` or the error's kind, so the host test can tell a denial from a success.
fn outcome<T, E: std::fmt::Display>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("denied({e})"),
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Sampler for Sandbox {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        let config: Config = tailgate_plugin_sdk::parse_config(config)?;
        Ok((Sandbox { config }, Interest::summary_only()))
    }

    fn decide(
        &mut self,
        summary: &TraceSummary,
        _: &[ProjectedAttribute],
        _: Option<&Trace>,
    ) -> Decision {
        let result = match self.config.probe.as_str() {
            "read_file" => outcome(std::fs::read("/etc/passwd")),
            "read_dir" => outcome(std::fs::read_dir("/")),
            "read_cwd" => outcome(std::fs::read_dir(".")),
            "write_file" => outcome(std::fs::write("/tmp/tailgate-sandbox-probe", b"x")),
            "env" => format!(
                "vars={} args={}",
                std::env::vars().count(),
                std::env::args().count()
            ),
            "tcp" => outcome(std::net::TcpStream::connect(self.config.connect.as_str())),
            "udp" => outcome(std::net::UdpSocket::bind("127.0.0.1:0")),
            "dns" => outcome("localhost:80".to_socket_addrs()),
            "clock" => {
                let wall_before = unix_nanos();
                let mono_before = Instant::now();
                let mut x = 0u64;
                for i in 0..2_000_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
                let mono_elapsed = mono_before.elapsed().as_nanos();
                let wall_after = unix_nanos();
                format!(
                    "granted={} advanced={} monotonic_elapsed={mono_elapsed}",
                    wall_before == u128::from(summary.now_unix_nano),
                    wall_after != wall_before
                )
            }
            other => format!("unknown probe {other}"),
        };
        let reason: String = result.chars().take(120).collect();
        Decision::keep(&reason)
    }
}

tailgate_plugin_sdk::export_sampler!(Sandbox);
