//! The strict fallback scrub applied when a redactor fails (`on_redactor_failure: strict_scrub`): keeps
//! only attributes whose keys are on an allow-list of safe semantic-convention keys, clears status
//! messages and every event and link attribute, and (if configured) replaces span and event names.

use super::apply::{add_audit, decode_resource, decode_scope, decode_span, rescan};
use super::{ApplyError, RedactionSettings, STRICT_SCRUB_RULE};
use crate::otlp::{ExportBuilder, Origin, SpanRecord};
use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Keys the strict scrub keeps by default: identify the service and the operation's shape, never a person
/// or a payload. Values of these keys are kept as they are.
pub const DEFAULT_STRICT_ALLOW_LIST: &[&str] = &[
    // resource
    "service.name",
    "service.namespace",
    "service.version",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "telemetry.sdk.name",
    "telemetry.sdk.language",
    "telemetry.sdk.version",
    "telemetry.auto.version",
    "telemetry.distro.name",
    "telemetry.distro.version",
    "process.runtime.name",
    "process.runtime.version",
    "host.arch",
    "os.type",
    "cloud.provider",
    "cloud.platform",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "container.image.name",
    // span
    "http.request.method",
    "http.method",
    "http.response.status_code",
    "http.status_code",
    "http.route",
    "url.scheme",
    "network.protocol.name",
    "network.protocol.version",
    "network.transport",
    "server.port",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "rpc.grpc.status_code",
    "db.system",
    "db.system.name",
    "db.operation",
    "db.operation.name",
    "db.collection.name",
    "db.namespace",
    "db.response.status_code",
    "messaging.system",
    "messaging.operation",
    "messaging.operation.type",
    "messaging.operation.name",
    "messaging.destination.name",
    "error.type",
    "exception.type",
    "otel.status_code",
    "code.function",
    "code.function.name",
    "code.namespace",
    "tailgate.rule",
    "tailgate.redacted.count",
    "tailgate.redacted.rules",
];

/// What a scrubbed span and event name become when `strict_scrub_names` is set.
const SCRUBBED_NAME: &str = "redacted";

/// Scrubs every span of a trace. Each span gets the audit attributes with rule `strict_scrub` and the
/// number of values removed or cleared.
pub fn strict_scrub(
    spans: &[SpanRecord],
    settings: &RedactionSettings,
) -> Result<Vec<SpanRecord>, ApplyError> {
    let allow = &settings.strict_allow_list;
    let mut origins: HashMap<(usize, usize), (Arc<Origin>, i64)> = HashMap::new();
    let mut builder = ExportBuilder::new();
    for s in spans {
        let key = (Arc::as_ptr(&s.origin) as usize, 0);
        let (origin, origin_removed) = origins
            .entry(key)
            .or_insert_with(|| {
                let mut removed = 0;
                let mut r = decode_resource(&s.origin);
                if let Some(res) = r.resource.as_mut() {
                    removed += filter(&mut res.attributes, allow);
                }
                let mut sc = decode_scope(&s.origin);
                if let Some(scope) = sc.scope.as_mut() {
                    removed += filter(&mut scope.attributes, allow);
                }
                let o = Origin {
                    resource_fields: Bytes::from(r.encode_to_vec()),
                    scope_fields: Bytes::from(sc.encode_to_vec()),
                    service_name: "".into(),
                };
                (Arc::new(o), removed)
            })
            .clone();
        let mut span = decode_span(s);
        let mut removed = origin_removed + filter(&mut span.attributes, allow);
        if let Some(st) = span.status.as_mut().filter(|st| !st.message.is_empty()) {
            st.message.clear();
            removed += 1;
        }
        for e in &mut span.events {
            removed += e.attributes.len() as i64;
            e.attributes.clear();
            if settings.strict_scrub_names && !e.name.is_empty() {
                e.name = SCRUBBED_NAME.into();
                removed += 1;
            }
        }
        for k in &mut span.links {
            removed += k.attributes.len() as i64;
            k.attributes.clear();
        }
        if settings.strict_scrub_names && !span.name.is_empty() {
            span.name = SCRUBBED_NAME.into();
            removed += 1;
        }
        add_audit(&mut span.attributes, removed, STRICT_SCRUB_RULE);
        builder.push_raw(&origin, Bytes::from(span.encode_to_vec()), Bytes::new());
    }
    rescan(builder, spans.len())
}

/// Keeps the allow-listed attributes; returns how many were removed.
fn filter(attrs: &mut Vec<KeyValue>, allow: &HashSet<String>) -> i64 {
    let before = attrs.len();
    attrs.retain(|kv| allow.contains(&kv.key));
    (before - attrs.len()) as i64
}
