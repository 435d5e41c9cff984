//! `examples/demo/run-local.sh` as a user runs it, with its default downstream: a real Jaeger v2
//! (`$TAILGATE_JAEGER`, the binary of `scripts/peers.sh jaeger`). The script runs in `--keep-running`
//! mode on free loopback ports with a short load; the test reads the kept traces it printed, then checks
//! that each printed link opens that trace in the running Jaeger (`/api/traces/{id}`; the UI route
//! `/trace/{id}` answers with what a Go-built Jaeger serves there: its placeholder page), that the status
//! page's links (`admin.jaeger_ui_url`) point at the same Jaeger and the same traces, and that the
//! explain endpoint agrees with the rule Jaeger shows. Then it stops the script's process group.

use std::process::Stdio;
use std::time::Duration;
use tailgate_e2e::binary::tailgate_bin;
use tailgate_e2e::jaeger::{JaegerTrace, http_json, jaeger_binary};
use tailgate_e2e::{WAIT, free_port, repo_root};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_local_demo_shows_the_kept_traces_in_jaeger_with_working_links() -> anyhow::Result<()> {
    tailgate_e2e::demo::user_service_python()?;
    tailgate_e2e::demo::api_service_dir()?;
    let ports: Vec<u16> = (0..9).map(|_| free_port()).collect::<Result<_, _>>()?;
    let names = [
        "DEMO_GRPC_PORT",
        "DEMO_HTTP_PORT",
        "DEMO_ADMIN_PORT",
        "DEMO_API_PORT",
        "DEMO_USER_PORT",
        "DEMO_JAEGER_UI_PORT",
        "DEMO_JAEGER_GRPC_PORT",
        "DEMO_JAEGER_HTTP_PORT",
        "DEMO_JAEGER_QUERY_GRPC_PORT",
    ];
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(repo_root().join("examples/demo/run-local.sh"))
        .arg("--keep-running")
        .current_dir(repo_root())
        .env("TAILGATE_BIN", tailgate_bin()?)
        .env("TAILGATE_JAEGER", jaeger_binary()?)
        .env("DEMO_REQUESTS", "60")
        .env("DEMO_RATE", "30")
        .env_remove("DEMO_EXPORTER_ENDPOINT")
        .env_remove("DEMO_JAEGER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the test can stop the script and everything it started at once.
        .process_group(0)
        .kill_on_drop(true);
    for (name, port) in names.iter().zip(&ports) {
        cmd.env(name, port.to_string());
    }
    let (admin, jaeger_ui) = (ports[2], ports[5]);
    let mut child = cmd.spawn()?;
    let pgid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let up = tokio::time::timeout(WAIT * 4, async {
        while let Some(line) = lines.next_line().await? {
            let done = line.starts_with("The stack is up");
            printed.push(line);
            if done {
                return Ok(());
            }
        }
        anyhow::bail!("run-local.sh ended before the stack was up")
    })
    .await;
    let result = match up {
        Ok(Ok(())) => check(&printed, admin, jaeger_ui).await,
        Ok(Err(e)) => Err(e),
        Err(_) => Err(anyhow::anyhow!(
            "run-local.sh was not up within {:?}",
            WAIT * 4
        )),
    };
    // Stop the script and everything it started (its process group).
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", "--", &format!("-{pgid}")])
        .status()
        .await;
    let _ = tokio::time::timeout(WAIT, child.wait()).await;
    let _ = child.start_kill();
    let mut err = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stderr.read_to_string(&mut err)).await;
    result.map_err(|e| {
        e.context(format!(
            "run-local.sh printed:\n{}\nstderr:\n{err}",
            printed.join("\n")
        ))
    })
}

async fn check(printed: &[String], admin: u16, jaeger_ui: u16) -> anyhow::Result<()> {
    let jaeger = format!("http://127.0.0.1:{jaeger_ui}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    // The table: `<trace id>  <kept by>  ...  <jaeger>/trace/<id>  <jaeger>/api/traces/<id>`.
    let mut rows = Vec::new();
    for line in printed {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() >= 3
            && words[0].len() == 32
            && words[0].chars().all(|c| c.is_ascii_hexdigit())
            && let [.., ui, api] = words[..]
        {
            assert_eq!(ui, format!("{jaeger}/trace/{}", words[0]), "{line}");
            assert_eq!(api, format!("{jaeger}/api/traces/{}", words[0]), "{line}");
            rows.push((
                words[0].to_string(),
                words[1].to_string(),
                api.to_string(),
                ui.to_string(),
            ));
        }
    }
    assert!(
        !rows.is_empty(),
        "run-local.sh printed no kept trace with its Jaeger links"
    );
    assert!(
        rows.iter()
            .any(|(_, rule, ..)| rule == "errors" || rule == "slow"),
        "the demo load always has error or slow traces: {rows:?}"
    );
    for (id, rule, api, ui) in &rows {
        let v = http_json(api).await?;
        let t = JaegerTrace::from_v1(&v["data"][0])?;
        assert_eq!(t.trace_id, *id, "{api} opens that trace");
        assert!(
            t.spans
                .iter()
                .all(|s| s.tags.get("tailgate.rule") == Some(rule)),
            "{api}: every span says tailgate.rule={rule}"
        );
        let why = http_json(&format!("http://127.0.0.1:{admin}/debug/traces/{id}")).await?;
        assert_eq!(
            (why["decision"].as_str(), why["rule"].as_str()),
            (Some("keep"), Some(rule.as_str())),
            "{why}"
        );
        let page = http.get(ui).send().await?;
        assert!(page.status().is_success(), "{ui}: {}", page.status());
        let body = page.text().await?;
        assert!(
            body.contains("This is not the Jaeger UI you are looking for"),
            "a Go-built Jaeger answers its UI route with the placeholder page; if this fails the binary has \
             UI assets now and examples/demo/README.md should say so:\n{body}"
        );
    }

    // The status page links kept traces to this Jaeger's UI route, and Jaeger has each of them.
    let status = http_json(&format!("http://127.0.0.1:{admin}/api/status")).await?;
    assert_eq!(
        status["jaeger_ui_url"],
        jaeger.as_str(),
        "run-local.sh sets admin.jaeger_ui_url"
    );
    let mut linked = 0;
    for d in status["recent"].as_array().into_iter().flatten() {
        if let Some(url) = d["jaeger_url"].as_str() {
            let id = url
                .strip_prefix(&format!("{jaeger}/trace/"))
                .ok_or_else(|| {
                    anyhow::anyhow!("status page link {url} is not Jaeger's /trace/<id>")
                })?;
            let r = http.get(format!("{jaeger}/api/traces/{id}")).send().await?;
            assert!(r.status().is_success(), "{url}: Jaeger has no trace {id}");
            linked += 1;
        }
    }
    assert!(
        linked > 0,
        "the status page links some kept traces: {status}"
    );
    eprintln!(
        "run-local.sh: {} kept traces printed with Jaeger links, all open in Jaeger's API; {linked} status-page \
         links checked; Jaeger's UI route answers with its placeholder page",
        rows.len()
    );
    Ok(())
}
