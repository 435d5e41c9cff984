//! Attribute predicates evaluated while a request is scanned (the wire half of the predicate pushdown of
//! `tailgate:plugin@0.2.0` samplers; [`crate::predicate`] is the decision half).
//!
//! - [`Predicate`]: one test (level, key, value test), checked when it is built (a bad regex or bounds
//!   fail the plugin load with a message naming the predicate). [`test_value`] is THE evaluation of a
//!   test on a value: the ingest scan and the decision-time fallback both call it, so there is one
//!   definition of the semantics (documented in `wit/v0.2.0/sampler.wit`).
//! - [`PredicateSet`]: up to [`MAX_PREDICATES`] predicates indexed by level and key, with a generation
//!   number. [`super::scan_export_request_with`] evaluates one: every accepted span then carries
//!   `pred_bits` (bit i = predicate i holds for the span, its resource or its scope) and `pred_gen`.
//! - [`PredicateSlot`]: the set the policy in force wants evaluated, handed as a value to everything that
//!   scans ingested requests (the receivers through their ingest handle, the Kafka source, replay) and
//!   replaced when a policy is installed. There is no process-wide set: two apps in one process (tests)
//!   each have their own.

use super::{AnyValueRef, KeyFinder, Origin, SpanRecord, len_fields};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

/// Most distinct predicates one policy may declare (the bits of `SpanRecord::pred_bits`). A policy with
/// more fails to load with an error naming this limit.
pub const MAX_PREDICATES: usize = 32;

/// Which attribute list a predicate's key is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Span,
    Resource,
    Scope,
}

/// A test of one attribute value (see `value-test` in `wit/v0.2.0/sampler.wit`).
#[derive(Debug, Clone)]
pub enum Test {
    Exists,
    StrIn(Vec<String>),
    StrPrefix(String),
    Regex(regex::Regex),
    IntRange(i64, i64),
    DoubleRange(f64, f64),
    BoolIs(bool),
}

impl PartialEq for Test {
    fn eq(&self, other: &Test) -> bool {
        use Test::*;
        match (self, other) {
            (Exists, Exists) => true,
            (StrIn(a), StrIn(b)) => a == b,
            (StrPrefix(a), StrPrefix(b)) => a == b,
            (Regex(a), Regex(b)) => a.as_str() == b.as_str(),
            (IntRange(a, b), IntRange(c, d)) => (a, b) == (c, d),
            (DoubleRange(a, b), DoubleRange(c, d)) => {
                (a.to_bits(), b.to_bits()) == (c.to_bits(), d.to_bits())
            }
            (BoolIs(a), BoolIs(b)) => a == b,
            _ => false,
        }
    }
}

/// One checked predicate.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    pub level: Level,
    pub key: String,
    pub test: Test,
}

impl Predicate {
    /// Checks and compiles a predicate. The error says what is wrong (the caller adds which predicate).
    pub fn new(level: Level, key: String, test: Test) -> Result<Predicate, String> {
        match &test {
            Test::IntRange(min, max) if min > max => {
                return Err(format!("int-range min {min} is greater than max {max}"));
            }
            Test::DoubleRange(min, max) if min.is_nan() || max.is_nan() || min > max => {
                return Err(format!(
                    "double-range [{min}, {max}] is empty or has a NaN bound"
                ));
            }
            _ => {}
        }
        Ok(Predicate { level, key, test })
    }

    /// Compiles a regex test.
    pub fn regex(pattern: &str) -> Result<Test, String> {
        regex::Regex::new(pattern)
            .map(Test::Regex)
            .map_err(|e| format!("invalid regex {pattern:?}: {e}"))
    }

    /// Whether the predicate holds for one attribute value of its key.
    pub fn holds(&self, v: AnyValueRef<'_>) -> bool {
        test_value(&self.test, v)
    }
}

/// Whether `v` passes `test`: the one definition of the predicate semantics, used by the ingest scan and
/// by the decision-time walk alike.
pub fn test_value(test: &Test, v: AnyValueRef<'_>) -> bool {
    match (test, v) {
        (Test::Exists, _) => true,
        (Test::IntRange(min, max), AnyValueRef::Int(i)) => *min <= i && i <= *max,
        (Test::IntRange(min, max), AnyValueRef::String(s)) => {
            decimal_i64(s).is_some_and(|i| *min <= i && i <= *max)
        }
        (Test::DoubleRange(min, max), AnyValueRef::Int(i)) => {
            let x = i as f64;
            *min <= x && x <= *max
        }
        (Test::DoubleRange(min, max), AnyValueRef::Double(x)) => *min <= x && x <= *max,
        (Test::BoolIs(b), AnyValueRef::Bool(x)) => *b == x,
        (Test::StrIn(_) | Test::StrPrefix(_) | Test::Regex(_), AnyValueRef::String(s)) => {
            test_str(test, s)
        }
        (Test::StrIn(_) | Test::StrPrefix(_) | Test::Regex(_), AnyValueRef::Array(_)) => v
            .array_items()
            .any(|item| matches!(item, AnyValueRef::String(s) if test_str(test, s))),
        _ => false,
    }
}

fn test_str(test: &Test, s: &str) -> bool {
    match test {
        Test::StrIn(set) => set.iter().any(|x| x == s),
        Test::StrPrefix(p) => s.starts_with(p.as_str()),
        Test::Regex(r) => r.is_match(s),
        _ => false,
    }
}

/// A decimal integer as Rust's `i64::from_str` reads it (optional sign, ASCII digits).
fn decimal_i64(s: &str) -> Option<i64> {
    s.parse().ok()
}

/// The keys of one level and, per distinct key, the predicates (bit numbers) that test it.
#[derive(Debug, Clone, Default)]
struct LevelIndex {
    finder: KeyFinder,
    keys: Vec<String>,
    /// For each entry of `keys`: the predicates testing it, as (bit, index into `PredicateSet::preds`).
    by_key: Vec<Vec<u8>>,
}

impl LevelIndex {
    fn bits_of(&self, preds: &[Predicate], key_index: usize, v: AnyValueRef<'_>) -> u32 {
        let mut bits = 0;
        for &i in &self.by_key[key_index] {
            if preds[usize::from(i)].holds(v) {
                bits |= 1 << i;
            }
        }
        bits
    }
}

/// A set of at most [`MAX_PREDICATES`] predicates, indexed by level and key, with a generation number.
#[derive(Debug, Default)]
pub struct PredicateSet {
    generation: u16,
    preds: Vec<Predicate>,
    span: LevelIndex,
    resource: LevelIndex,
    scope: LevelIndex,
}

static NEXT_GENERATION: AtomicU16 = AtomicU16::new(1);

impl PredicateSet {
    /// A set of `preds` (already distinct) with generation 0, meaning "not installed": a sampler's own
    /// set for the decision-time walk. Err when there are more than [`MAX_PREDICATES`].
    pub fn new(preds: Vec<Predicate>) -> Result<PredicateSet, String> {
        if preds.len() > MAX_PREDICATES {
            return Err(format!(
                "{} distinct predicates, more than the limit of {MAX_PREDICATES} per policy",
                preds.len()
            ));
        }
        let mut set = PredicateSet {
            generation: 0,
            ..Default::default()
        };
        for (i, p) in preds.iter().enumerate() {
            let index = match p.level {
                Level::Span => &mut set.span,
                Level::Resource => &mut set.resource,
                Level::Scope => &mut set.scope,
            };
            let k = match index.keys.iter().position(|k| *k == p.key) {
                Some(k) => k,
                None => {
                    index.keys.push(p.key.clone());
                    index.by_key.push(Vec::new());
                    index.keys.len() - 1
                }
            };
            // i < MAX_PREDICATES = 32, so it fits a u8.
            index.by_key[k].push(i as u8);
        }
        for index in [&mut set.span, &mut set.resource, &mut set.scope] {
            index.finder = KeyFinder::new(&index.keys);
        }
        set.preds = preds;
        Ok(set)
    }

    /// The policy-wide set of the predicates of all `lists` (deduplicated), with a fresh generation
    /// number (never 0; it wraps after 65 535 policies, far more reloads than a process sees while
    /// holding a span).
    pub fn for_policy<'a>(
        lists: impl IntoIterator<Item = &'a [Predicate]>,
    ) -> Result<PredicateSet, String> {
        let mut all: Vec<Predicate> = Vec::new();
        for list in lists {
            for p in list {
                if !all.contains(p) {
                    all.push(p.clone());
                }
            }
        }
        let mut set = PredicateSet::new(all)?;
        set.generation = loop {
            let g = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
            if g != 0 {
                break g;
            }
        };
        Ok(set)
    }

    /// This set's generation (0: not a policy set).
    pub fn generation(&self) -> u16 {
        self.generation
    }

    /// The predicates, in bit order.
    pub fn predicates(&self) -> &[Predicate] {
        &self.preds
    }

    /// True when there are no predicates.
    pub fn is_empty(&self) -> bool {
        self.preds.is_empty()
    }

    /// True when some predicate tests span attributes.
    pub fn has_span_level(&self) -> bool {
        !self.span.keys.is_empty()
    }

    /// False when no span-level predicate has a key of `key`'s length: then
    /// [`PredicateSet::span_attribute_bits`] is 0 for it. A few instructions; the ingest scan asks this
    /// for every attribute key it has just validated.
    #[inline(always)]
    pub fn span_key_length_hit(&self, key: &str) -> bool {
        self.span.finder.length_hit(key.len())
    }

    /// Bits of the predicates that one encoded span `KeyValue` satisfies (the ingest scan calls this
    /// per attribute: a key-length bitmask rejects most attributes on one byte).
    #[inline]
    pub fn span_attribute_bits(&self, kv: &[u8]) -> u32 {
        match self.span.finder.attribute(kv) {
            Some((k, v)) => self.span.bits_of(&self.preds, k, v),
            None => 0,
        }
    }

    /// Bits of the span-level predicates that hold for an encoded `Span`, walking its attributes.
    pub fn span_bits(&self, span: &[u8]) -> u32 {
        let mut bits = 0;
        if self.has_span_level() {
            self.span
                .finder
                .span_attributes(span, |k, v| bits |= self.span.bits_of(&self.preds, k, v));
        }
        bits
    }

    /// Bits of the resource- and scope-level predicates that hold for an origin (its merged resource
    /// and scope attributes: repeated `resource`/`scope` fields concatenate, as protobuf merges them).
    pub fn origin_bits(&self, origin: &Origin) -> u32 {
        let mut bits = 0;
        if !self.resource.keys.is_empty() {
            for resource in len_fields(&origin.resource_fields, 1) {
                for kv in len_fields(resource, 1) {
                    if let Some((k, v)) = self.resource.finder.attribute(kv) {
                        bits |= self.resource.bits_of(&self.preds, k, v);
                    }
                }
            }
        }
        if !self.scope.keys.is_empty() {
            for scope in len_fields(&origin.scope_fields, 1) {
                for kv in len_fields(scope, 3) {
                    if let Some((k, v)) = self.scope.finder.attribute(kv) {
                        bits |= self.scope.bits_of(&self.preds, k, v);
                    }
                }
            }
        }
        bits
    }

    /// All bits for a span (its own and its origin's), by walking it: what the scan stores, computed
    /// without the scan.
    pub fn walk(&self, span: &SpanRecord) -> u32 {
        self.span_bits(&span.raw) | self.origin_bits(&span.origin)
    }
}

/// The predicate set of the policy in force, shared by the scanners of ingested requests and replaced
/// when a policy is installed. Spans scanned before a replacement keep the previous generation; samplers
/// bound to the new set evaluate them by walking them (a mismatch costs time, never correctness).
#[derive(Clone, Default)]
pub struct PredicateSlot(Arc<ArcSwap<PredicateSet>>);

impl PredicateSlot {
    /// A slot holding `set`.
    pub fn new(set: Arc<PredicateSet>) -> PredicateSlot {
        PredicateSlot(Arc::new(ArcSwap::new(set)))
    }

    /// The set to scan with now (one atomic load; hold it for one request).
    pub fn load(&self) -> Arc<PredicateSet> {
        self.0.load_full()
    }

    /// Makes `set` the one scanned from now on.
    pub fn store(&self, set: Arc<PredicateSet>) {
        self.0.store(set);
    }
}

impl std::fmt::Debug for PredicateSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PredicateSlot")
            .field(&self.0.load().generation())
            .finish()
    }
}
