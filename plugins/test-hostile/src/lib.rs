//! `test-hostile`: a sampler for tailgate's host tests that misbehaves on request. `{"mode": ...}`:
//! `ok` (keeps everything), `trap_on_boom` (panics when the root span is named `boom`, keeps otherwise),
//! `loop` (never returns from `decide`), `oom` (allocates until the memory cap), `init_trap`, `init_loop`,
//! `bad_probability` (returns probability 7), `full` (asks for the full trace and describes it in the
//! reason), `accessors` (uses the host accessors, log and counters and reports what it saw),
//! `slow_sometimes` (never returns when the root span is named `slow`, keeps otherwise), `huge_output`
//! (keeps with an 8 MiB reason after logging an 8 MiB line).

use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{
    Decision, Interest, ProjectedAttribute, Sampler, Trace, TraceSummary, host,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {
    mode: String,
}

/// The misbehaving sampler.
pub struct Hostile {
    mode: String,
    hoard: Vec<Vec<u8>>,
}

/// A one-line description of a full trace, checked by the host tests.
pub fn describe(t: &Trace) -> String {
    let events: usize = t.spans.iter().map(|s| s.events.len()).sum();
    let links: usize = t.spans.iter().map(|s| s.links.len()).sum();
    let attrs: usize = t.spans.iter().map(|s| s.attributes.len()).sum();
    let messages: Vec<&str> = t
        .spans
        .iter()
        .map(|s| s.status_message.as_str())
        .filter(|m| !m.is_empty())
        .collect();
    format!(
        "spans={} attrs={attrs} events={events} links={links} resources={} scopes={} messages={messages:?}",
        t.spans.len(),
        t.resources.len(),
        t.scopes.len()
    )
}

impl Sampler for Hostile {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
        let mut interest = Interest::summary_only();
        match c.mode.as_str() {
            "init_trap" => panic!("init_trap requested"),
            "init_loop" => loop {
                std::hint::black_box(&c);
            },
            "full" => interest = interest.with_full_trace(),
            "ok" | "trap_on_boom" | "loop" | "oom" | "bad_probability" | "accessors"
            | "slow_sometimes" | "huge_output" => {}
            other => return Err(format!("invalid configuration: unknown mode {other:?}")),
        }
        Ok((
            Hostile {
                mode: c.mode,
                hoard: Vec::new(),
            },
            interest,
        ))
    }

    fn decide(
        &mut self,
        summary: &TraceSummary,
        _: &[ProjectedAttribute],
        full: Option<&Trace>,
    ) -> Decision {
        match self.mode.as_str() {
            "trap_on_boom" if summary.root.as_ref().is_some_and(|r| r.name == "boom") => {
                panic!("boom")
            }
            "loop" => loop {
                std::hint::black_box(&summary);
            },
            "slow_sometimes" if summary.root.as_ref().is_some_and(|r| r.name == "slow") => loop {
                std::hint::black_box(&summary);
            },
            "huge_output" => {
                let big = "x".repeat(8 << 20);
                host::info(&big);
                Decision::keep(&big)
            }
            "oom" => loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            },
            "bad_probability" => Decision::keep("bad").with_probability(7.0),
            "full" => Decision::keep(&full.map(describe).unwrap_or_else(|| "no trace".into())),
            "accessors" => {
                host::info("accessors called");
                host::counter_add("accessor_calls", 1);
                let name = host::span_name(0);
                let attr = host::span_attribute(0, "http.method");
                let res = host::resource_attribute(0, "service.name");
                let missing = host::span_name(10_000);
                Decision::keep(&format!("{name:?} {attr:?} {res:?} {missing:?}"))
            }
            _ => Decision::keep("ok"),
        }
    }
}

tailgate_plugin_sdk::export_sampler!(Hostile);
