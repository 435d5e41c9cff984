//! `tailgate migrate --from-otelcol FILE`: reads the OpenTelemetry Collector's `tail_sampling` processor
//! from a Collector configuration and writes the equivalent tailgate configuration (YAML), with a header
//! naming every policy or setting it could only approximate, or not migrate at all, and why.
//!
//! The Collector samples a trace when **any** policy samples it, unless a `drop` policy (or an inverted
//! match) says not to. tailgate's rules are first-match, so the migration puts the drop rules first and
//! makes every keeping rule abstain on what it does not keep (`otherwise: abstain`): the order of the
//! keeping rules then no longer matters, and the function is the Collector's. Policy types map as in
//! docs/from-the-collector.md.

use serde_json::{Value, json};

/// What [`migrate`] made: the tailgate configuration (YAML) and the notes it carries in its header.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub yaml: String,
    /// One line per approximation or policy left out, naming it.
    pub notes: Vec<String>,
}

/// One migrated policy: its rule (or rules' parts), and whether it is a drop.
struct Mapped {
    rule: Value,
    drop: bool,
    /// An inverted match (`invert_match`): the Collector also samples every trace that does not match.
    inverted: bool,
}

/// Reads a Collector configuration (YAML text) and migrates its first `tail_sampling` processor
/// (`tail_sampling` or `tail_sampling/NAME`). `origin` names the file in the output and in errors.
pub fn migrate(text: &str, origin: &str) -> Result<Migration, String> {
    let doc: Value = serde_norway::from_str(text)
        .map_err(|e| format!("{origin}: not a Collector configuration (YAML): {e}"))?;
    let processors = doc
        .get("processors")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{origin}: no `processors` section"))?;
    let (id, ts) = processors
        .iter()
        .find(|(k, _)| *k == "tail_sampling" || k.starts_with("tail_sampling/"))
        .ok_or_else(|| format!("{origin}: no `tail_sampling` processor under `processors`"))?;
    let mut notes = Vec::new();
    let mut buffer = serde_json::Map::new();
    settings(ts, &mut buffer, &mut notes);
    let policies = ts
        .get("policies")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{origin}: processors.{id} has no `policies` list"))?;
    let (mut drops, mut keeps) = (Vec::new(), Vec::new());
    let mut default_keep = false;
    for (i, p) in policies.iter().enumerate() {
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("policy-{i}"), str::to_owned);
        if p.get("type").and_then(Value::as_str) == Some("always_sample") {
            default_keep = true;
            notes.push(format!(
                "`{name}` (always_sample): became `policy.default: keep` (rules still record which rule kept a trace)"
            ));
            continue;
        }
        match policy(p, &name, &mut notes) {
            Ok(m) => {
                let mut rule = m.rule;
                rule["name"] = json!(name);
                if m.inverted {
                    // Everything the drop rule left does not match: the Collector samples it.
                    let mut part = rule.clone();
                    if let Some(o) = part.as_object_mut() {
                        o.remove("name");
                    }
                    keeps.push(json!({"name": format!("{name}-rest"), "not": part}));
                }
                if m.drop {
                    rule["action"] = json!("drop");
                    drops.push(rule);
                } else {
                    keeps.push(rule);
                }
            }
            Err(why) => notes.push(format!("`{name}`: NOT migrated: {why}")),
        }
    }
    let mut rules = drops;
    rules.append(&mut keeps);
    let mut out = serde_json::Map::new();
    if !buffer.is_empty() {
        out.insert("buffer".into(), Value::Object(buffer));
    }
    out.insert(
        "policy".into(),
        json!({"default": if default_keep { "keep" } else { "drop" }, "rules": rules}),
    );
    let body = serde_norway::to_string(&Value::Object(out))
        .map_err(|e| format!("cannot write the migrated configuration: {e}"))?;
    let mut yaml = format!(
        "# Migrated by `tailgate migrate --from-otelcol` from {origin} (processors.{id}).\n\
         # The Collector samples when any policy samples; here drop rules come first and every keeping\n\
         # rule abstains on what it does not keep, which is the same function.\n"
    );
    if notes.is_empty() {
        yaml.push_str("# Every policy maps exactly.\n");
    } else {
        yaml.push_str("# Approximations and policies left out:\n");
        for n in &notes {
            yaml.push_str(&format!("#   - {n}\n"));
        }
    }
    yaml.push_str(&body);
    Ok(Migration { yaml, notes })
}

/// The processor settings other than `policies`.
fn settings(ts: &Value, buffer: &mut serde_json::Map<String, Value>, notes: &mut Vec<String>) {
    if let Some(w) = ts.get("decision_wait") {
        let w = w.as_str().map_or_else(|| w.to_string(), str::to_owned);
        buffer.insert("max_wait".into(), json!(w));
        notes.push(format!(
            "decision_wait {w}: became buffer.max_wait; tailgate also decides a trace earlier, once its root \
             arrived and nothing new came for buffer.settle (2s): set settle to the same value to wait as long"
        ));
    }
    if let Some(cache) = ts.get("decision_cache") {
        let mut c = serde_json::Map::new();
        for (from, to) in [
            ("sampled_cache_size", "kept_traces"),
            ("non_sampled_cache_size", "dropped_traces"),
        ] {
            if let Some(n) = cache.get(from).and_then(Value::as_u64).filter(|n| *n > 0) {
                c.insert(to.into(), json!(n));
            }
        }
        if !c.is_empty() {
            buffer.insert("decision_cache".into(), Value::Object(c));
        }
    }
    for key in ["num_traces", "expected_new_traces_per_sec"] {
        if ts.get(key).is_some() {
            notes.push(format!(
                "{key}: not needed (tailgate bounds its buffer in bytes: buffer.max_buffer_bytes)"
            ));
        }
    }
    if ts.get("sample_on_first_match").and_then(Value::as_bool) == Some(true) {
        notes.push(
            "sample_on_first_match: tailgate's rules are first-match already; only which rule is \
             recorded can differ"
                .into(),
        );
    }
}

/// The sub-policy list of a combining policy.
fn subs<'a>(p: &'a Value, ty: &str, key: &str) -> Result<&'a Vec<Value>, String> {
    p.get(ty)
        .and_then(|v| v.get(key))
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{ty} without `{ty}.{key}`"))
}

/// The keeping parts of a combining policy (every sub-policy must migrate).
fn parts(list: &[Value], parent: &str, notes: &mut Vec<String>) -> Result<Vec<Value>, String> {
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| format!("{parent}[{i}]"), str::to_owned);
            let mut m =
                policy(p, &name, notes).map_err(|why| format!("sub-policy `{name}`: {why}"))?;
            m.rule["name"] = json!(name);
            if m.drop {
                // An inverted sub-policy: "does not match".
                Ok(json!({"not": m.rule}))
            } else {
                Ok(m.rule)
            }
        })
        .collect()
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// One policy as a rule (without its name), or why it cannot be migrated.
fn policy(p: &Value, name: &str, notes: &mut Vec<String>) -> Result<Mapped, String> {
    let ty = p.get("type").and_then(Value::as_str).ok_or("no `type`")?;
    let body = p.get(ty).cloned().unwrap_or(Value::Null);
    let invert = body.get("invert_match").and_then(Value::as_bool) == Some(true);
    let both_levels = |cond: Value| {
        let mut span = cond.clone();
        span["on"] = json!("span");
        let mut resource = cond;
        resource["on"] = json!("resource");
        json!({"plugin": "builtin:attribute-match", "config": {"conditions": [span, resource], "mode": "any"}})
    };
    let inverted = |rule: Value, notes: &mut Vec<String>| {
        if invert {
            notes.push(format!(
                "`{name}` ({ty}, invert_match): became a drop rule placed first (the Collector's inverted \
                 not-sampled decision overrides the others) and `{name}-rest`, keeping what does not match \
                 (the Collector's inverted sampled decision)"
            ));
        }
        Ok(Mapped {
            rule,
            drop: invert,
            inverted: invert,
        })
    };
    match ty {
        "latency" => {
            let ms = num(&body, "threshold_ms").ok_or("latency without threshold_ms")?;
            let mut config = json!({"threshold": format!("{ms}ms")});
            if let Some(upper) = num(&body, "upper_threshold_ms").filter(|u| *u > 0.0) {
                config["upper_threshold"] = json!(format!("{upper}ms"));
                notes.push(format!(
                    "`{name}` (latency): with upper_threshold_ms the Collector keeps {ms} ms < duration <= {upper} ms in whole milliseconds, keep-slow {ms}ms <= duration <= {upper}ms in nanoseconds"
                ));
            } else {
                notes.push(format!(
                    "`{name}` (latency): the Collector keeps durations > {ms} ms in whole milliseconds, keep-slow >= {ms}ms in nanoseconds"
                ));
            }
            Ok(Mapped {
                rule: json!({"plugin": "builtin:keep-slow", "config": config}),
                drop: false,
                inverted: false,
            })
        }
        "status_code" => {
            let codes: Vec<&str> = body
                .get("status_codes")
                .and_then(Value::as_array)
                .map(|c| c.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if codes != ["ERROR"] {
                return Err(format!(
                    "status_codes {codes:?}: only [ERROR] has a standard plugin (keep-errors)"
                ));
            }
            Ok(Mapped {
                rule: json!({"plugin": "builtin:keep-errors", "config": {}}),
                drop: false,
                inverted: false,
            })
        }
        "probabilistic" => {
            let pct = num(&body, "sampling_percentage")
                .ok_or("probabilistic without sampling_percentage")?;
            notes.push(format!(
                "`{name}` (probabilistic): the same rate, different traces: the Collector hashes the trace id \
                 (hash_salt), tailgate uses its W3C randomness (consistent with SDKs and other replicas)"
            ));
            Ok(Mapped {
                rule: json!({"plugin": "builtin:probabilistic", "config": {"percentage": pct, "otherwise": "abstain"}}),
                drop: false,
                inverted: false,
            })
        }
        "numeric_attribute" => {
            let key = body
                .get("key")
                .and_then(Value::as_str)
                .ok_or("numeric_attribute without key")?;
            let mut cond = json!({"key": key});
            for (from, to) in [("min_value", "min"), ("max_value", "max")] {
                if let Some(v) = num(&body, from) {
                    cond[to] = json!(v);
                }
            }
            inverted(both_levels(cond), notes)
        }
        "string_attribute" => {
            let key = body
                .get("key")
                .and_then(Value::as_str)
                .ok_or("string_attribute without key")?;
            let values: Vec<Value> = body
                .get("values")
                .and_then(Value::as_array)
                .cloned()
                .filter(|v| !v.is_empty())
                .ok_or("string_attribute without values")?;
            let regex = body.get("enabled_regex_matching").and_then(Value::as_bool) == Some(true);
            let rule = if regex {
                let conditions: Vec<Value> = values
                    .iter()
                    .flat_map(|v| {
                        ["span", "resource"].map(|on| json!({"key": key, "on": on, "regex": v}))
                    })
                    .collect();
                json!({"plugin": "builtin:attribute-match", "config": {"conditions": conditions, "mode": "any"}})
            } else {
                both_levels(json!({"key": key, "in": values}))
            };
            inverted(rule, notes)
        }
        "boolean_attribute" => {
            let key = body
                .get("key")
                .and_then(Value::as_str)
                .ok_or("boolean_attribute without key")?;
            let value = body
                .get("value")
                .and_then(Value::as_bool)
                .ok_or("boolean_attribute without value")?;
            inverted(both_levels(json!({"key": key, "bool": value})), notes)
        }
        "span_count" => {
            let mut config = json!({"min": num(&body, "min_spans").unwrap_or(0.0) as u64});
            if let Some(max) = num(&body, "max_spans").filter(|m| *m > 0.0) {
                config["max"] = json!(max as u64);
            }
            Ok(Mapped {
                rule: json!({"plugin": "builtin:span-count", "config": config}),
                drop: false,
                inverted: false,
            })
        }
        "rate_limiting" => {
            let sps =
                num(&body, "spans_per_second").ok_or("rate_limiting without spans_per_second")?;
            notes.push(format!(
                "`{name}` (rate_limiting): a token bucket refilled continuously (burst = one second's spans) \
                 rather than the Collector's per-second count"
            ));
            Ok(Mapped {
                rule: json!({"plugin": "builtin:rate-limit", "config": {"spans_per_second": sps, "key": "", "otherwise": "abstain"}}),
                drop: false,
                inverted: false,
            })
        }
        "and" => {
            let list = subs(p, "and", "and_sub_policy")?;
            Ok(Mapped {
                rule: json!({"all": parts(list, name, notes)?}),
                drop: false,
                inverted: false,
            })
        }
        "drop" => {
            let list = subs(p, "drop", "drop_sub_policy")?;
            let mut all = parts(list, name, notes)?;
            let rule = if all.len() == 1 {
                all.remove(0)
            } else {
                json!({"all": all})
            };
            Ok(Mapped {
                rule,
                drop: true,
                inverted: false,
            })
        }
        "composite" => {
            let list = subs(p, "composite", "composite_sub_policy")?;
            notes.push(format!(
                "`{name}` (composite): became `any` over its sub-policies; the rate allocation between them \
                 (max_total_spans_per_second, rate_allocation) is not migrated: add a rate-limit part"
            ));
            Ok(Mapped {
                rule: json!({"any": parts(list, name, notes)?}),
                drop: false,
                inverted: false,
            })
        }
        "bytes_limiting" => Err("bytes per second limits are not supported yet".into()),
        "trace_state" => {
            Err("no standard plugin reads tracestate yet (a custom plugin can)".into())
        }
        "ottl_condition" => {
            Err("OTTL is not supported; most conditions are attribute-match conditions".into())
        }
        other => Err(format!("unknown policy type `{other}`")),
    }
}

#[cfg(test)]
mod tests;
