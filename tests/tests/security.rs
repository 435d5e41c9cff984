//! Security end to end: TLS and mutual TLS on both receivers (the OpenTelemetry Python SDK and Rust
//! clients), bearer-token and header authentication, the exporter to a mutual-TLS downstream, and the
//! admin token on `POST /reload`. Certificates are made at test time; everything is on 127.0.0.1.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tailgate::app::RunningApp;
use tailgate::config::Config;
use tailgate_e2e::WAIT;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::metric_sum;
use tailgate_e2e::python::run_script;
use tailgate_e2e::tls::{PemPair, TestPki, TlsCapture};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const TOKEN: &str = "s3cret-grpc-token-0123456789";
const API_KEY: &str = "s3cret-http-key-0123456789";

/// A request with spans of one fresh trace.
fn request(trace: u128) -> ExportTraceServiceRequest {
    let mut r = tailgate::testing::sample_request();
    for s in r
        .resource_spans
        .iter_mut()
        .flat_map(|rs| rs.scope_spans.iter_mut())
        .flat_map(|ss| ss.spans.iter_mut())
    {
        s.trace_id = trace.to_be_bytes().to_vec();
    }
    r
}

fn span_count(r: &ExportTraceServiceRequest) -> usize {
    tailgate_e2e::otlp::flatten(r).len()
}

/// YAML for tailgate with TLS (and client certificates from the PKI's CA) on both receivers, a bearer
/// token on gRPC, an `x-api-key` header on HTTP, exporting to `capture` over plaintext gRPC.
fn secure_receivers_yaml(pki: &TestPki, capture: &str) -> String {
    let tls = |indent: &str| {
        format!(
            "{indent}tls:\n{indent}  cert_file: {}\n{indent}  key_file: {}\n{indent}  client_ca_file: {}\n",
            pki.server.cert.display(),
            pki.server.key.display(),
            pki.ca.display()
        )
    };
    format!(
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
{grpc_tls}        auth:
          bearer_token: {TOKEN}
      http:
        endpoint: 127.0.0.1:0
{http_tls}        auth:
          header:
            name: x-api-key
            value: {API_KEY}
exporters:
  otlp:
    endpoint: "{capture}"
    batch:
      timeout: 50ms
buffer:
  settle: 100ms
  idle_timeout: 1s
  max_buffer_bytes: 64MiB
policy:
  default: keep
admin:
  endpoint: 127.0.0.1:0
"#,
        grpc_tls = tls("        "),
        http_tls = tls("        "),
    )
}

async fn start(yaml: &str) -> anyhow::Result<RunningApp> {
    tailgate_e2e::init_logging();
    let config = Config::parse(yaml, "security test config")?;
    Ok(tailgate::app::start(config).await?)
}

async fn metrics(app: &RunningApp) -> anyhow::Result<String> {
    let url = format!("http://{}/metrics", app.admin_addr);
    Ok(reqwest::get(url).await?.text().await?)
}

/// A gRPC client over TLS trusting the PKI's CA, with an optional client certificate.
async fn grpc_client(
    pki: &TestPki,
    addr: std::net::SocketAddr,
    identity: Option<&PemPair>,
) -> anyhow::Result<TraceServiceClient<Channel>> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca_pem()?));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&id.cert)?,
            std::fs::read(&id.key)?,
        ));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_lazy();
    Ok(TraceServiceClient::new(channel))
}

/// Exports over gRPC with an optional `authorization` value; the status code on failure.
async fn grpc_export(
    client: &mut TraceServiceClient<Channel>,
    req: ExportTraceServiceRequest,
    authorization: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut r = tonic::Request::new(req);
    if let Some(a) = authorization {
        r.metadata_mut()
            .insert("authorization", a.parse().expect("ascii"));
    }
    tokio::time::timeout(WAIT, client.export(r))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no answer"))?
        .map(|_| ())
}

/// An HTTPS client trusting the PKI's CA, with an optional client certificate.
fn https_client(pki: &TestPki, identity: Option<&PemPair>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem()?)?)
        .timeout(WAIT);
    if let Some(id) = identity {
        let mut pem = std::fs::read(&id.cert)?;
        pem.extend(std::fs::read(&id.key)?);
        b = b.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(b.build()?)
}

async fn http_export(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    req: &ExportTraceServiceRequest,
    api_key: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut b = client
        .post(format!("https://{addr}/v1/traces"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(req)?);
    if let Some(k) = api_key {
        b = b.header("x-api-key", k);
    }
    let resp = b.send().await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

#[tokio::test]
async fn python_sdk_sends_over_mutual_tls_with_credentials_on_both_receivers() -> anyhow::Result<()>
{
    let pki = TestPki::generate()?;
    let capture = CaptureServer::start().await?;
    let app = start(&secure_receivers_yaml(&pki, &capture.grpc_endpoint())).await?;
    let grpc = format!("https://{}", app.grpc_addr.expect("grpc"));
    let http = format!("https://{}", app.http_addr.expect("http"));
    let (grpc, http) = (grpc.as_str(), http.as_str());
    let (ca, cert, key) = (
        pki.ca.display().to_string(),
        pki.client.cert.display().to_string(),
        pki.client.key.display().to_string(),
    );
    let bearer = format!("authorization=Bearer {TOKEN}");
    let api_key = format!("x-api-key={API_KEY}");
    let (bearer, api_key) = (bearer.as_str(), api_key.as_str());
    let (ca, cert, key) = (ca.as_str(), cert.as_str(), key.as_str());

    let mut expected = 0;
    for (protocol, endpoint, header) in [("grpc", grpc, bearer), ("http", http, api_key)] {
        let args = [
            "--protocol",
            protocol,
            "--endpoint",
            endpoint,
            "--ca",
            ca,
            "--client-cert",
            cert,
            "--client-key",
            key,
            "--header",
            header,
        ];
        let report = run_script("send_secure.py", &args).await?;
        expected += report["span_count"].as_u64().unwrap_or(0) as usize;
    }
    assert_eq!(expected, 4, "two spans per protocol");
    let spans = capture.wait_for_spans(expected).await?;
    assert_eq!(spans.len(), expected);

    // Without a client certificate, or with the wrong credential, the SDK's export fails.
    for (protocol, endpoint, extra) in [
        ("grpc", grpc, vec!["--header", bearer]),
        ("http", http, vec!["--header", api_key]),
    ] {
        let mut args = vec![
            "--protocol",
            protocol,
            "--endpoint",
            endpoint,
            "--ca",
            ca,
            "--timeout",
            "3",
        ];
        args.extend(extra);
        let err = run_script("send_secure.py", &args)
            .await
            .expect_err("an export without a client certificate must fail");
        assert!(
            err.to_string().contains("exports failed"),
            "{protocol}: {err}"
        );
    }
    for (protocol, endpoint, header) in [
        ("grpc", grpc, "authorization=Bearer wrong-token"),
        ("http", http, "x-api-key=wrong-key"),
    ] {
        let args = [
            "--protocol",
            protocol,
            "--endpoint",
            endpoint,
            "--ca",
            ca,
            "--client-cert",
            cert,
            "--client-key",
            key,
            "--header",
            header,
            "--timeout",
            "3",
        ];
        let err = run_script("send_secure.py", &args)
            .await
            .expect_err("an export with a wrong credential must fail");
        assert!(
            err.to_string().contains("exports failed"),
            "{protocol}: {err}"
        );
    }
    let text = metrics(&app).await?;
    assert!(
        text.contains(
            r#"tailgate_requests_refused_total{receiver="grpc",reason="unauthenticated"}"#
        ) && text.contains(
            r#"tailgate_requests_refused_total{receiver="http",reason="unauthenticated"}"#
        ),
        "{text}"
    );
    assert!(!text.contains(TOKEN) && !text.contains(API_KEY));
    assert_eq!(capture.spans().len(), expected, "nothing more arrived");
    app.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn mutual_tls_and_credentials_are_enforced_for_rust_clients() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let capture = CaptureServer::start().await?;
    let app = start(&secure_receivers_yaml(&pki, &capture.grpc_endpoint())).await?;
    let (grpc_addr, http_addr) = (app.grpc_addr.expect("grpc"), app.http_addr.expect("http"));
    let bearer = format!("Bearer {TOKEN}");
    let mut sent = 0;

    // gRPC: no client certificate, or one from another CA: the connection is refused.
    for identity in [None, Some(&pki.rogue_client)] {
        let mut client = grpc_client(&pki, grpc_addr, identity).await?;
        let status = grpc_export(&mut client, request(1), Some(&bearer))
            .await
            .expect_err("no trusted client certificate");
        assert_ne!(
            status.code(),
            tonic::Code::Unauthenticated,
            "refused at the handshake: {status:?}"
        );
    }
    // A trusted certificate: the token decides.
    let mut client = grpc_client(&pki, grpc_addr, Some(&pki.client)).await?;
    let status = grpc_export(&mut client, request(2), None)
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("authorization"), "{status:?}");
    for wrong in ["Bearer wrong", "Basic abc", "Bearer", TOKEN] {
        let status = grpc_export(&mut client, request(3), Some(wrong))
            .await
            .expect_err("wrong token");
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{wrong}: {status:?}"
        );
        assert!(!status.message().contains(TOKEN), "{status:?}");
    }
    grpc_export(&mut client, request(4), Some(&bearer)).await?;
    grpc_export(&mut client, request(5), Some(&format!("bearer  {TOKEN}"))).await?;
    sent += 2 * span_count(&request(4));

    // HTTP: the same, with the x-api-key header.
    for identity in [None, Some(&pki.rogue_client)] {
        let client = https_client(&pki, identity)?;
        let result = http_export(&client, http_addr, &request(6), Some(API_KEY)).await;
        assert!(result.is_err(), "no trusted client certificate: {result:?}");
    }
    let client = https_client(&pki, Some(&pki.client))?;
    let (status, body) = http_export(&client, http_addr, &request(7), None).await?;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("x-api-key"), "{body}");
    let (status, body) = http_export(&client, http_addr, &request(8), Some("wrong")).await?;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains(API_KEY));
    let (status, body) = http_export(&client, http_addr, &request(9), Some(API_KEY)).await?;
    assert_eq!(status, 200, "{body}");
    sent += span_count(&request(9));

    capture.wait_for_spans(sent).await?;
    let text = metrics(&app).await?;
    assert_eq!(
        metric_sum(&text, "tailgate_spans_received_total"),
        sent as f64,
        "only authenticated requests were received: {text}"
    );
    app.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn authentication_without_tls() -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    let yaml = format!(
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        auth:
          header: {{ name: x-tenant-key, value: "{API_KEY}" }}
      http:
        endpoint: 127.0.0.1:0
        auth:
          bearer_token: "{TOKEN}"
exporters:
  otlp:
    endpoint: "{}"
    batch: {{ timeout: 50ms }}
buffer: {{ settle: 100ms, idle_timeout: 1s, max_buffer_bytes: 64MiB }}
policy: {{ default: keep }}
admin: {{ endpoint: 127.0.0.1:0 }}
"#,
        capture.grpc_endpoint()
    );
    let app = start(&yaml).await?;
    let mut grpc =
        TraceServiceClient::connect(format!("http://{}", app.grpc_addr.expect("grpc"))).await?;
    let mut r = tonic::Request::new(request(10));
    r.metadata_mut().insert("x-tenant-key", "nope".parse()?);
    let status = grpc.export(r).await.expect_err("wrong key");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut r = tonic::Request::new(request(11));
    r.metadata_mut().insert("x-tenant-key", API_KEY.parse()?);
    grpc.export(r).await?;

    let url = format!("http://{}/v1/traces", app.http_addr.expect("http"));
    let body = request(12).encode_to_vec();
    let client = reqwest::Client::new();
    let resp = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer realm=\"tailgate\""[..])
    );
    let status = tailgate::otlp::rpc::RpcStatus::decode(resp.bytes().await?)?;
    assert_eq!(status.code, tonic::Code::Unauthenticated as i32);
    let resp = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    capture
        .wait_for_spans(span_count(&request(11)) + span_count(&request(12)))
        .await?;
    app.shutdown().await;
    Ok(())
}

/// tailgate with plaintext receivers exporting to the mutual-TLS capture server.
fn exporter_yaml(pki: &TestPki, protocol: &str, endpoint: &str, client_cert: bool) -> String {
    let identity = if client_cert {
        format!(
            "      cert_file: {}\n      key_file: {}\n",
            pki.client.cert.display(),
            pki.client.key.display()
        )
    } else {
        String::new()
    };
    format!(
        r#"receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:0 }}
      http: null
exporters:
  otlp:
    protocol: {protocol}
    endpoint: "{endpoint}"
    tls:
      ca_file: {ca}
{identity}    retry_on_failure: {{ enabled: false }}
    batch: {{ timeout: 50ms }}
buffer: {{ settle: 100ms, idle_timeout: 1s, max_buffer_bytes: 64MiB }}
policy: {{ default: keep }}
admin: {{ endpoint: 127.0.0.1:0 }}
"#,
        ca = pki.ca.display()
    )
}

#[tokio::test]
async fn exporter_delivers_to_a_mutual_tls_downstream() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let downstream = TlsCapture::start(&pki).await?;
    let mut delivered = 0;
    for (i, (protocol, endpoint)) in [
        ("grpc", downstream.grpc_endpoint()),
        ("http", downstream.http_endpoint()),
    ]
    .into_iter()
    .enumerate()
    {
        let app = start(&exporter_yaml(&pki, protocol, &endpoint, true)).await?;
        let req = request(100 + i as u128);
        let n = span_count(&req);
        let mut client =
            TraceServiceClient::connect(format!("http://{}", app.grpc_addr.expect("grpc"))).await?;
        client.export(req).await?;
        delivered += n;
        downstream.wait_for_spans(delivered).await?;
        app.shutdown().await;
    }

    // Without its client certificate the downstream refuses the exporter: counted, never silent.
    for (i, (protocol, endpoint)) in [
        ("grpc", downstream.grpc_endpoint()),
        ("http", downstream.http_endpoint()),
    ]
    .into_iter()
    .enumerate()
    {
        let app = start(&exporter_yaml(&pki, protocol, &endpoint, false)).await?;
        let req = request(200 + i as u128);
        let n = span_count(&req);
        let mut client =
            TraceServiceClient::connect(format!("http://{}", app.grpc_addr.expect("grpc"))).await?;
        client.export(req).await?;
        let metrics_url = format!("http://{}/metrics", app.admin_addr);
        let mut lost = 0.0;
        for _ in 0..(WAIT.as_millis() / 50) {
            let text = reqwest::get(&metrics_url).await?.text().await?;
            lost = metric_sum(&text, "tailgate_spans_lost_total");
            if lost >= n as f64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            lost, n as f64,
            "{protocol}: spans refused by the downstream are counted lost"
        );
        app.shutdown().await;
    }
    assert_eq!(
        downstream.spans(),
        delivered,
        "nothing arrived without a client certificate"
    );
    Ok(())
}

#[tokio::test]
async fn admin_token_guards_post_endpoints() -> anyhow::Result<()> {
    tailgate_e2e::init_logging();
    let capture = CaptureServer::start().await?;
    let dir = std::env::temp_dir().join(format!("tailgate-admin-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("tailgate.yaml");
    std::fs::write(
        &path,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:0 }}\n      http: null\n\
             exporters:\n  otlp:\n    endpoint: \"{}\"\npolicy: {{ default: keep }}\n\
             admin:\n  endpoint: 127.0.0.1:0\n  token: admin-s3cret-token\n",
            capture.grpc_endpoint()
        ),
    )?;
    let app = tailgate::app::start_from_file(&path, &Default::default()).await?;
    let admin = format!("http://{}", app.admin_addr);
    let client = reqwest::Client::new();

    let resp = client.post(format!("{admin}/reload")).send().await?;
    assert_eq!(resp.status(), 401);
    let body = resp.text().await?;
    assert!(body.contains("authorization"), "{body}");
    let resp = client
        .post(format!("{admin}/reload"))
        .bearer_auth("wrong")
        .send()
        .await?;
    assert_eq!(resp.status(), 401);
    let resp = client
        .post(format!("{admin}/reload"))
        .bearer_auth("admin-s3cret-token")
        .send()
        .await?;
    let status = resp.status();
    let body = resp.text().await?;
    assert_eq!(status, 200, "{body}");
    // Reads stay open.
    let resp = client.get(format!("{admin}/metrics")).send().await?;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await?;
    assert!(!text.contains("admin-s3cret-token"));
    app.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
