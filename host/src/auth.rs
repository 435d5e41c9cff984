//! Authentication of OTLP clients and of the admin API's `POST` endpoints: a static bearer token
//! (`Authorization: Bearer <token>`) or a named header with a fixed value (e.g. `x-api-key`).
//!
//! The presented credential is hashed (SHA-256) and the digest compared with the configured one in
//! constant time (`subtle`), so neither the content nor the length of the secret leaks through timing.
//! Secrets are held in [`Secret`], whose `Debug` never prints them, and no log line carries one.
//! A receiver without `auth:` has no check at all on its request path.

use crate::metrics::{Metrics, RefusedLabels};
use http::header::{AUTHORIZATION, HeaderName, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What `tailgate config print` writes in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// A configuration value that must never be printed (tokens, keys). Usually `${env:NAME}`.
#[derive(Clone, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

/// Written as `<redacted>` (`tailgate config print`): a secret never leaves through serialization.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; only for building a request or an [`Authenticator`].
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `auth:` of a receiver: exactly one of `bearer_token` or `header`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Requests must carry `Authorization: Bearer <bearer_token>` (gRPC: `authorization` metadata).
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Requests must carry this header with this value.
    #[serde(default)]
    pub header: Option<HeaderAuth>,
}

/// A header that must be present with a given value.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderAuth {
    /// Header name (case-insensitive), e.g. `x-api-key`.
    pub name: String,
    pub value: Secret,
}

/// Why an `auth:` block or an admin token cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct AuthError {
    pub key: String,
    pub reason: String,
}

impl AuthConfig {
    /// Checks the block; `key` is its configuration path, used in errors.
    pub fn validate(&self, key: &str) -> Result<(), AuthError> {
        Authenticator::new(self, key).map(|_| ())
    }
}

/// Why a request was refused. The messages go to the client; they never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("authentication required: send the `{header}` header{hint}")]
    Missing {
        header: HeaderName,
        hint: &'static str,
    },
    #[error("invalid credentials in the `{header}` header")]
    Invalid { header: HeaderName },
}

/// Checks one credential in constant time.
#[derive(Clone)]
pub struct Authenticator {
    header: HeaderName,
    /// `Authorization: Bearer <token>` rather than a bare header value.
    bearer: bool,
    digest: [u8; 32],
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("header", &self.header)
            .field("bearer", &self.bearer)
            .finish_non_exhaustive()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Authenticator {
    /// From an `auth:` block; `key` names the block in errors.
    pub fn new(cfg: &AuthConfig, key: &str) -> Result<Authenticator, AuthError> {
        let err = |reason: &str| AuthError {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        match (&cfg.bearer_token, &cfg.header) {
            (Some(token), None) => Authenticator::bearer(token, &format!("{key}.bearer_token")),
            (None, Some(h)) => {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| err("header.name is not a valid HTTP header name"))?;
                check_value(h.value.expose(), &format!("{key}.header.value"))?;
                Ok(Authenticator {
                    header: name,
                    bearer: false,
                    digest: digest(h.value.expose().as_bytes()),
                })
            }
            (None, None) => Err(err("set bearer_token or header")),
            (Some(_), Some(_)) => Err(err("set bearer_token or header, not both")),
        }
    }

    /// `Authorization: Bearer <token>`; `key` names the token in errors.
    pub fn bearer(token: &Secret, key: &str) -> Result<Authenticator, AuthError> {
        check_value(token.expose(), key)?;
        Ok(Authenticator {
            header: AUTHORIZATION,
            bearer: true,
            digest: digest(token.expose().as_bytes()),
        })
    }

    /// Whether `headers` carry the credential.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        let Some(value) = headers.get(&self.header) else {
            return Err(AuthFailure::Missing {
                header: self.header.clone(),
                hint: if self.bearer {
                    " with `Bearer <token>`"
                } else {
                    ""
                },
            });
        };
        let invalid = || AuthFailure::Invalid {
            header: self.header.clone(),
        };
        let presented = if self.bearer {
            bearer_token(value.as_bytes()).ok_or_else(invalid)?
        } else {
            value.as_bytes()
        };
        if bool::from(digest(presented).ct_eq(&self.digest)) {
            Ok(())
        } else {
            Err(invalid())
        }
    }

    /// Whether this is a bearer-token check (for `WWW-Authenticate`).
    pub fn is_bearer(&self) -> bool {
        self.bearer
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, as RFC 7235 says).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// A credential must be non-empty and sendable as a header value.
fn check_value(value: &str, key: &str) -> Result<(), AuthError> {
    let err = |reason: &str| AuthError {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    if value.is_empty() {
        return Err(err("must not be empty"));
    }
    if value.trim() != value || !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(err(
            "must be printable ASCII without leading or trailing spaces (it is sent in a header)",
        ));
    }
    Ok(())
}

/// A receiver's check: the authenticator, and where refusals are counted
/// (`tailgate_requests_refused_total{reason="unauthenticated"}`).
#[derive(Clone)]
pub struct ReceiverAuth {
    pub authenticator: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    /// Metric label of the receiver (`grpc` or `http`).
    pub receiver: &'static str,
}

impl ReceiverAuth {
    /// Checks a request's headers; a refusal is counted and logged (without any credential).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        self.authenticator.check(headers).inspect_err(|failure| {
            self.metrics
                .requests_refused
                .get_or_create(&RefusedLabels {
                    receiver: self.receiver,
                    reason: "unauthenticated",
                })
                .inc();
            tracing::debug!(receiver = self.receiver, error = %failure, "refused unauthenticated OTLP request");
        })
    }

    /// The gRPC answer to a refused request: `UNAUTHENTICATED` with the reason.
    pub fn grpc_status(failure: AuthFailure) -> tonic::Status {
        tonic::Status::unauthenticated(failure.to_string())
    }

    /// The OTLP/HTTP answer to a refused request: 401 with a `google.rpc.Status` body in the request's
    /// content type (JSON unless it asked for protobuf) and `WWW-Authenticate` for bearer tokens.
    pub fn http_response(
        &self,
        failure: AuthFailure,
        headers: &HeaderMap,
    ) -> http::Response<axum::body::Body> {
        let message = failure.to_string();
        let protobuf = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf"));
        let code = tonic::Code::Unauthenticated as i32;
        let (content_type, body) = if protobuf {
            let status = crate::otlp::rpc::RpcStatus {
                code,
                message,
                details: Vec::new(),
            };
            ("application/x-protobuf", status.encode_to_vec())
        } else {
            let body = serde_json::json!({ "code": code, "message": message });
            ("application/json", body.to_string().into_bytes())
        };
        let mut response = http::Response::new(axum::body::Body::from(body));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        if self.authenticator.is_bearer() {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tailgate\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests;
