//! The PII corpus of `tailgate::testing::pii_corpus` (personal data planted in every field kind and value
//! type a span can carry, plus near-misses that must survive; the host's `redaction_corpus` test runs
//! the same one), which the `leaks` measurement sends through tailgate and the Collector. [`flatten`]
//! renders every text an exported request carries.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
pub use tailgate::testing::pii_corpus::{NEAR_MISSES, PLANTED, corpus};

/// Every piece of text the request carries (resource, scope, span, event and link attributes of every
/// value type rendered as text, span names, status messages, event names), one per line.
pub fn flatten(req: &ExportTraceServiceRequest) -> String {
    fn value(out: &mut String, v: Option<&AnyValue>) {
        match v.and_then(|v| v.value.as_ref()) {
            None | Some(Value::StringValueStrindex(_)) => {}
            Some(Value::StringValue(s)) => out.push_str(s),
            Some(Value::BoolValue(b)) => out.push_str(&b.to_string()),
            Some(Value::IntValue(i)) => out.push_str(&i.to_string()),
            Some(Value::DoubleValue(d)) => out.push_str(&d.to_string()),
            Some(Value::BytesValue(b)) => out.push_str(&String::from_utf8_lossy(b)),
            Some(Value::ArrayValue(a)) => a.values.iter().for_each(|i| {
                value(out, Some(i));
                out.push('\n');
            }),
            Some(Value::KvlistValue(l)) => attrs(out, &l.values),
        }
    }
    fn attrs(out: &mut String, kvs: &[KeyValue]) {
        for kv in kvs {
            out.push_str(&kv.key);
            out.push('=');
            value(out, kv.value.as_ref());
            out.push('\n');
        }
    }
    let mut out = String::new();
    for rs in &req.resource_spans {
        if let Some(r) = &rs.resource {
            attrs(&mut out, &r.attributes);
        }
        for ss in &rs.scope_spans {
            if let Some(sc) = &ss.scope {
                attrs(&mut out, &sc.attributes);
            }
            for sp in &ss.spans {
                out.push_str(&sp.name);
                out.push('\n');
                if let Some(st) = &sp.status {
                    out.push_str(&st.message);
                    out.push('\n');
                }
                attrs(&mut out, &sp.attributes);
                for e in &sp.events {
                    out.push_str(&e.name);
                    out.push('\n');
                    attrs(&mut out, &e.attributes);
                }
                for l in &sp.links {
                    attrs(&mut out, &l.attributes);
                }
            }
        }
    }
    out
}
