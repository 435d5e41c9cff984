//! Samplers of contract `tailgate:plugin@0.2.0`: predicate pushdown.
//!
//! A 0.2 sampler declares [`Predicate`]s at `init` (a span, resource or scope attribute key and a test of
//! its value). tailgate evaluates them while it receives spans and passes `decide` only, per predicate,
//! the number of spans of the trace for which it holds: a trace is tested without a single attribute
//! value crossing into the plugin. Use it for "keep if any span has X"; keep projecting values
//! ([`Interest`]) that the plugin computes with.
//!
//! ```no_run
//! use tailgate_plugin_sdk::v0_2::{Decision, Predicate, Sampler, SamplerInterest, ValueTest};
//! use tailgate_plugin_sdk::{ProjectedAttribute, Trace, TraceSummary};
//!
//! /// Keeps traces that touched an admin route.
//! struct Admin;
//!
//! impl Sampler for Admin {
//!     fn init(_config: &str) -> Result<(Self, SamplerInterest), String> {
//!         let mut interest = SamplerInterest::summary_only();
//!         interest.add(Predicate::span("http.route", ValueTest::prefix("/admin"))); // index 0
//!         Ok((Admin, interest))
//!     }
//!
//!     fn decide(&mut self, _: &TraceSummary, matches: &[u32], _: &[ProjectedAttribute],
//!               _: Option<&Trace>) -> Decision {
//!         if matches[0] > 0 { Decision::keep("admin") } else { Decision::abstain() }
//!     }
//! }
//!
//! tailgate_plugin_sdk::export_sampler_v0_2!(Admin);
//! ```

use crate::{Interest, ProjectedAttribute, Trace, TraceSummary};

pub use crate::bindings::sampler_v0_2::exports::tailgate::plugin::sampling::{
    Decision, DoubleBounds, IntBounds, Predicate, SamplerInterest, ValueTest, Verdict,
};
pub use crate::bindings::sampler_v0_2::tailgate::plugin::host;
pub use crate::{AttributeLevel, parse_config};

/// A 0.2 sampling plugin: like [`crate::Sampler`], plus predicates.
pub trait Sampler: Sized + 'static {
    /// Parses the rule's configuration and says what the plugin wants: projected attributes and
    /// predicates ([`SamplerInterest::add`] returns each predicate's index into `predicate_matches`).
    fn init(config: &str) -> Result<(Self, SamplerInterest), String>;

    /// Decides one trace. `predicate_matches[i]` is the number of spans for which predicate `i` holds
    /// (for resource and scope predicates: spans whose resource or scope satisfies it).
    fn decide(
        &mut self,
        summary: &TraceSummary,
        predicate_matches: &[u32],
        attributes: &[ProjectedAttribute],
        full: Option<&Trace>,
    ) -> Decision;
}

impl SamplerInterest {
    /// No projection and no predicates: the cheapest call.
    pub fn summary_only() -> Self {
        SamplerInterest {
            projection: Interest::summary_only(),
            predicates: Vec::new(),
        }
    }

    /// Declares a predicate and returns its index in `predicate_matches`. Declaring the same predicate
    /// twice returns the first index.
    pub fn add(&mut self, p: Predicate) -> usize {
        if let Some(i) = self.predicates.iter().position(|q| *q == p) {
            return i;
        }
        self.predicates.push(p);
        self.predicates.len() - 1
    }
}

impl Predicate {
    /// A test of span attribute `key`.
    pub fn span(key: &str, test: ValueTest) -> Self {
        Predicate {
            level: AttributeLevel::Span,
            key: key.to_owned(),
            test,
        }
    }

    /// A test of resource attribute `key`.
    pub fn resource(key: &str, test: ValueTest) -> Self {
        Predicate {
            level: AttributeLevel::Resource,
            key: key.to_owned(),
            test,
        }
    }

    /// A test of instrumentation scope attribute `key`.
    pub fn scope(key: &str, test: ValueTest) -> Self {
        Predicate {
            level: AttributeLevel::Scope,
            key: key.to_owned(),
            test,
        }
    }
}

impl ValueTest {
    /// A string equal to `value`.
    pub fn equals(value: &str) -> Self {
        ValueTest::StrIn(vec![value.to_owned()])
    }

    /// A string equal to one of `values`.
    pub fn one_of<S: AsRef<str>>(values: &[S]) -> Self {
        ValueTest::StrIn(values.iter().map(|v| v.as_ref().to_owned()).collect())
    }

    /// A string starting with `prefix`.
    pub fn prefix(prefix: &str) -> Self {
        ValueTest::StrPrefix(prefix.to_owned())
    }

    /// A string with a match of the regular expression (checked by the host: an invalid one fails the
    /// load).
    pub fn regex(pattern: &str) -> Self {
        ValueTest::Regex(pattern.to_owned())
    }

    /// An integer (or decimal-integer string) in `[min, max]`.
    pub fn int_range(min: i64, max: i64) -> Self {
        ValueTest::IntRange(IntBounds { min, max })
    }

    /// An int or double in `[min, max]` (bounds may be infinite).
    pub fn double_range(min: f64, max: f64) -> Self {
        ValueTest::DoubleRange(DoubleBounds { min, max })
    }
}

crate::decision_constructors!(Decision, Verdict);

#[doc(hidden)]
pub mod __private {
    //! Glue used by [`crate::export_sampler_v0_2!`]. Not a stable API.
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// The plugin value created by `init` (components are single-threaded).
        static PLUGIN: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
    }

    pub fn init<T: Sampler>(config: &str) -> Result<SamplerInterest, String> {
        let (plugin, interest) = T::init(config)?;
        PLUGIN.with(|cell| *cell.borrow_mut() = Some(Box::new(plugin)));
        Ok(interest)
    }

    pub fn decide<T: Sampler>(
        summary: &TraceSummary,
        matches: &[u32],
        attributes: &[ProjectedAttribute],
        full: Option<&Trace>,
    ) -> Decision {
        PLUGIN.with(|cell| {
            let mut slot = cell.borrow_mut();
            match slot.as_mut().and_then(|b| b.downcast_mut::<T>()) {
                Some(p) => p.decide(summary, matches, attributes, full),
                // The host always calls `init` first and only goes on when it succeeded.
                None => panic!("tailgate plugin called before a successful init"),
            }
        })
    }
}
