//! The command line an operator and a plugin author reach for: `validate FILE` beside `--config FILE`,
//! `config print` (flags and environment applied, secrets redacted), `config schema` (generated from
//! the config types, committed as `docs/tailgate.schema.json`, referenced by the example file),
//! `--version` with the git revision, `--log-level`, `plugin wit`, and `plugin test` over the shipped
//! recorded traces with its exit status, and `migrate --from-otelcol` on the guide's Collector example.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use tailgate_e2e::binary::tailgate_bin;
use tailgate_e2e::repo_root;

fn tailgate(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(tailgate_bin()?)
        .args(args)
        .env_remove("TAILGATE_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn temp_file(name: &str, body: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("tailgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::File::create(&path)?.write_all(body.as_bytes())?;
    Ok(path)
}

#[test]
fn validate_takes_the_file_as_an_argument_or_a_flag() -> anyhow::Result<()> {
    let example = repo_root().join("examples/tailgate.yaml");
    let example = example.to_str().expect("utf-8 path");
    for args in [
        vec!["validate", example],
        vec!["validate", "--config", example],
        vec!["--config", example, "validate"],
    ] {
        let out = tailgate(&args)?;
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("tailgate.yaml: ok"), "{args:?}");
    }
    let out = tailgate(&["validate", "/nonexistent/tailgate.yaml"])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/nonexistent/tailgate.yaml"),
        "the error names the file: {}",
        text(&out.stderr)
    );
    Ok(())
}

#[test]
fn config_print_applies_flags_and_environment_and_redacts_secrets() -> anyhow::Result<()> {
    let cfg = temp_file(
        "print.yaml",
        "admin:\n  token: admin-token-value-123\nexporters:\n  otlp:\n    headers: {authorization: Bearer header-secret-456}\n\
         policy:\n  redaction:\n    hash_key: hash-key-secret-7890123\nbuffer:\n  max_buffer_bytes: 64MiB\n",
    )?;
    let out = Command::new(tailgate_bin()?)
        .args(["config", "print", "--config"])
        .arg(&cfg)
        .args(["--exporter-endpoint", "http://jaeger.example:4317"])
        .args(["--log-level", "debug"])
        .env("TAILGATE_ADMIN_ENDPOINT", "127.0.0.1:9999")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()?;
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for secret in [
        "admin-token-value-123",
        "header-secret-456",
        "hash-key-secret-7890123",
    ] {
        assert!(!printed.contains(secret), "`{secret}` printed:\n{printed}");
    }
    assert!(printed.contains("<redacted>"), "{printed}");
    assert!(
        printed.contains("http://jaeger.example:4317"),
        "flag applied:\n{printed}"
    );
    assert!(
        printed.contains("127.0.0.1:9999"),
        "environment applied:\n{printed}"
    );
    assert!(
        printed.contains("log_level: debug"),
        "--log-level applied:\n{printed}"
    );
    assert!(
        printed.contains("64MiB"),
        "sizes print as written:\n{printed}"
    );
    // What it prints is a configuration tailgate reads back (secrets aside).
    let back = temp_file(
        "printed.yaml",
        &printed.replace("<redacted>", "x-redacted-placeholder"),
    )?;
    let out = tailgate(&["validate", back.to_str().expect("utf-8")])?;
    assert!(
        out.status.success(),
        "the printed configuration does not load: {}\n{printed}",
        text(&out.stderr)
    );
    Ok(())
}

#[test]
fn config_schema_is_generated_committed_and_referenced() -> anyhow::Result<()> {
    let out = tailgate(&["config", "schema"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    for key in [
        "receivers",
        "exporters",
        "buffer",
        "policy",
        "plugins",
        "admin",
        "service",
    ] {
        assert!(
            schema["properties"].get(key).is_some(),
            "the schema has no `{key}`"
        );
    }
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    let committed = std::fs::read_to_string(repo_root().join("docs/tailgate.schema.json"))?;
    let committed: serde_json::Value = serde_json::from_str(&committed)?;
    assert!(
        committed == schema,
        "docs/tailgate.schema.json is out of date: regenerate it with \
         `tailgate config schema > docs/tailgate.schema.json`"
    );
    let example = std::fs::read_to_string(repo_root().join("examples/tailgate.yaml"))?;
    assert!(
        example
            .lines()
            .next()
            .is_some_and(|l| l.contains("$schema=../docs/tailgate.schema.json")),
        "examples/tailgate.yaml's first line points editors at the schema"
    );
    Ok(())
}

#[test]
fn version_names_the_git_revision() -> anyhow::Result<()> {
    let out = tailgate(&["--version"])?;
    let v = text(&out.stdout);
    assert!(out.status.success());
    let rev = v
        .split("(git ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_default();
    assert!(
        rev.len() == 12 && rev.bytes().all(|b| b.is_ascii_hexdigit()),
        "`{v}` carries no 12-digit revision"
    );
    Ok(())
}

#[test]
fn a_bad_log_level_is_named() -> anyhow::Result<()> {
    let out = tailgate(&["--log-level", "info,=[", "validate"])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("info,=["),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

#[test]
fn plugin_wit_writes_the_contract() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("tailgate-cli-wit-{}", std::process::id()));
    let out = tailgate(&["plugin", "wit", dir.to_str().expect("utf-8")])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in [
        "v0.1.0/sampler.wit",
        "v0.1.0/redactor.wit",
        "v0.2.0/sampler.wit",
    ] {
        let written = std::fs::read_to_string(dir.join(file))?;
        let source = std::fs::read_to_string(repo_root().join("wit").join(file))?;
        assert_eq!(written, source, "{file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn plugin_test_runs_samplers_and_redactors_over_the_shipped_traces() -> anyhow::Result<()> {
    let traces = repo_root().join("examples/traces/checkout.jsonl");
    let traces = traces.to_str().expect("utf-8");
    let out = tailgate(&["plugin", "test", "builtin:keep-errors", traces])?;
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    assert!(
        report.contains("trace 4bf92f3577b34da6a3ce929d0e0e4736 (2 spans): keep"),
        "{report}"
    );
    assert!(report.contains("5 traces: "), "{report}");

    let out = tailgate(&[
        "plugin",
        "test",
        "builtin:keep-slow",
        "--config",
        "threshold: 1s",
        "--json",
        traces,
    ])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let kept: Vec<&str> = json["traces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["outcome"] == "keep")
        .filter_map(|t| t["trace_id"].as_str())
        .collect();
    assert_eq!(kept, ["0af7651916cd43dd8448eb211c80319c"], "{json}");

    let out = tailgate(&["plugin", "test", "builtin:pii", traces])?;
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("attribute `user.email`"), "{report}");
    for planted in [
        "jane.doe@example.com",
        "4111 1111 1111 1111",
        "q7Zx9vLm2Np4Rt6Wy8Ab",
    ] {
        assert!(!report.contains(planted), "`{planted}` printed:\n{report}");
    }
    Ok(())
}

#[test]
fn plugin_test_exits_non_zero_when_the_plugin_fails() -> anyhow::Result<()> {
    let traces = repo_root().join("examples/traces/checkout.jsonl");
    let hostile = tailgate::testing::built_plugin("test-hostile");
    let out = tailgate(&[
        "plugin",
        "test",
        hostile.to_str().expect("utf-8"),
        "--config",
        r#"{"mode": "loop"}"#,
        traces.to_str().expect("utf-8"),
    ])?;
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}{}", text(&out.stderr));
    assert!(report.contains("failure timeout"), "{report}");
    assert!(report.contains("5 failures"), "{report}");

    let out = tailgate(&[
        "plugin",
        "test",
        "builtin:keep-slow",
        "--config",
        "{}",
        traces.to_str().expect("utf-8"),
    ])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("threshold"),
        "a config the plugin rejects is named: {}",
        text(&out.stderr)
    );
    Ok(())
}

#[test]
fn migrate_turns_the_guides_collector_config_into_one_that_validates() -> anyhow::Result<()> {
    let guide = std::fs::read_to_string(repo_root().join("docs/from-the-collector.md"))?;
    let collector = guide
        .split("## Migrating a configuration")
        .nth(1)
        .and_then(|s| s.split("```yaml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .ok_or_else(|| anyhow::anyhow!("docs/from-the-collector.md lost its Collector example"))?;
    let input = temp_file("otelcol.yaml", collector)?;
    let out = input.with_file_name("migrated.yaml");
    let o = tailgate(&[
        "migrate",
        "--from-otelcol",
        input.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ])?;
    anyhow::ensure!(o.status.success(), "migrate failed: {}", text(&o.stderr));
    let migrated = std::fs::read_to_string(&out)?;
    // The probabilistic policy is an approximation (another hash): named in the header.
    anyhow::ensure!(
        migrated.contains("`rest` (probabilistic)") && migrated.contains("action: drop"),
        "{migrated}"
    );
    let o = tailgate(&["validate", out.to_str().expect("utf-8")])?;
    anyhow::ensure!(
        o.status.success(),
        "the migration does not validate: {}\n{migrated}",
        text(&o.stderr)
    );
    // Not a Collector file: exit 1 with the reason.
    let bad = temp_file("not-otelcol.yaml", "receivers: {}\n")?;
    let o = tailgate(&["migrate", "--from-otelcol", bad.to_str().expect("utf-8")])?;
    anyhow::ensure!(!o.status.success() && text(&o.stderr).contains("no `processors` section"));
    Ok(())
}
