//! The tailgate configurations in `examples/kubernetes/kafka/` parse and validate (with the environment
//! the manifests set), and the samplers' budget is split by their group size (also in
//! `60-jaeger-kafka.yaml`, whose samplers publish their kept traces to Jaeger's topic).

use std::path::Path;
use tailgate::config::Config;

/// Every `tailgate.yaml: |` block of a manifest file, dedented.
fn embedded_configs(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = manifest.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() != "tailgate.yaml: |" {
            continue;
        }
        let mut block = Vec::new();
        let mut indent = None;
        while let Some(next) = lines.peek() {
            let width = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && indent.is_some_and(|i| width < i)
                || next.starts_with("---")
            {
                break;
            }
            if !next.trim().is_empty() {
                indent.get_or_insert(width);
            }
            block.push(next.get(indent.unwrap_or(0)..).unwrap_or("").to_string());
            lines.next();
        }
        out.push(block.join("\n"));
    }
    out
}

#[test]
fn kubernetes_manifests_hold_valid_tailgate_configs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes/kafka");
    let mut parsed = 0;
    for name in [
        "40-ingest.yaml",
        "50-samplers.yaml",
        "60-jaeger-kafka.yaml",
        "loadbalancing.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(name)).expect("manifest");
        for config in embedded_configs(&text) {
            let env = |k: &str| (k == "TAILGATE_GROUP_SIZE").then(|| "3".to_string());
            let c = Config::parse_with_env(&config, name, env)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{config}"));
            if name == "50-samplers.yaml" || name == "60-jaeger-kafka.yaml" {
                let budget = c
                    .policy
                    .rules
                    .iter()
                    .find(|r| r.name == "budget")
                    .expect("budget rule");
                assert_eq!(
                    budget.config["traces_per_second"], 100.0,
                    "300 split over 3 replicas"
                );
            }
            parsed += 1;
        }
    }
    assert_eq!(parsed, 4);
}
