//! # tailgate-plugin-sdk
//!
//! Write [tailgate](../../docs/plugins.md) sampler and redactor plugins in Rust. A plugin is a type that
//! implements [`Sampler`] (or [`Redactor`]) plus one line, [`export_sampler!`] (or [`export_redactor!`]),
//! that turns it into a WebAssembly component implementing the `tailgate:plugin@0.1.0` contract. The raw
//! `wit-bindgen` bindings stay hidden in [`bindings`].
//!
//! ```no_run
//! use tailgate_plugin_sdk::{Decision, Interest, ProjectedAttribute, Sampler, Trace, TraceSummary};
//!
//! /// Keeps traces with more than `min` spans.
//! struct BigTraces {
//!     min: u32,
//! }
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     min: u32,
//! }
//!
//! impl Sampler for BigTraces {
//!     fn init(config: &str) -> Result<(Self, Interest), String> {
//!         let c: Config = tailgate_plugin_sdk::parse_config(config)?;
//!         // Only the summary is needed: the cheapest possible call.
//!         Ok((BigTraces { min: c.min }, Interest::summary_only()))
//!     }
//!
//!     fn decide(&mut self, s: &TraceSummary, _: &[ProjectedAttribute], _: Option<&Trace>) -> Decision {
//!         if s.span_count > self.min { Decision::keep("big") } else { Decision::abstain() }
//!     }
//! }
//!
//! tailgate_plugin_sdk::export_sampler!(BigTraces);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate type `cdylib`); the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component. Keep the decision logic in plain functions so that it
//! can be unit-tested natively with `cargo test`: the bindings compile on the host target too, only the
//! [`host`] functions are unavailable there.
//!
//! ## Costs
//! Every string that crosses into the plugin is one allocation inside it. Ask in [`Interest`] only for the
//! attributes you read; `full_trace` costs about 3 us per span. Calls have a deadline (default 5 ms) and
//! instances a memory cap (default 64 MiB); a panic aborts the call (the host reports a trap and replaces
//! the instance).
#![deny(missing_docs)]

use std::cell::RefCell;
use std::time::Duration;

pub mod bindings {
    //! The raw `wit-bindgen` bindings of the two worlds. Plugins normally use the re-exports at the crate
    //! root instead.
    #![allow(missing_docs, clippy::all)]

    /// Bindings of the `tailgate:plugin/sampler@0.1.0` world.
    pub mod sampler {
        wit_bindgen::generate!({
            path: "../../wit/v0.1.0",
            world: "tailgate:plugin/sampler@0.1.0",
            pub_export_macro: true,
            export_macro_name: "export_sampler_raw",
            additional_derives: [PartialEq],
        });
    }

    /// Bindings of the `tailgate:plugin/sampler@0.2.0` world (predicate pushdown). Its `types` are the
    /// 0.1.0 ones (the interface is unchanged), so summaries, projected attributes and traces are the
    /// same Rust types in both versions.
    pub mod sampler_v0_2 {
        // The world is included under another name: wit-bindgen names the crate-root export macro after
        // the world, and the 0.1.0 world is also called `sampler`. The component's imports and exports
        // are exactly those of `tailgate:plugin/sampler@0.2.0`.
        wit_bindgen::generate!({
            inline: "package tailgate:sdk; world sampler-v0-2 { include tailgate:plugin/sampler@0.2.0; }",
            path: "../../wit/v0.2.0",
            world: "tailgate:sdk/sampler-v0-2",
            pub_export_macro: true,
            export_macro_name: "export_sampler_v0_2_raw",
            additional_derives: [PartialEq],
            with: {
                "tailgate:plugin/types@0.2.0": crate::bindings::sampler::tailgate::plugin::types,
                "tailgate:plugin/host@0.2.0": generate,
                "tailgate:plugin/sampling@0.2.0": generate,
            },
        });
    }

    /// Bindings of the `tailgate:plugin/redactor@0.1.0` world (shares the types and host imports with
    /// [`sampler`]).
    pub mod redactor {
        wit_bindgen::generate!({
            path: "../../wit/v0.1.0",
            world: "tailgate:plugin/redactor@0.1.0",
            pub_export_macro: true,
            export_macro_name: "export_redactor_raw",
            additional_derives: [PartialEq],
            with: {
                "tailgate:plugin/types@0.1.0": crate::bindings::sampler::tailgate::plugin::types,
                "tailgate:plugin/host@0.1.0": crate::bindings::sampler::tailgate::plugin::host,
            },
        });
    }
}

pub use bindings::redactor::exports::tailgate::plugin::redaction::{
    Edit, EditAction, FieldKind, MaskRange, PackedTrace, TextField, TextRange, ValueType,
};
pub use bindings::sampler::exports::tailgate::plugin::sampling::{Decision, Verdict};
pub use bindings::sampler::tailgate::plugin::types::{
    Attribute, AttributeLevel, AttributeValue, InstrumentationScope, Interest, MapEntry,
    ProjectedAttribute, RootSpan, ScalarValue, Span, SpanEvent, SpanKind, SpanLink, StatusCode,
    Trace, TraceId, TraceSummary,
};
/// Re-exported so plugins deserialize their config with the same serde as the SDK.
pub use serde;

/// A sampling plugin: configured once, then asked about each complete trace.
pub trait Sampler: Sized + 'static {
    /// Parses the rule's configuration (JSON text, `{}` when empty) and says what the plugin wants with
    /// each call. An `Err` message fails the load; name the bad key in it ([`parse_config`] does).
    fn init(config: &str) -> Result<(Self, Interest), String>;

    /// Decides one trace. `attributes` holds the present values of the keys declared in [`Interest`];
    /// `full` is `Some` only when [`Interest::full_trace`] was set.
    fn decide(
        &mut self,
        summary: &TraceSummary,
        attributes: &[ProjectedAttribute],
        full: Option<&Trace>,
    ) -> Decision;
}

/// A redaction plugin: configured once, then asked for edits to each kept trace.
pub trait Redactor: Sized + 'static {
    /// Parses the rule's configuration, like [`Sampler::init`]. Only [`Interest::stateful`] is read.
    fn init(config: &str) -> Result<(Self, Interest), String>;

    /// Returns the edits to apply to the trace (empty to leave it unchanged).
    fn redact(&mut self, summary: &TraceSummary, trace: &PackedTrace) -> Vec<Edit>;
}

pub mod testing;
pub mod v0_2;

/// Parses a plugin's JSON configuration into `T`. Empty text counts as `{}`. Use
/// `#[serde(deny_unknown_fields)]` on `T` so that a misspelt key is an error naming it.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    let text = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    serde_json::from_str(text).map_err(|e| format!("invalid configuration: {e}"))
}

/// Parses a human-readable duration such as `1s`, `250ms` or `1m 30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// `#[serde(deserialize_with = "tailgate_plugin_sdk::duration")]`: a duration written as `"250ms"`, `"1s"`.
pub fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// The constructors of a contract version's `Decision` (each version's bindings generate their own type).
macro_rules! decision_constructors {
    ($decision:ty, $verdict:ident) => {
        impl $decision {
            /// Keep the trace, with a short reason.
            pub fn keep(reason: &str) -> Self {
                Self {
                    verdict: $verdict::Keep,
                    probability: None,
                    reason: Some(reason.to_owned()),
                }
            }

            /// Drop the trace, with a short reason.
            pub fn drop(reason: &str) -> Self {
                Self {
                    verdict: $verdict::Drop,
                    probability: None,
                    reason: Some(reason.to_owned()),
                }
            }

            /// No opinion: the next rule decides.
            pub fn abstain() -> Self {
                Self {
                    verdict: $verdict::Abstain,
                    probability: None,
                    reason: None,
                }
            }

            /// The same decision, recording the sampling probability that was applied.
            pub fn with_probability(mut self, probability: f64) -> Self {
                self.probability = Some(probability);
                self
            }
        }
    };
}
pub(crate) use decision_constructors;

decision_constructors!(Decision, Verdict);

impl Interest {
    /// Nothing beyond the trace summary: the cheapest call.
    pub fn summary_only() -> Self {
        Interest {
            span_attributes: Vec::new(),
            resource_attributes: Vec::new(),
            scope_attributes: Vec::new(),
            full_trace: false,
            stateful: false,
        }
    }

    /// Also pass the values of span attribute `key`.
    pub fn with_span_attribute(mut self, key: &str) -> Self {
        self.span_attributes.push(key.to_owned());
        self
    }

    /// Also pass the values of resource attribute `key`.
    pub fn with_resource_attribute(mut self, key: &str) -> Self {
        self.resource_attributes.push(key.to_owned());
        self
    }

    /// Also pass the whole trace.
    pub fn with_full_trace(mut self) -> Self {
        self.full_trace = true;
        self
    }

    /// Mark the plugin as keeping state across calls (a single instance, calls serialized).
    pub fn stateful(mut self) -> Self {
        self.stateful = true;
        self
    }
}

/// Where a keyed sampler (a per-key rate limit, a per-key probability) reads a trace's key: the
/// summary's `service-name` for `service.name` on the resource (no projection needed), else the first
/// projected value of the attribute, which [`TraceKey::new`] adds to the interest; an empty key is one
/// key for every trace. Config: `"key": "http.route", "on": "span"` (`on` defaults to `resource`).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceKey {
    source: KeySource,
}

#[derive(Debug, Clone, PartialEq)]
enum KeySource {
    ServiceName,
    Projected,
    Constant,
}

/// The level a [`TraceKey`] is read from (`"on"` in a config).
#[derive(serde::Deserialize, Default, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum KeyLevel {
    /// An attribute of the span's resource (`service.name`, `tenant`).
    #[default]
    Resource,
    /// An attribute of a span (the first span carrying it, in the host's order).
    Span,
}

impl TraceKey {
    /// The key `key` on `on`, and `interest` extended with the projection it needs.
    pub fn new(key: &str, on: KeyLevel, interest: Interest) -> (TraceKey, Interest) {
        if key.is_empty() {
            return (
                TraceKey {
                    source: KeySource::Constant,
                },
                interest,
            );
        }
        if key == "service.name" && on == KeyLevel::Resource {
            return (
                TraceKey {
                    source: KeySource::ServiceName,
                },
                interest,
            );
        }
        let interest = match on {
            KeyLevel::Resource => interest.with_resource_attribute(key),
            KeyLevel::Span => interest.with_span_attribute(key),
        };
        (
            TraceKey {
                source: KeySource::Projected,
            },
            interest,
        )
    }

    /// The trace's key: a string, int or bool value as text; empty when the attribute is absent or of
    /// another type.
    pub fn of(&self, summary: &TraceSummary, attributes: &[ProjectedAttribute]) -> String {
        match self.source {
            KeySource::ServiceName => return summary.service_name.clone(),
            KeySource::Constant => return String::new(),
            KeySource::Projected => {}
        }
        match attributes.first().map(|a| &a.value) {
            Some(AttributeValue::Str(s)) => s.clone(),
            Some(AttributeValue::Int(i)) => i.to_string(),
            Some(AttributeValue::Boolean(b)) => b.to_string(),
            _ => String::new(),
        }
    }
}

impl AttributeValue {
    /// The string, for a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttributeValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, for an int value.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            AttributeValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number, for an int or double value.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            AttributeValue::Int(i) => Some(*i as f64),
            AttributeValue::Double(d) => Some(*d),
            _ => None,
        }
    }

    /// The boolean, for a bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            AttributeValue::Boolean(b) => Some(*b),
            _ => None,
        }
    }
}

impl TraceId {
    /// The id as one big-endian 128-bit integer.
    pub fn as_u128(&self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }
}

impl PackedTrace {
    /// The bytes of a range of [`PackedTrace::text`] (empty if out of bounds).
    pub fn bytes(&self, range: &TextRange) -> &[u8] {
        let start = range.offset as usize;
        let end = start.saturating_add(range.len as usize);
        self.text.get(start..end).unwrap_or(&[])
    }

    /// A range as text (empty when it is not UTF-8, e.g. a bytes value).
    pub fn str(&self, range: &TextRange) -> &str {
        std::str::from_utf8(self.bytes(range)).unwrap_or("")
    }

    /// A field's key (empty for names and messages).
    pub fn key(&self, field: &TextField) -> &str {
        self.str(&field.key)
    }

    /// A field's value text.
    pub fn value(&self, field: &TextField) -> &str {
        self.str(&field.value)
    }
}

impl Edit {
    /// An edit of field `field` (an index into [`PackedTrace::fields`]).
    pub fn new(field: usize, action: EditAction, reason: &str) -> Self {
        Edit {
            field: field as u32,
            action,
            reason: Some(reason.to_owned()),
        }
    }
}

/// Calls into the host: logging, counters and lookups into the trace of the current call. Only available
/// inside a component (they panic when the plugin's logic is unit-tested natively).
pub mod host {
    use crate::AttributeValue;
    use crate::bindings::sampler::tailgate::plugin::host as raw;
    pub use crate::bindings::sampler::tailgate::plugin::host::LogLevel;

    /// Writes a line to tailgate's log, tagged with the plugin's name.
    pub fn log(level: LogLevel, message: &str) {
        raw::log(level, message);
    }

    /// Logs at `info`.
    pub fn info(message: &str) {
        raw::log(LogLevel::Info, message);
    }

    /// Logs at `warn`.
    pub fn warn(message: &str) {
        raw::log(LogLevel::Warn, message);
    }

    /// Adds `delta` to the plugin's counter `name` (a tailgate metric labelled with the plugin name).
    pub fn counter_add(name: &str, delta: u64) {
        raw::counter_add(name, delta);
    }

    /// During a call: span attribute `key` of span `span_index`.
    pub fn span_attribute(span_index: u32, key: &str) -> Option<AttributeValue> {
        raw::span_attribute(span_index, key)
    }

    /// During a call: resource attribute `key` of span `span_index`'s resource.
    pub fn resource_attribute(span_index: u32, key: &str) -> Option<AttributeValue> {
        raw::resource_attribute(span_index, key)
    }

    /// During a call: the name of span `span_index`.
    pub fn span_name(span_index: u32) -> Option<String> {
        raw::span_name(span_index)
    }
}

#[doc(hidden)]
pub mod __private {
    //! Glue used by the export macros. Not a stable API.
    use super::*;
    use std::any::Any;

    thread_local! {
        /// The plugin value created by `init`. Components are single-threaded; the thread-local is just
        /// the safe way to hold a global.
        static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    fn with_plugin<T: 'static, R>(f: impl FnOnce(&mut T) -> R) -> R {
        PLUGIN.with(|cell| {
            let mut slot = cell.borrow_mut();
            match slot.as_mut().and_then(|b| b.downcast_mut::<T>()) {
                Some(p) => f(p),
                // The host always calls `init` first and only goes on when it succeeded.
                None => panic!("tailgate plugin called before a successful init"),
            }
        })
    }

    pub fn sampler_init<T: Sampler>(config: &str) -> Result<Interest, String> {
        let (plugin, interest) = T::init(config)?;
        PLUGIN.with(|cell| *cell.borrow_mut() = Some(Box::new(plugin)));
        Ok(interest)
    }

    pub fn sampler_decide<T: Sampler>(
        summary: &TraceSummary,
        attributes: &[ProjectedAttribute],
        full: Option<&Trace>,
    ) -> Decision {
        with_plugin(|p: &mut T| p.decide(summary, attributes, full))
    }

    pub fn redactor_init<T: Redactor>(config: &str) -> Result<Interest, String> {
        let (plugin, interest) = T::init(config)?;
        PLUGIN.with(|cell| *cell.borrow_mut() = Some(Box::new(plugin)));
        Ok(interest)
    }

    pub fn redactor_redact<T: Redactor>(summary: &TraceSummary, trace: &PackedTrace) -> Vec<Edit> {
        with_plugin(|p: &mut T| p.redact(summary, trace))
    }
}

/// Exports a [`Sampler`] implementation as the component's `tailgate:plugin/sampling@0.1.0` interface.
/// Use it once, at the crate root of a `cdylib` crate.
#[macro_export]
macro_rules! export_sampler {
    ($ty:ty) => {
        #[doc(hidden)]
        pub struct __TailgateSamplerExport;

        impl $crate::bindings::sampler::exports::tailgate::plugin::sampling::Guest for __TailgateSamplerExport {
            fn init(config: String) -> Result<$crate::Interest, String> {
                $crate::__private::sampler_init::<$ty>(&config)
            }

            fn decide(
                summary: $crate::TraceSummary,
                attributes: Vec<$crate::ProjectedAttribute>,
                full: Option<$crate::Trace>,
            ) -> $crate::Decision {
                $crate::__private::sampler_decide::<$ty>(&summary, &attributes, full.as_ref())
            }
        }

        // Native builds (unit tests of the plugin's logic) cannot carry the component's export names.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::sampler::export_sampler_raw!(__TailgateSamplerExport with_types_in $crate::bindings::sampler);
    };
}

/// Exports a [`v0_2::Sampler`] implementation as the component's `tailgate:plugin/sampling@0.2.0`
/// interface (predicate pushdown). Use it once, at the crate root of a `cdylib` crate.
#[macro_export]
macro_rules! export_sampler_v0_2 {
    ($ty:ty) => {
        #[doc(hidden)]
        pub struct __TailgateSamplerV02Export;

        impl $crate::bindings::sampler_v0_2::exports::tailgate::plugin::sampling::Guest for __TailgateSamplerV02Export {
            fn init(config: String) -> Result<$crate::v0_2::SamplerInterest, String> {
                $crate::v0_2::__private::init::<$ty>(&config)
            }

            fn decide(
                summary: $crate::TraceSummary,
                predicate_matches: Vec<u32>,
                attributes: Vec<$crate::ProjectedAttribute>,
                full: Option<$crate::Trace>,
            ) -> $crate::v0_2::Decision {
                $crate::v0_2::__private::decide::<$ty>(&summary, &predicate_matches, &attributes, full.as_ref())
            }
        }

        // Native builds (unit tests of the plugin's logic) cannot carry the component's export names.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::sampler_v0_2::export_sampler_v0_2_raw!(__TailgateSamplerV02Export with_types_in $crate::bindings::sampler_v0_2);
    };
}

/// Exports a [`Redactor`] implementation as the component's `tailgate:plugin/redaction@0.1.0` interface.
#[macro_export]
macro_rules! export_redactor {
    ($ty:ty) => {
        #[doc(hidden)]
        pub struct __TailgateRedactorExport;

        impl $crate::bindings::redactor::exports::tailgate::plugin::redaction::Guest for __TailgateRedactorExport {
            fn init(config: String) -> Result<$crate::Interest, String> {
                $crate::__private::redactor_init::<$ty>(&config)
            }

            fn redact(summary: $crate::TraceSummary, trace: $crate::PackedTrace) -> Vec<$crate::Edit> {
                $crate::__private::redactor_redact::<$ty>(&summary, &trace)
            }
        }

        // Native builds (unit tests of the plugin's logic) cannot carry the component's export names.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::redactor::export_redactor_raw!(__TailgateRedactorExport with_types_in $crate::bindings::redactor);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        #[allow(dead_code)]
        threshold: u32,
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = parse_config::<Conf>(r#"{"treshold": 3}"#).unwrap_err();
        assert!(e.contains("treshold"), "{e}");
        assert!(parse_config::<Conf>(r#"{"threshold": 3}"#).is_ok());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn packed_trace_ranges_are_bounds_checked() {
        let t = PackedTrace {
            text: b"keyvalue".to_vec(),
            fields: vec![],
            span_count: 0,
            resource_count: 0,
            scope_count: 0,
        };
        assert_eq!(t.str(&TextRange { offset: 3, len: 5 }), "value");
        assert_eq!(t.str(&TextRange { offset: 7, len: 5 }), "");
    }
}
