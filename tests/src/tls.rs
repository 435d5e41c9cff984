//! Test certificates made at test time (rcgen) and a TLS capture server that stands in for a Jaeger
//! behind TLS: OTLP/gRPC served by tonic's TLS and OTLP/HTTP served by hyper over tokio-rustls, neither
//! sharing code with tailgate's own TLS.

use crate::WAIT;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A small PKI in a temporary folder: a CA, a server certificate for `localhost` and `127.0.0.1`, a
/// client certificate from the same CA, and a client certificate from another, untrusted CA.
pub struct TestPki {
    pub dir: PathBuf,
    /// The CA that signs `server` and `client`.
    pub ca: PathBuf,
    pub server: PemPair,
    pub client: PemPair,
    /// Signed by a CA nobody trusts.
    pub rogue_client: PemPair,
}

fn ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(
    dir: &Path,
    name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> anyhow::Result<PemPair> {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    // Python 3.13's ssl verifies strictly (VERIFY_X509_STRICT): it wants the issuer's key identifier.
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &**issuer)?;
    let pair = PemPair {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&pair.cert, cert.pem())?;
    std::fs::write(&pair.key, key.serialize_pem())?;
    Ok(pair)
}

impl TestPki {
    /// Generates everything into a fresh temporary folder.
    pub fn generate() -> anyhow::Result<TestPki> {
        let dir = std::env::temp_dir().join(format!(
            "tailgate-pki-{}-{:x}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir)?;
        let authority = ca("tailgate test CA")?;
        let rogue = ca("rogue CA")?;
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, authority.as_ref().pem())?;
        let hosts = ["localhost", "127.0.0.1"];
        Ok(TestPki {
            ca: ca_path,
            server: leaf(
                &dir,
                "server",
                &hosts,
                ExtendedKeyUsagePurpose::ServerAuth,
                &authority,
            )?,
            client: leaf(
                &dir,
                "client",
                &["client"],
                ExtendedKeyUsagePurpose::ClientAuth,
                &authority,
            )?,
            rogue_client: leaf(
                &dir,
                "rogue",
                &["rogue"],
                ExtendedKeyUsagePurpose::ClientAuth,
                &rogue,
            )?,
            dir,
        })
    }

    /// The CA certificate's PEM text.
    pub fn ca_pem(&self) -> anyhow::Result<Vec<u8>> {
        Ok(std::fs::read(&self.ca)?)
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// A capture server over TLS that requires a client certificate signed by the PKI's CA, and counts the
/// spans it accepts on each protocol.
pub struct TlsCapture {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    spans: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TlsCapture {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Counter(Arc<AtomicUsize>);

fn count(spans: &AtomicUsize, req: &ExportTraceServiceRequest) {
    let n: usize = req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    spans.fetch_add(n, Ordering::SeqCst);
}

#[tonic::async_trait]
impl TraceService for Counter {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        count(&self.0, request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl TlsCapture {
    /// Starts both endpoints on 127.0.0.1 with `pki.server`, requiring client certificates from `pki.ca`.
    pub async fn start(pki: &TestPki) -> anyhow::Result<TlsCapture> {
        let spans = Arc::new(AtomicUsize::new(0));
        let cert = std::fs::read(&pki.server.cert)?;
        let key = std::fs::read(&pki.server.key)?;
        let ca = pki.ca_pem()?;

        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let grpc_addr = grpc.local_addr()?;
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&cert, &key))
            .client_ca_root(tonic::transport::Certificate::from_pem(&ca));
        let service = TraceServiceServer::new(Counter(spans.clone()))
            .accept_compressed(CompressionEncoding::Gzip);
        let server = tonic::transport::Server::builder().tls_config(tls)?;
        let grpc_task = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(grpc);
            let mut server = server;
            if let Err(e) = server
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
            {
                eprintln!("TLS capture gRPC server failed: {e}");
            }
        });

        let http = TcpListener::bind("127.0.0.1:0").await?;
        let http_addr = http.local_addr()?;
        let config = http_server_config(&cert, &key, &ca)?;
        let http_task = tokio::spawn(serve_http(http, config, spans.clone()));
        Ok(TlsCapture {
            grpc_addr,
            http_addr,
            spans,
            tasks: vec![grpc_task, http_task],
        })
    }

    /// `https://127.0.0.1:PORT` of the gRPC endpoint.
    pub fn grpc_endpoint(&self) -> String {
        format!("https://{}", self.grpc_addr)
    }

    /// `https://127.0.0.1:PORT` of the HTTP endpoint.
    pub fn http_endpoint(&self) -> String {
        format!("https://{}", self.http_addr)
    }

    /// Spans accepted so far on both endpoints.
    pub fn spans(&self) -> usize {
        self.spans.load(Ordering::SeqCst)
    }

    /// Waits (at most [`WAIT`]) until `n` spans have arrived.
    pub async fn wait_for_spans(&self, n: usize) -> anyhow::Result<()> {
        crate::poll_until(
            &format!("{n} spans at the TLS capture server"),
            WAIT,
            || (self.spans() >= n).then_some(()),
        )
        .await
    }
}

fn http_server_config(
    cert: &[u8],
    key: &[u8],
    ca: &[u8],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        roots.add(c?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let certs = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, PrivateKeyDer::from_pem_slice(key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TLS connections and answers `POST /v1/traces` (protobuf, gzip or not) on each.
async fn serve_http(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    spans: Arc<AtomicUsize>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, spans) = (acceptor.clone(), spans.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let spans = spans.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let gzip = req
                            .headers()
                            .get("content-encoding")
                            .is_some_and(|v| v.as_bytes() == b"gzip");
                        let body = req.into_body().collect().await?.to_bytes();
                        let raw = if gzip {
                            let mut out = Vec::new();
                            flate2::read::GzDecoder::new(&body[..])
                                .read_to_end(&mut out)
                                .ok();
                            out
                        } else {
                            body.to_vec()
                        };
                        let status = match ExportTraceServiceRequest::decode(&raw[..]) {
                            Ok(req) => {
                                count(&spans, &req);
                                200
                            }
                            Err(_) => 400,
                        };
                        let mut resp =
                            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(
                                ExportTraceServiceResponse::default().encode_to_vec(),
                            )));
                        *resp.status_mut() =
                            hyper::StatusCode::from_u16(status).unwrap_or_default();
                        Ok::<_, hyper::Error>(resp)
                    }
                });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
        });
    }
}
