//! Combinators: a rule that is `all:`, `any:` or `not:` over other samplers (standard, custom, or
//! combinators again), and `action: drop`, which turns a rule's keep into a drop (the Collector's `drop`
//! policy). The host evaluates them; a part is asked only while its answer can still change the result.
//!
//! A part *matches* when it keeps; abstain and drop are both "no". What each combinator reports, and
//! what a keep then does to the sampling threshold (`ot=th`, see [`Applied`]):
//! - `all`: keeps when every part keeps, asked in order and stopped at the first that does not. Parts
//!   that keep whatever the randomness leave the threshold; consistent parts combine to the smallest
//!   probability (kept iff the randomness passes every threshold); shares multiply (each limiter saw only
//!   what the parts before it kept). A consistent part together with a share is reported unknown.
//! - `any`: keeps when a part keeps, asked in order. A keep whatever the randomness ends it. After a
//!   consistent keep the remaining stateless parts are still asked (they cost a call, not a budget) and
//!   the largest probability wins, which is exact for consistent samplers; stateful parts (limiters) are
//!   skipped once the trace is kept, so no budget is spent on it. After a share, the first keep stands,
//!   as with the policy's own first-match rules.
//! - `not`: keeps when its part does not. The probability is 1 when the part decided whatever the
//!   randomness, and unknown (threshold erased) when the part is stateful or reported a probability
//!   below 1: "not sampled by a 10 % sampler" is no consistent sample.
//!
//! A part's failure is the combinator's failure (the policy's `on_sampler_failure` applies), named after
//! the part.

pub use crate::config::Combinator;
use crate::otlp::predicate::{Predicate, PredicateSet};
use crate::otlp::{SpanRecord, TraceId};
use crate::pipeline::{Applied, Judged, Rule, Sampler, SamplerFailure, SamplerVerdict, Verdict};

/// A combinator over its parts (for `not`, exactly one).
pub struct Combined {
    kind: Combinator,
    parts: Vec<Rule>,
    /// The parts' predicates, so that the policy's set includes them.
    predicates: Vec<Predicate>,
    stateful: bool,
}

impl Combined {
    pub fn new(kind: Combinator, parts: Vec<Rule>) -> Combined {
        let mut predicates: Vec<Predicate> = Vec::new();
        for p in parts.iter().flat_map(|r| r.sampler.predicates()) {
            if !predicates.contains(p) {
                predicates.push(p.clone());
            }
        }
        let stateful = parts.iter().any(|r| r.sampler.stateful());
        Combined {
            kind,
            parts,
            predicates,
            stateful,
        }
    }

    fn ask(part: &Rule, trace_id: TraceId, spans: &[SpanRecord]) -> Result<Judged, SamplerFailure> {
        part.sampler
            .judge(trace_id, spans)
            .map_err(|f| SamplerFailure {
                kind: f.kind,
                message: format!("part `{}`: {}", part.name, f.message),
            })
    }

    fn all(&self, trace_id: TraceId, spans: &[SpanRecord]) -> Result<Judged, SamplerFailure> {
        let mut applied = Applied::Everything;
        for part in &self.parts {
            let j = Self::ask(part, trace_id, spans)?;
            if j.verdict.verdict != Verdict::Keep {
                return Ok(no(format!("all: `{}` did not keep", part.name)));
            }
            applied = both(applied, j.applied);
        }
        Ok(keep("all", applied))
    }

    fn any(&self, trace_id: TraceId, spans: &[SpanRecord]) -> Result<Judged, SamplerFailure> {
        let mut best: Option<(Applied, &str)> = None;
        for part in &self.parts {
            match best {
                // Decided whatever the randomness, or by a share (first keep stands): nothing to add.
                Some((Applied::Everything | Applied::Share(_) | Applied::Unknown, _)) => break,
                // Kept consistently: only a stateless part can still raise the probability for free.
                Some((Applied::Consistent(_), _)) if part.sampler.stateful() => continue,
                _ => {}
            }
            let j = Self::ask(part, trace_id, spans)?;
            if j.verdict.verdict != Verdict::Keep {
                continue;
            }
            best = Some(match best {
                None => (j.applied, &part.name),
                Some((seen, name)) => match either(seen, j.applied) {
                    a if a == seen => (seen, name),
                    a => (a, &part.name),
                },
            });
        }
        Ok(match best {
            Some((applied, name)) => {
                let mut j = keep("any", applied);
                j.verdict.reason = Some(format!("any: `{name}` kept"));
                j
            }
            None => no("any: no part kept".to_owned()),
        })
    }

    fn not(&self, trace_id: TraceId, spans: &[SpanRecord]) -> Result<Judged, SamplerFailure> {
        let Some(part) = self.parts.first() else {
            return Ok(no("not: no part".to_owned()));
        };
        let j = Self::ask(part, trace_id, spans)?;
        if j.verdict.verdict == Verdict::Keep {
            return Ok(no(format!("not: `{}` kept", part.name)));
        }
        let by_chance = part.sampler.stateful() || j.verdict.probability.is_some_and(|p| p < 1.0);
        let applied = if by_chance {
            Applied::Unknown
        } else {
            Applied::Everything
        };
        Ok(keep("not", applied))
    }
}

/// Both kept: the effect of keeping only what both keep.
fn both(a: Applied, b: Applied) -> Applied {
    match (a, b) {
        (Applied::Everything, x) | (x, Applied::Everything) => x,
        (Applied::Consistent(p), Applied::Consistent(q)) => Applied::Consistent(p.min(q)),
        (Applied::Share(p), Applied::Share(q)) => Applied::Share(p * q),
        _ => Applied::Unknown,
    }
}

/// Either kept: `a` was seen first; consistent keeps combine to the larger probability.
fn either(a: Applied, b: Applied) -> Applied {
    match (a, b) {
        (Applied::Everything, _) | (_, Applied::Everything) => Applied::Everything,
        (Applied::Consistent(p), Applied::Consistent(q)) => Applied::Consistent(p.max(q)),
        (first, _) => first,
    }
}

fn keep(kind: &str, applied: Applied) -> Judged {
    let probability = match applied {
        Applied::Everything => Some(1.0),
        Applied::Consistent(p) | Applied::Share(p) => Some(p),
        Applied::Unknown => None,
    };
    Judged {
        verdict: SamplerVerdict {
            verdict: Verdict::Keep,
            probability,
            reason: Some(kind.to_owned()),
        },
        applied,
    }
}

fn no(reason: String) -> Judged {
    Judged {
        verdict: SamplerVerdict {
            verdict: Verdict::Abstain,
            probability: None,
            reason: Some(reason),
        },
        applied: Applied::Everything,
    }
}

impl Sampler for Combined {
    fn sample(
        &self,
        trace_id: TraceId,
        spans: &[SpanRecord],
    ) -> Result<SamplerVerdict, SamplerFailure> {
        self.judge(trace_id, spans).map(|j| j.verdict)
    }

    fn judge(&self, trace_id: TraceId, spans: &[SpanRecord]) -> Result<Judged, SamplerFailure> {
        match self.kind {
            Combinator::All => self.all(trace_id, spans),
            Combinator::Any => self.any(trace_id, spans),
            Combinator::Not => self.not(trace_id, spans),
        }
    }

    fn predicates(&self) -> &[Predicate] {
        &self.predicates
    }

    fn bind_predicates(&self, policy: &PredicateSet) -> bool {
        self.parts.iter().all(|r| r.sampler.bind_predicates(policy))
    }

    fn stateful(&self) -> bool {
        self.stateful
    }

    fn parts(&self) -> &[Rule] {
        &self.parts
    }
}

impl std::fmt::Debug for Combined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.parts.iter().map(|r| &*r.name).collect();
        write!(f, "{}({})", self.kind.name(), names.join(", "))
    }
}

/// `action: drop`: the rule drops what its sampler keeps (with the probability it reported) and
/// abstains otherwise.
pub struct Dropping(pub Rule);

impl Sampler for Dropping {
    fn sample(
        &self,
        trace_id: TraceId,
        spans: &[SpanRecord],
    ) -> Result<SamplerVerdict, SamplerFailure> {
        self.judge(trace_id, spans).map(|j| j.verdict)
    }

    fn judge(&self, trace_id: TraceId, spans: &[SpanRecord]) -> Result<Judged, SamplerFailure> {
        let j = self.0.sampler.judge(trace_id, spans)?;
        let verdict = match j.verdict.verdict {
            Verdict::Keep => Verdict::Drop,
            Verdict::Drop | Verdict::Abstain => Verdict::Abstain,
        };
        Ok(Judged {
            verdict: SamplerVerdict {
                verdict,
                probability: j.verdict.probability,
                reason: j.verdict.reason,
            },
            applied: Applied::Everything,
        })
    }

    fn predicates(&self) -> &[Predicate] {
        self.0.sampler.predicates()
    }

    fn bind_predicates(&self, policy: &PredicateSet) -> bool {
        self.0.sampler.bind_predicates(policy)
    }

    fn stateful(&self) -> bool {
        self.0.sampler.stateful()
    }

    fn parts(&self) -> &[Rule] {
        std::slice::from_ref(&self.0)
    }
}

#[cfg(test)]
mod tests;
