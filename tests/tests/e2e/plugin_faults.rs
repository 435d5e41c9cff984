//! Hostile plugins in a running tailgate: a sampler that never returns (bounded by its deadline, failing
//! open: every trace is still kept) and a redactor that is slow only sometimes (bounded by its deadline,
//! failing closed: only those traces are strictly scrubbed). Failures are counted per plugin, and the
//! sampler that keeps failing is reported as degraded on `/health` and `/healthz`, the other is not.

use crate::support::{grpc_send, sample_request_in};
use tailgate_e2e::WAIT;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::{flatten, hex, metric_sum, string_attr};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};

const TRACES: u128 = 12;
/// Traces whose root span is named `slow` (the redactor times out on them).
const SLOW: [u128; 2] = [3, 8];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_bounded_contained_and_reported() -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    let mut config = TestConfig::passthrough_to(capture.grpc_endpoint());
    config.settle = "20ms";
    config.policy = format!(
        r#"  default: drop
  on_sampler_failure: keep
  on_redactor_failure: strict_scrub
  rules:
    - name: hostile
      plugin: "{sampler}"
      config: {{mode: loop}}
      call_timeout: 10ms
  redactors:
    - name: sometimes
      plugin: "{redactor}"
      config: {{mode: slow_sometimes}}
      call_timeout: 20ms
"#,
        sampler = tailgate::testing::built_plugin("test-hostile").display(),
        redactor = tailgate::testing::built_plugin("test-bad-redactor").display(),
    );
    let app = config.start().await?;

    let mut spans = 0;
    for i in 0..TRACES {
        let mut request = sample_request_in(0xfa17_0000_0000_0000_0000_0000_0000_0000 + i);
        if SLOW.contains(&i) {
            request.resource_spans[0].scope_spans[0].spans[0].name = "slow".into();
        }
        spans += flatten(&request).len();
        grpc_send(&app.grpc_endpoint(), request, false).await?;
    }
    // Fail open: the default is drop, yet every trace is kept because the sampler failed.
    let arrived = capture.wait_for_spans(spans).await?;
    for s in &arrived {
        let i = u128::from_be_bytes(s.span.trace_id.clone().try_into().expect("16 bytes")) & 0xff;
        let rule = string_attr(&s.span.attributes, "tailgate.rule");
        assert_eq!(
            rule.as_deref(),
            Some("hostile:failure"),
            "{}",
            hex(&s.span.trace_id)
        );
        // Fail closed, only where the redactor failed.
        let scrubbed = string_attr(&s.span.attributes, "tailgate.redacted.rules");
        if SLOW.contains(&i) {
            assert_eq!(scrubbed.as_deref(), Some("strict_scrub"));
            for kv in &s.span.attributes {
                assert!(
                    kv.key.starts_with("tailgate.")
                        || tailgate::redact::DEFAULT_STRICT_ALLOW_LIST.contains(&kv.key.as_str()),
                    "scrubbed to the allow-list: {}",
                    kv.key
                );
            }
        } else {
            assert_eq!(scrubbed, None);
        }
    }

    let admin = app.admin_endpoint();
    let text = reqwest::get(format!("{admin}/metrics"))
        .await?
        .text()
        .await?;
    let count = |series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        count("tailgate_plugin_failures_total{plugin=\"hostile\",kind=\"timeout\"}"),
        TRACES as f64,
        "{text}"
    );
    assert_eq!(
        count("tailgate_plugin_failures_total{plugin=\"sometimes\",kind=\"timeout\"}"),
        SLOW.len() as f64,
        "{text}"
    );
    assert_eq!(count("tailgate_plugin_degraded{plugin=\"hostile\"}"), 1.0);
    assert_eq!(metric_sum(&text, "tailgate_spans_lost_total"), 0.0);

    let health = tokio::time::timeout(WAIT, reqwest::get(format!("{admin}/health")))
        .await??
        .text()
        .await?;
    let health: serde_json::Value = serde_json::from_str(&health)?;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        health["degraded_plugins"],
        serde_json::json!(["hostile"]),
        "{health}"
    );
    let plugins = health["plugins"].as_array().cloned().unwrap_or_default();
    let find = |name: &str| {
        plugins
            .iter()
            .find(|p| p["plugin"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let (hostile, sometimes) = (find("hostile"), find("sometimes"));
    assert_eq!(
        (
            &hostile["role"],
            &hostile["failures"],
            &hostile["last_failure"]
        ),
        (
            &"sampler".into(),
            &(TRACES as u64).into(),
            &"timeout".into()
        ),
        "{health}"
    );
    assert_eq!(
        (
            &sometimes["role"],
            &sometimes["calls"],
            &sometimes["failures"],
            &sometimes["degraded"]
        ),
        (
            &"redactor".into(),
            &(TRACES as u64).into(),
            &(SLOW.len() as u64).into(),
            &false.into()
        ),
        "{health}"
    );
    let healthz = reqwest::get(format!("{admin}/healthz")).await?;
    assert_eq!(healthz.status(), 200, "degraded is still serving");
    let body = healthz.text().await?;
    assert!(body.starts_with("degraded: plugin hostile"), "{body}");
    eprintln!("plugin faults: {health}");
    app.shutdown().await;
    Ok(())
}
