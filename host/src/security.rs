//! The receivers' and the admin API's TLS and authentication, loaded once at startup from the
//! configuration (see [`crate::tls`] and [`crate::auth`]) and handed to each server.

use crate::auth::{AuthError, Authenticator, ReceiverAuth};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::tls::{LoadedServerTls, TlsError};
use std::sync::Arc;

/// Why the receivers' or the admin API's security could not be loaded; names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// What each server gets: `None` everywhere means plaintext and no checks (the default).
#[derive(Clone, Default)]
pub struct ReceiverSecurity {
    pub grpc_tls: Option<tonic::transport::ServerTlsConfig>,
    pub grpc_auth: Option<ReceiverAuth>,
    pub http_tls: Option<Arc<rustls::ServerConfig>>,
    pub http_auth: Option<ReceiverAuth>,
    pub admin_token: Option<Arc<Authenticator>>,
}

impl ReceiverSecurity {
    /// Reads the certificate files and builds the checks; errors name the key and the file.
    pub fn load(cfg: &Config, metrics: &Arc<Metrics>) -> Result<ReceiverSecurity, SecurityError> {
        let mut out = ReceiverSecurity::default();
        let p = &cfg.receivers.otlp.protocols;
        let auth = |c: &crate::auth::AuthConfig, name: &'static str| {
            Authenticator::new(c, &format!("receivers.otlp.protocols.{name}.auth")).map(|a| {
                ReceiverAuth {
                    authenticator: Arc::new(a),
                    metrics: metrics.clone(),
                    receiver: name,
                }
            })
        };
        if let Some(g) = &p.grpc {
            if let Some(tls) = &g.tls {
                let loaded = LoadedServerTls::load(tls, "receivers.otlp.protocols.grpc.tls")?;
                out.grpc_tls = Some(loaded.grpc());
            }
            out.grpc_auth = g.auth.as_ref().map(|c| auth(c, "grpc")).transpose()?;
            warn_cleartext("grpc", g.endpoint, g.tls.is_some(), g.auth.is_some());
        }
        if let Some(h) = &p.http {
            if let Some(tls) = &h.tls {
                let loaded = LoadedServerTls::load(tls, "receivers.otlp.protocols.http.tls")?;
                out.http_tls = Some(loaded.http());
            }
            out.http_auth = h.auth.as_ref().map(|c| auth(c, "http")).transpose()?;
            warn_cleartext("http", h.endpoint, h.tls.is_some(), h.auth.is_some());
        }
        if let Some(token) = &cfg.admin.token {
            out.admin_token = Some(Arc::new(Authenticator::bearer(token, "admin.token")?));
        } else if !cfg.admin.endpoint.ip().is_loopback() {
            tracing::warn!(
                endpoint = %cfg.admin.endpoint,
                "the admin server listens beyond localhost without admin.token: anyone who can reach it can POST /reload"
            );
        }
        Ok(out)
    }
}

/// A credential sent without TLS to a non-local address can be read off the network: say so once.
fn warn_cleartext(receiver: &str, endpoint: std::net::SocketAddr, tls: bool, auth: bool) {
    if auth && !tls && !endpoint.ip().is_loopback() {
        tracing::warn!(
            receiver,
            %endpoint,
            "receiver authentication is configured without TLS: credentials cross the network in clear text"
        );
    }
}
