//! The admin HTTP server: `GET /healthz` (200 once the receivers listen), `GET /health` (the same as JSON,
//! with each plugin's recent failures and `degraded` when one keeps failing, see [`crate::health`]),
//! `GET /metrics` (Prometheus text), `POST /reload` (reload the configuration file, answer with the
//! outcome as JSON), and the status page with `/api/status` and `/debug/traces/{id}` ([`crate::status`]).
//! Binds to localhost by default; with `admin.token` set, every method other than `GET`/`HEAD` requires
//! `Authorization: Bearer <token>` (401 otherwise).

use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::reload::{Reloader, Trigger};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

/// Shared state of the admin endpoints.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// Set once every receiver is listening.
    pub ready: Arc<AtomicBool>,
    /// Present when tailgate runs from a configuration file, which `POST /reload` re-reads.
    pub reloader: Option<Arc<Reloader>>,
    /// `admin.token`: required by every method other than `GET` and `HEAD`.
    pub token: Option<Arc<Authenticator>>,
    /// The status page, `/api/status` and `/debug/traces/{id}` (see [`crate::status`]).
    pub status: Arc<crate::status::StatusContext>,
    /// `POST /rescue`, when `buffer.second_chance` is on.
    pub rescuer: Option<crate::pipeline::Rescuer>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let token = state.token.clone();
    let status = crate::status::router(state.status.clone());
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
        .route("/rescue", post(rescue))
        .route("/api/service-graph", get(service_graph))
        .with_state(state)
        .merge(status);
    match token {
        Some(token) => router.layer(axum::middleware::from_fn_with_state(token, require_token)),
        None => router,
    }
}

/// Lets reads through and requires the admin token for everything that changes state.
async fn require_token(
    State(token): State<Arc<Authenticator>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    match token.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(failure) => {
            tracing::warn!(method = %req.method(), path = req.uri().path(), error = %failure, "admin request refused");
            let body = serde_json::json!({ "ok": false, "error": failure.to_string() });
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"tailgate-admin\"")],
                Json(body),
            )
                .into_response()
        }
    }
}

/// The body of `POST /rescue`: trace ids, or a condition over the held traces' spans (see
/// [`crate::pipeline::RescueCondition`]), and an optional reason written into `tailgate.rescued_by`.
/// (Unknown keys are refused by the flattened condition.)
#[derive(Debug, serde::Deserialize)]
struct RescueRequest {
    #[serde(default)]
    trace_ids: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(flatten)]
    condition: crate::pipeline::RescueCondition,
}

/// Brings held dropped traces back (`buffer.second_chance`): `{"trace_ids": [...]}` or a condition
/// (`service`, `span_name`, `error`, `since_unix_ms`, `until_unix_ms`), with an optional `reason`.
/// Answers `{"ok": true, "rescued": N, "trace_ids": [...]}`: the traces queued for export, each marked
/// `tailgate.rescued_by: request:<reason>`.
async fn rescue(State(s): State<AdminState>, body: axum::body::Bytes) -> impl IntoResponse {
    let fail = |code: StatusCode, error: String| {
        (
            code,
            Json(serde_json::json!({ "ok": false, "error": error })),
        )
    };
    let Some(rescuer) = s.rescuer.as_ref() else {
        return fail(
            StatusCode::CONFLICT,
            "the second chance is off: set buffer.second_chance.grace to hold dropped traces"
                .into(),
        );
    };
    let req: RescueRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("bad rescue request: {e}")),
    };
    if req.trace_ids.is_empty() == req.condition.is_empty() {
        return fail(
            StatusCode::BAD_REQUEST,
            "give either trace_ids or a condition (service, span_name, error, since_unix_ms, \
             until_unix_ms), not both and not neither"
                .into(),
        );
    }
    let by = match req.reason.as_deref().map(reason_label) {
        Some(r) if !r.is_empty() => format!("request:{r}"),
        _ => "request".to_owned(),
    };
    let queued = if req.trace_ids.is_empty() {
        rescuer.rescue_matching(&req.condition, &by).await
    } else {
        let mut ids = Vec::with_capacity(req.trace_ids.len());
        for t in &req.trace_ids {
            match crate::explain::parse_trace_id(t) {
                Ok(id) => ids.push(id),
                Err(e) => return fail(StatusCode::BAD_REQUEST, e),
            }
        }
        rescuer.rescue_ids(&ids, &by).await
    };
    tracing::info!(rescued = queued.len(), by = %by, "rescue requested");
    let ids: Vec<String> = queued.iter().map(|id| format!("{id:032x}")).collect();
    (
        StatusCode::OK,
        Json(
            serde_json::json!({ "ok": true, "rescued": ids.len(), "trace_ids": ids, "rescued_by": by }),
        ),
    )
}

/// A request's reason as written into spans: `[A-Za-z0-9_.:-]` (others become `_`), at most 64 characters.
fn reason_label(r: &str) -> String {
    r.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The service graph (from every trace, before sampling) as JSON, for the status page.
async fn service_graph(State(s): State<AdminState>) -> impl IntoResponse {
    axum::Json(s.metrics.topology.graph())
}

/// 200 while tailgate serves (`ok`, or `degraded: ...` naming the plugins that keep failing: tailgate
/// still works, applying their failure policies), 503 before the receivers listen.
async fn healthz(State(s): State<AdminState>) -> impl IntoResponse {
    if !s.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_owned());
    }
    let degraded = s.metrics.plugin_health.degraded();
    if degraded.is_empty() {
        return (StatusCode::OK, "ok\n".to_owned());
    }
    let names: Vec<String> = degraded
        .iter()
        .map(|p| {
            format!(
                "{} ({} of its last {} calls failed)",
                p.plugin, p.recent_failures, p.recent_calls
            )
        })
        .collect();
    (
        StatusCode::OK,
        format!("degraded: plugin {}\n", names.join(", plugin ")),
    )
}

/// `{"status": "ok" | "degraded" | "starting", "degraded_plugins": [...], "plugins": [...]}`; 200 unless
/// starting (503).
async fn health(State(s): State<AdminState>) -> impl IntoResponse {
    let plugins = s.metrics.plugin_health.snapshot();
    let degraded: Vec<&str> = plugins
        .iter()
        .filter(|p| p.degraded)
        .map(|p| p.plugin.as_str())
        .collect();
    let ready = s.ready.load(Ordering::Relaxed);
    let status = match (ready, degraded.is_empty()) {
        (false, _) => "starting",
        (true, true) => "ok",
        (true, false) => "degraded",
    };
    let body = serde_json::json!({
        "status": status,
        "degraded_plugins": degraded,
        "plugins": plugins,
        "window_calls": crate::health::WINDOW,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// 200 with the outcome when the new policy is in force; 422 with the outcome (`ok: false` and the error)
/// when the reload was refused and the running policy stays; 409 when there is no file to reload.
async fn reload(State(s): State<AdminState>) -> impl IntoResponse {
    let Some(reloader) = s.reloader else {
        let body = serde_json::json!({
            "ok": false,
            "error": "tailgate was started without a configuration file: there is nothing to reload",
        });
        return (StatusCode::CONFLICT, Json(body));
    };
    let outcome = reloader.reload(Trigger::Admin).await;
    let status = if outcome.ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = serde_json::to_value(&outcome)
        .unwrap_or_else(|e| serde_json::json!({"ok": outcome.ok, "error": e.to_string()}));
    (status, Json(body))
}

/// Serves the admin API until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
