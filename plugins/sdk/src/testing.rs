//! Builders for unit-testing plugin logic natively.

use crate::{AttributeLevel, AttributeValue, ProjectedAttribute, TraceId, TraceSummary};

/// A summary of a healthy 1-span trace at t = 1 s lasting 1 ms; adjust the fields a test cares about.
pub fn summary() -> TraceSummary {
    TraceSummary {
        trace_id: TraceId { hi: 1, lo: 2 },
        randomness: 2,
        span_count: 1,
        error_span_count: 0,
        start_unix_nano: 1_000_000_000,
        end_unix_nano: 1_001_000_000,
        duration_nanos: 1_000_000,
        root: None,
        service_name: "svc".into(),
        service_count: 1,
        now_unix_nano: 2_000_000_000,
    }
}

/// A projected span attribute.
pub fn span_attr(span_index: u32, key_index: u32, value: AttributeValue) -> ProjectedAttribute {
    ProjectedAttribute {
        span_index,
        level: AttributeLevel::Span,
        key_index,
        value,
    }
}

/// A projected resource attribute.
pub fn resource_attr(span_index: u32, key_index: u32, value: AttributeValue) -> ProjectedAttribute {
    ProjectedAttribute {
        span_index,
        level: AttributeLevel::Resource,
        key_index,
        value,
    }
}
