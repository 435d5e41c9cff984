//! The demo stack end to end, as `examples/demo/run-local.sh` runs it but with a capture server in
//! Jaeger's place: the Node.js api-service (Express, OpenTelemetry auto-instrumentation, OTLP/gRPC)
//! calls the Python user-service (Flask and requests instrumentations, OTLP/HTTP), both export to the
//! `tailgate` binary running the seed policy of `examples/tailgate.yaml` with the real plugins.
//!
//! The test is the client: it sends `traceparent` headers so that it knows each trace id and chooses its
//! randomness (the probabilistic rule keeps a trace iff the low 56 bits of its id are at least the
//! threshold): a normal request with all-ones randomness is kept by the 10 % rule, one with all-zeros
//! randomness is dropped, and an error and a slow request with all-zeros randomness are kept all the same,
//! by the error and slow rules. Each kept trace must arrive complete, from both services, with every
//! parent link intact, carrying the baggage the api-service set, and with none of the personal data the
//! services put into it.

use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::demo::{DemoOptions, DemoStack, seed_policy_yaml};
use tailgate_e2e::otlp::{FlatSpan, hex, string_attr};

/// The parent span id of every request: the test's own (unreported) client span.
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
/// The tenant the test sends; the api-service puts it into baggage.
const TENANT: &str = "tenant-e2e-7";
/// The logged-in customer's email the test sends (query `email=`, into attributes and baggage).
const LOGIN_EMAIL: &str = "margaret.planted@corp.example.org";

struct Request {
    label: &'static str,
    trace_id: String,
    query: &'static str,
    /// The rule that must keep it, or None when it must be dropped.
    kept_by: Option<&'static str>,
}

fn trace_id(high: u64, randomness_all_ones: bool) -> String {
    // 128 bits: the high 72 are the label, the low 56 the randomness.
    let low: u64 = if randomness_all_ones {
        0x00ff_ffff_ffff_ffff
    } else {
        0
    };
    format!("{high:016x}{low:016x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_services_through_tailgate_make_complete_kept_traces_without_pii() -> anyhow::Result<()>
{
    let capture = CaptureServer::start().await?;
    let mut stack = DemoStack::start(DemoOptions {
        // The traces continue the test's `traceparent`, so tailgate sees no root span: they are decided
        // after `idle_timeout` without a new span. 2 s leaves room on a busy machine for the second
        // service's spans to arrive before that.
        config_yaml: seed_policy_yaml("500ms", "2s")?,
        exporter_endpoint: capture.grpc_endpoint(),
        // The seed policy's slow rule keeps traces slower than 1 s.
        slow_ms: 1300,
    })
    .await?;

    let requests = [
        Request {
            label: "normal, high randomness",
            trace_id: trace_id(0xde70_0001, true),
            query: "",
            kept_by: Some("sample-10pct"),
        },
        Request {
            label: "normal, low randomness",
            trace_id: trace_id(0xde70_0002, false),
            query: "",
            kept_by: None,
        },
        Request {
            label: "user-service fails",
            trace_id: trace_id(0xde70_0003, false),
            query: "&fail=user",
            kept_by: Some("errors"),
        },
        Request {
            label: "api-service fails",
            trace_id: trace_id(0xde70_0004, false),
            query: "&fail=api",
            kept_by: Some("errors"),
        },
        Request {
            label: "user-service slow",
            trace_id: trace_id(0xde70_0005, false),
            query: "&slow=user",
            kept_by: Some("slow"),
        },
    ];

    let client = reqwest::Client::new();
    // Warm both services up (first requests load code) so that no normal request below takes the seed
    // policy's 1 s: an unsampled `traceparent` (flags 00), so neither service records a span of it.
    let warm = client
        .get(format!("{}/checkout?user=1", stack.api_url))
        .header(
            "traceparent",
            format!("00-{}-{CLIENT_SPAN}-00", trace_id(0xde70_0000, true)),
        )
        .send()
        .await?;
    assert_eq!(warm.status().as_u16(), 200, "warm-up request");

    // Every request is for customer 42; the successful answers tell the test its personal data.
    let mut planted: BTreeSet<String> = [LOGIN_EMAIL.to_string()].into();
    let mut statuses = Vec::new();
    for r in &requests {
        let url = format!(
            "{}/checkout?user=42&email={}{}",
            stack.api_url,
            LOGIN_EMAIL.replace('@', "%40"),
            r.query
        );
        let resp = client
            .get(&url)
            .header("traceparent", format!("00-{}-{CLIENT_SPAN}-01", r.trace_id))
            .header("x-tenant", TENANT)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = serde_json::from_str(&resp.text().await?)?;
        assert_eq!(
            body["trace_id"].as_str(),
            Some(r.trace_id.as_str()),
            "{}: the api-service continues the trace the client started: {body}",
            r.label
        );
        if let Some(user) = body.get("user") {
            for key in ["email", "card"] {
                let v = user[key]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("no user.{key} in {body}"))?;
                planted.insert(v.to_string());
            }
        }
        statuses.push((r.label, status));
    }
    assert_eq!(
        statuses,
        vec![
            ("normal, high randomness", 200),
            ("normal, low randomness", 200),
            ("user-service fails", 502),
            ("api-service fails", 500),
            ("user-service slow", 200),
        ]
    );
    // The card as the services write it (`4539 0000 1567 1656`), bare and form-encoded in a URL.
    let card = planted
        .iter()
        .find(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no card number in the answers"))?;
    planted.insert(card.replace(' ', ""));
    planted.insert(card.replace(' ', "+"));
    planted.insert(LOGIN_EMAIL.replace('@', "%40"));
    assert_eq!(planted.len(), 6, "{planted:?}");

    // Ordered shutdown: the services flush their SDKs, tailgate decides all five traces, then drains its
    // exporter on SIGTERM.
    stack.api_service.terminate().await?;
    stack.user_service.terminate().await?;
    stack.wait_for_decisions(requests.len() as f64).await?;
    stack.tailgate.terminate().await?;

    let spans = capture.spans();
    tailgate_e2e::otlp::assert_unique(&spans);
    let mut by_trace: BTreeMap<String, Vec<&FlatSpan>> = BTreeMap::new();
    for s in &spans {
        by_trace.entry(hex(&s.span.trace_id)).or_default().push(s);
    }
    let kept: BTreeSet<&str> = requests
        .iter()
        .filter(|r| r.kept_by.is_some())
        .map(|r| r.trace_id.as_str())
        .collect();
    assert_eq!(
        by_trace.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        kept,
        "exactly the error, slow and high-randomness traces arrive\n{}",
        stack.logs()
    );

    for r in &requests {
        let Some(rule) = r.kept_by else { continue };
        let trace = &by_trace[&r.trace_id];
        check_trace(r, rule, trace);
    }

    // No personal data anywhere in what arrived (every field, re-encoded), but proof that it was there
    // and got redacted.
    let text: String = capture
        .requests()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.request.encode_to_vec()).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    let leaked: Vec<&String> = planted
        .iter()
        .filter(|v| text.contains(v.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "personal data arrived downstream: {leaked:?}"
    );
    assert!(text.contains("tailgate.redacted.count"));
    Ok(())
}

/// One kept trace: complete across both services, parent links intact, the deciding rule, the
/// propagated baggage, and the error or the slowness that got it kept.
fn check_trace(r: &Request, rule: &str, trace: &[&FlatSpan]) {
    let label = r.label;
    let ids: BTreeSet<Vec<u8>> = trace.iter().map(|s| s.span.span_id.clone()).collect();
    let by_id: BTreeMap<&[u8], &FlatSpan> = trace
        .iter()
        .map(|s| (s.span.span_id.as_slice(), *s))
        .collect();
    let names: Vec<String> = trace
        .iter()
        .map(|s| format!("{}: {}", s.service(), s.span.name))
        .collect();

    // One entry point: the api-service's server span, child of the client's span from `traceparent`.
    let orphans: Vec<&&FlatSpan> = trace
        .iter()
        .filter(|s| !ids.contains(&s.span.parent_span_id))
        .collect();
    assert_eq!(
        orphans.len(),
        1,
        "{label}: every span but the entry point has its parent in the trace: {names:?}"
    );
    let entry = orphans[0];
    assert_eq!(entry.service(), "api-service", "{label}");
    assert_eq!(hex(&entry.span.parent_span_id), CLIENT_SPAN, "{label}");
    assert_eq!(
        entry.span.kind, 2,
        "{label}: the entry point is a SERVER span"
    );

    // Both services, and the hop between them: a user-service SERVER span under an api-service CLIENT
    // span (context propagated over HTTP by the instrumentations).
    let services: BTreeSet<String> = trace.iter().map(|s| s.service()).collect();
    assert_eq!(
        services,
        ["api-service", "user-service"].map(String::from).into(),
        "{label}: {names:?}"
    );
    let user_server = trace
        .iter()
        .find(|s| {
            s.service() == "user-service"
                && s.span.kind == 2
                && s.span.name.starts_with("GET /users/")
        })
        .unwrap_or_else(|| panic!("{label}: no user-service server span in {names:?}"));
    let caller = by_id[user_server.span.parent_span_id.as_slice()];
    assert_eq!(
        (caller.service().as_str(), caller.span.kind),
        ("api-service", 3),
        "{label}: the user-service span's parent is the api-service's HTTP client span"
    );

    // Every span says which rule kept it.
    for s in trace {
        assert_eq!(
            string_attr(&s.span.attributes, "tailgate.rule").as_deref(),
            Some(rule),
            "{label}: span `{}`",
            s.span.name
        );
    }

    // Baggage set by the api-service arrived in the user-service (which copies it into attributes); the
    // customer's email in it arrived redacted.
    assert_eq!(
        string_attr(&user_server.span.attributes, "baggage.tenant.id").as_deref(),
        Some(TENANT),
        "{label}: baggage propagated"
    );
    let bag_email = string_attr(&user_server.span.attributes, "baggage.user.email")
        .unwrap_or_else(|| panic!("{label}: no baggage.user.email"));
    assert_ne!(bag_email, LOGIN_EMAIL, "{label}");

    match rule {
        "errors" => assert!(
            trace
                .iter()
                .any(|s| s.span.status.as_ref().is_some_and(|st| st.code == 2)),
            "{label}: an error trace has an ERROR span"
        ),
        "slow" => {
            let start = trace.iter().map(|s| s.span.start_time_unix_nano).min();
            let end = trace.iter().map(|s| s.span.end_time_unix_nano).max();
            let ms = end
                .zip(start)
                .map(|(e, s)| (e - s) / 1_000_000)
                .unwrap_or(0);
            assert!(ms >= 1000, "{label}: the trace took {ms} ms by its spans");
        }
        _ => {
            // A successful request went all the way: user-service -> risk check (requests -> Flask).
            assert!(
                trace
                    .iter()
                    .any(|s| s.service() == "user-service" && s.span.name.starts_with("GET /risk/")),
                "{label}: the risk-check hop is in the trace: {names:?}"
            );
            assert!(
                trace
                    .iter()
                    .all(|s| s.span.status.as_ref().is_none_or(|st| st.code != 2)),
                "{label}: a normal trace has no error"
            );
        }
    }
}

/// The policy in the Kubernetes ConfigMap (`examples/kubernetes/tailgate.yaml`) is one that tailgate
/// accepts, plugins (built in) and all: `tailgate validate` on it, with the hash key its Secret provides.
#[test]
fn kubernetes_configmap_policy_validates() -> anyhow::Result<()> {
    let manifest = tailgate_e2e::repo_root().join("examples/kubernetes/tailgate.yaml");
    let text = std::fs::read_to_string(&manifest)?;
    let block = text
        .split_once("  tailgate.yaml: |\n")
        .and_then(|(_, rest)| rest.split("\n---\n").next())
        .ok_or_else(|| anyhow::anyhow!("no `tailgate.yaml: |` block in {}", manifest.display()))?;
    let policy: String = block
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l.trim()))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = std::env::temp_dir().join(format!("tailgate-e2e-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("tailgate.yaml");
    std::fs::write(&path, policy)?;
    let out = std::process::Command::new(tailgate_e2e::binary::tailgate_bin()?)
        .args(["validate", "--config"])
        .arg(&path)
        .env("TAILGATE_HASH_KEY", "k8s-test-key-0123456789abcdef")
        .output()?;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "tailgate validate refused the ConfigMap's policy:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
