//! TLS for the receivers and the exporter: the `tls:` configuration blocks (the OpenTelemetry
//! Collector's key names), PEM loading with errors that name the key and the file, and the rustls
//! configurations each transport wants.
//!
//! One crypto provider, `ring`, is used everywhere (rustls, tonic, reqwest); `deny.toml` bans aws-lc so a
//! second provider never sneaks into the build.
//!
//! ```text
//!  receivers.otlp.protocols.grpc.tls ──► tonic ServerTlsConfig (tonic does the handshakes)
//!  receivers.otlp.protocols.http.tls ──► rustls ServerConfig ──► TlsListener (handshakes off the accept loop) ──► axum
//!  exporters.otlp.tls (https://)     ──► tonic ClientTlsConfig (gRPC) | rustls ClientConfig in reqwest (HTTP)
//! ```
//!
//! Certificates are read once at startup; a changed certificate takes effect on restart.

mod listener;

pub use listener::TlsListener;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// TLS on a receiver (`receivers.otlp.protocols.<grpc|http>.tls`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The server certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs (PEM), or the handshake
    /// fails (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// TLS of the exporter (`exporters.otlp.tls`), used when the endpoint is `https://`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTls {
    /// CAs (PEM) that sign the downstream's certificate. Default: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to a downstream that requires one (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// A TLS setting that cannot be used. Messages name the configuration key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} `{path}`: cannot read: {source}")]
    Read {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key} `{path}`: {reason}")]
    Pem {
        key: String,
        path: PathBuf,
        reason: String,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

/// How long a TLS handshake may take before the connection is dropped (a client that connects and says
/// nothing must not hold a slot for long).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// ALPN names: gRPC requires `h2`; OTLP/HTTP serves both.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The crypto provider of every TLS configuration tailgate builds.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes `ring` the process-wide default provider, for the configurations that tonic builds itself.
/// Idempotent; only ring is compiled in, so this only makes the choice explicit.
pub fn install_default_provider() {
    // Err means a provider is installed already (a previous call): nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The PEM text of a file, with an error naming `key`.
fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key: key.into(),
        path: path.to_owned(),
        source,
    })
}

fn pem_error(key: &str, path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Pem {
        key: key.into(),
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Every certificate in a PEM file (at least one).
fn certificates(
    key: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(key, path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(
            key,
            path,
            "no certificate found (expected PEM `-----BEGIN CERTIFICATE-----`)",
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn private_key(key: &str, path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => pem_error(
            key,
            path,
            "no private key found (expected PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        ),
        e => pem_error(key, path, format!("invalid PEM: {e}")),
    })
}

/// A root store of the CAs in a PEM file.
fn roots(key: &str, path: &Path, pem: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certificates(key, path, pem)? {
        store
            .add(cert)
            .map_err(|e| pem_error(key, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// A receiver's TLS material, read and checked: the PEM text (for tonic) and the parsed rustls
/// configuration (for the HTTP listener; for gRPC it proves the files are usable before tonic sees them).
pub struct LoadedServerTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    rustls: rustls::ServerConfig,
}

impl LoadedServerTls {
    /// Reads and checks the files of `cfg`; `prefix` is the configuration path of the block (e.g.
    /// `receivers.otlp.protocols.grpc.tls`), used in errors.
    pub fn load(cfg: &ServerTls, prefix: &str) -> Result<LoadedServerTls, TlsError> {
        let cert_key = format!("{prefix}.cert_file");
        let key_key = format!("{prefix}.key_file");
        let cert_pem = read(&cert_key, &cfg.cert_file)?;
        let key_pem = read(&key_key, &cfg.key_file)?;
        let certs = certificates(&cert_key, &cfg.cert_file, &cert_pem)?;
        let key = private_key(&key_key, &cfg.key_file, &key_pem)?;
        let invalid = |reason: String| TlsError::Invalid {
            what: prefix.to_owned(),
            reason,
        };
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?;
        let (builder, client_ca_pem) = match &cfg.client_ca_file {
            None => (builder.with_no_client_auth(), None),
            Some(path) => {
                let ca_key = format!("{prefix}.client_ca_file");
                let pem = read(&ca_key, path)?;
                let store = roots(&ca_key, path, &pem)?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(store),
                    provider,
                )
                .build()
                .map_err(|e| pem_error(&ca_key, path, e.to_string()))?;
                (builder.with_client_cert_verifier(verifier), Some(pem))
            }
        };
        let rustls = builder.with_single_cert(certs, key).map_err(|e| {
            invalid(format!(
                "cert_file `{}` and key_file `{}` cannot be used together: {e}",
                cfg.cert_file.display(),
                cfg.key_file.display()
            ))
        })?;
        Ok(LoadedServerTls {
            cert_pem,
            key_pem,
            client_ca_pem,
            rustls,
        })
    }

    /// The configuration of the OTLP/gRPC receiver (tonic performs the handshakes, off its accept loop,
    /// within [`HANDSHAKE_TIMEOUT`]).
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        install_default_provider();
        let identity = tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem);
        let mut tls = tonic::transport::ServerTlsConfig::new()
            .identity(identity)
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca_pem {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        tls
    }

    /// The configuration of the OTLP/HTTP receiver (ALPN `h2` and `http/1.1`).
    pub fn http(self) -> Arc<rustls::ServerConfig> {
        let mut config = self.rustls;
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Arc::new(config)
    }
}

/// The exporter's client certificate and key: paths and PEM text.
struct ClientIdentity {
    cert_path: PathBuf,
    cert: Vec<u8>,
    key_path: PathBuf,
    key: Vec<u8>,
}

/// The exporter's client certificate, when configured (both files, or neither).
fn client_identity(cfg: &ClientTls) -> Result<Option<ClientIdentity>, TlsError> {
    match (&cfg.cert_file, &cfg.key_file) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(ClientIdentity {
            cert_path: cert.clone(),
            cert: read("exporters.otlp.tls.cert_file", cert)?,
            key_path: key.clone(),
            key: read("exporters.otlp.tls.key_file", key)?,
        })),
        _ => Err(TlsError::Invalid {
            what: "exporters.otlp.tls".into(),
            reason: "cert_file and key_file must be set together".into(),
        }),
    }
}

/// The OTLP/gRPC exporter's TLS: the CAs of `ca_file` (or the system's), and the client certificate.
pub fn grpc_client(cfg: &ClientTls) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    install_default_provider();
    let mut tls = tonic::transport::ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
    tls = match &cfg.ca_file {
        Some(path) => {
            let key = "exporters.otlp.tls.ca_file";
            let pem = read(key, path)?;
            roots(key, path, &pem)?;
            tls.ca_certificate(tonic::transport::Certificate::from_pem(pem))
        }
        None => tls.with_native_roots(),
    };
    if let Some(id) = client_identity(cfg)? {
        certificates("exporters.otlp.tls.cert_file", &id.cert_path, &id.cert)?;
        private_key("exporters.otlp.tls.key_file", &id.key_path, &id.key)?;
        tls = tls.identity(tonic::transport::Identity::from_pem(id.cert, id.key));
    }
    Ok(tls)
}

/// The OTLP/HTTP exporter's TLS (for reqwest): the CAs of `ca_file` (or the system's), the client
/// certificate, ALPN `h2` and `http/1.1`.
pub fn http_client(cfg: &ClientTls) -> Result<rustls::ClientConfig, TlsError> {
    let store = match &cfg.ca_file {
        Some(path) => {
            let key = "exporters.otlp.tls.ca_file";
            roots(key, path, &read(key, path)?)?
        }
        None => system_roots()?,
    };
    let invalid = |reason: String| TlsError::Invalid {
        what: "exporters.otlp.tls".into(),
        reason,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(store);
    let mut config = match client_identity(cfg)? {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let certs = certificates("exporters.otlp.tls.cert_file", &id.cert_path, &id.cert)?;
            let key = private_key("exporters.otlp.tls.key_file", &id.key_path, &id.key)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                invalid(format!(
                    "cert_file and key_file cannot be used together: {e}"
                ))
            })?
        }
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// The system's trust store (what `ca_file` replaces).
fn system_roots() -> Result<rustls::RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "could not read part of the system's trust store");
    }
    let mut store = rustls::RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Invalid {
            what: "exporters.otlp.tls".into(),
            reason: "no CA certificates in the system's trust store; set ca_file".into(),
        });
    }
    Ok(store)
}

/// Resolves the relative paths of a receiver's TLS block against `base` (the config file's folder).
pub fn resolve_server_paths(tls: &mut ServerTls, base: &Path) {
    for path in [&mut tls.cert_file, &mut tls.key_file]
        .into_iter()
        .chain(tls.client_ca_file.as_mut())
    {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    }
}

/// Resolves the relative paths of the exporter's TLS block against `base`.
pub fn resolve_client_paths(tls: &mut ClientTls, base: &Path) {
    for path in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file]
        .into_iter()
        .flatten()
    {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    }
}

#[cfg(test)]
mod tests;
