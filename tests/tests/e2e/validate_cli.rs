//! The `tailgate` executable: `validate` accepts a good configuration (and the shipped example), rejects
//! a typo naming the key; the README's "see what tailgate forwards" mode prints kept traces as OTLP/JSON
//! lines and SIGTERM shuts it down cleanly.

use crate::support::sample_request_in;
use prost::Message;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use tailgate_e2e::binary::tailgate_bin;
use tailgate_e2e::otlp::{flatten, hex};
use tailgate_e2e::{WAIT, free_port, repo_root};

fn temp_config(name: &str, text: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("tailgate-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::File::create(&path)?.write_all(text.as_bytes())?;
    Ok(path)
}

fn validate(config: &std::path::Path) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(tailgate_bin()?)
        .arg("validate")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()?)
}

#[test]
fn validate_accepts_good_and_names_bad_keys() -> anyhow::Result<()> {
    let good = temp_config(
        "good.yaml",
        "buffer:\n  settle: 1s\npolicy:\n  default: keep\n",
    )?;
    let out = validate(&good)?;
    assert!(
        out.status.success(),
        "good config rejected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = temp_config("bad.yaml", "buffer:\n  setle: 1s\n")?;
    let out = validate(&bad)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a typo must fail validation; stderr: {stderr}"
    );
    assert!(
        stderr.contains("setle"),
        "the message names the unknown key: {stderr}"
    );
    assert!(
        stderr.contains("bad.yaml"),
        "the message names the file: {stderr}"
    );

    let example = repo_root().join("examples/tailgate.yaml");
    let out = validate(&example)?;
    assert!(
        out.status.success(),
        "examples/tailgate.yaml is invalid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `tailgate --exporter-protocol file --exporter-endpoint -` (the README's way to see what tailgate
/// forwards without Jaeger), driven as a user would: flags and env for the addresses, an OTLP/HTTP
/// request in, an OTLP/JSON line out, SIGTERM to stop.
#[test]
fn file_exporter_prints_kept_traces_and_sigterm_stops() -> anyhow::Result<()> {
    let (grpc, http, admin) = (free_port()?, free_port()?, free_port()?);
    let config = temp_config(
        "stdout.yaml",
        "buffer:\n  settle: 100ms\npolicy:\n  default: keep\n",
    )?;
    // Logs go to a file, never to a pipe nobody reads while the test runs.
    let log_path = config.with_extension("stderr.log");
    let mut child = Command::new(tailgate_bin()?)
        .arg("--config")
        .arg(&config)
        .args(["--exporter-protocol", "file", "--exporter-endpoint", "-"])
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
        .env("TAILGATE_OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{http}"))
        .args(["--admin-endpoint", &format!("127.0.0.1:{admin}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log_path)?))
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let result = (|| -> anyhow::Result<()> {
        let request = sample_request_in(0xf11e_0000_0000_0000_0000_0000_0000_0001);
        let n = flatten(&request).len();
        let body = request.encode_to_vec();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let url = format!("http://127.0.0.1:{http}/v1/traces");
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let sent = reqwest::Client::new()
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    Ok(r) => anyhow::bail!("POST -> {}", r.status()),
                    // Not listening yet.
                    Err(_) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => anyhow::bail!("tailgate never accepted a request: {e}"),
                }
            }
        })?;
        // Each line is one OTLP/JSON ExportTraceServiceRequest; collect spans until all have arrived.
        let mut trace_ids = Vec::new();
        while trace_ids.len() < n {
            let line = lines_rx
                .recv_timeout(WAIT)
                .map_err(|_| anyhow::anyhow!("no OTLP/JSON line on stdout"))??;
            let json: serde_json::Value = serde_json::from_str(&line)?;
            for rs in json["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        trace_ids.push(
                            span["traceId"]
                                .as_str()
                                .unwrap_or_default()
                                .to_ascii_lowercase(),
                        );
                    }
                }
            }
        }
        let want = hex(&0xf11e_0000_0000_0000_0000_0000_0000_0001u128.to_be_bytes());
        assert!(
            trace_ids.iter().all(|t| *t == want),
            "OTLP/JSON with hex trace ids {want}: {trace_ids:?}"
        );
        Ok(())
    })();

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(term.success());
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("tailgate did not exit within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
    result.map_err(|e| e.context(format!("tailgate stderr:\n{stderr}")))?;
    assert!(status.success(), "exit after SIGTERM: {status}\n{stderr}");
    Ok(())
}
