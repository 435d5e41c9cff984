//! Predicate pushdown for `tailgate:plugin@0.2.0` samplers, decision half: attribute tests a sampler
//! declares at `init` are evaluated while incoming spans are validated ([`crate::otlp::predicate`]: the
//! tests, the policy-wide [`PredicateSet`] and the [`PredicateSlot`] the scanners read), not when the
//! trace is decided.
//!
//! - At load, the policy merges its rules' predicates into one set ([`PredicateSet::for_policy`]) and
//!   carries it; installing the policy stores it in the [`PredicateSlot`] the receivers, the Kafka source
//!   and `tailgate replay` scan with.
//! - At decision time a sampler turns the bits of spans whose `pred_gen` is the generation it was bound
//!   to ([`Binding`]) into its counts ([`count_matches`]); for any other span (scanned before a reload,
//!   or by a scan without the set) it evaluates its own predicates by walking the span's encoded
//!   attributes with the same [`KeyFinder`](crate::otlp::KeyFinder) and [`test_value`]. A mismatch
//!   therefore costs time, never correctness.
//! - The conversion from the WIT contract's predicate type lives with the plugin host
//!   ([`crate::plugin`]).

pub use crate::otlp::predicate::{
    Level, MAX_PREDICATES, Predicate, PredicateSet, PredicateSlot, Test, test_value,
};
use crate::otlp::{Origin, SpanRecord};
use std::sync::Arc;

/// How a sampler's own predicates map to the bits of a policy set.
#[derive(Debug, Default)]
pub struct Binding {
    /// The policy set's generation; 0 = unbound (always walk).
    generation: u16,
    /// For each of the sampler's predicates, its bit in the policy set.
    bits: Vec<u8>,
}

impl Binding {
    /// Binds `own` predicates to `policy`'s bits. Err when one of them is missing from `policy` (a bug).
    pub fn new(own: &[Predicate], policy: &PredicateSet) -> Option<Binding> {
        let bits = own
            .iter()
            .map(|p| {
                policy
                    .predicates()
                    .iter()
                    .position(|q| q == p)
                    .map(|b| b as u8)
            })
            .collect::<Option<Vec<u8>>>()?;
        Some(Binding {
            generation: policy.generation(),
            bits,
        })
    }
}

/// The per-predicate span counts of one trace for a sampler with predicates `own` (as a set, bit i =
/// predicate i) bound by `binding`: spans carrying the binding's generation are counted from their bits,
/// the others are walked.
pub fn count_matches(own: &PredicateSet, binding: &Binding, spans: &[SpanRecord]) -> Vec<u32> {
    let n = own.predicates().len();
    let mut counts = vec![0u32; n];
    if n == 0 {
        return counts;
    }
    // Origins of walked spans, so each distinct resource/scope is evaluated once per trace.
    let mut origins: Vec<(*const Origin, u32)> = Vec::new();
    for s in spans {
        let bits = if binding.generation != 0 && s.pred_gen() == binding.generation {
            let g = s.pred_bits();
            let mut bits = 0u32;
            for (i, &b) in binding.bits.iter().enumerate() {
                bits |= ((g >> b) & 1) << i;
            }
            bits
        } else {
            let ptr = Arc::as_ptr(&s.origin);
            let o = match origins.iter().find(|(p, _)| *p == ptr) {
                Some((_, b)) => *b,
                None => {
                    let b = own.origin_bits(&s.origin);
                    origins.push((ptr, b));
                    b
                }
            };
            own.span_bits(&s.raw) | o
        };
        for (i, c) in counts.iter_mut().enumerate() {
            *c += (bits >> i) & 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests;
