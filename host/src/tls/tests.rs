use super::*;

/// A self-signed certificate for `localhost` and its key, written to a fresh folder.
struct Files {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_key: PathBuf,
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn files(name: &str) -> Files {
    let dir = std::env::temp_dir().join(format!("tailgate-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let other = rcgen::KeyPair::generate().expect("key");
    let f = Files {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        other_key: dir.join("other.pem"),
        dir,
    };
    std::fs::write(&f.cert, c.cert.pem()).expect("write");
    std::fs::write(&f.key, c.signing_key.serialize_pem()).expect("write");
    std::fs::write(&f.other_key, other.serialize_pem()).expect("write");
    f
}

fn server(cert: &Path, key: &Path, ca: Option<&Path>) -> ServerTls {
    ServerTls {
        cert_file: cert.to_owned(),
        key_file: key.to_owned(),
        client_ca_file: ca.map(Path::to_owned),
    }
}

fn load_err(cfg: &ServerTls) -> String {
    match LoadedServerTls::load(cfg, "receivers.otlp.protocols.http.tls") {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn server_material_loads_with_and_without_client_ca() {
    let f = files("ok");
    let loaded = LoadedServerTls::load(&server(&f.cert, &f.key, None), "p").expect("loads");
    let _ = loaded.grpc();
    let http = loaded.http();
    assert_eq!(
        http.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    // A self-signed certificate can serve as its own client CA.
    LoadedServerTls::load(&server(&f.cert, &f.key, Some(&f.cert)), "p").expect("loads with a CA");
}

#[test]
fn bad_server_material_names_the_key_and_file() {
    let f = files("bad");
    let missing = f.dir.join("missing.pem");
    let e = load_err(&server(&missing, &f.key, None));
    assert!(
        e.contains("receivers.otlp.protocols.http.tls.cert_file") && e.contains("missing.pem"),
        "{e}"
    );
    // A key where the certificate should be, and the reverse.
    let e = load_err(&server(&f.key, &f.key, None));
    assert!(
        e.contains("cert_file") && e.contains("no certificate found"),
        "{e}"
    );
    let e = load_err(&server(&f.cert, &f.cert, None));
    assert!(
        e.contains("key_file") && e.contains("no private key found"),
        "{e}"
    );
    // A key that does not belong to the certificate.
    let e = load_err(&server(&f.cert, &f.other_key, None));
    assert!(e.contains("cannot be used together"), "{e}");
    let e = load_err(&server(&f.cert, &f.key, Some(&f.key)));
    assert!(e.contains("client_ca_file"), "{e}");
}

#[test]
fn client_material_is_checked() {
    let f = files("client");
    let ok = ClientTls {
        ca_file: Some(f.cert.clone()),
        cert_file: Some(f.cert.clone()),
        key_file: Some(f.key.clone()),
    };
    let config = http_client(&ok).expect("loads");
    assert!(config.client_auth_cert_resolver.has_certs());
    grpc_client(&ok).expect("loads");
    let half = ClientTls {
        key_file: None,
        ..ok.clone()
    };
    assert!(
        http_client(&half)
            .expect_err("half")
            .to_string()
            .contains("together")
    );
    let bad_ca = ClientTls {
        ca_file: Some(f.key.clone()),
        ..Default::default()
    };
    let e = grpc_client(&bad_ca).expect_err("no CA").to_string();
    assert!(e.contains("exporters.otlp.tls.ca_file"), "{e}");
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let mut s = server(
        Path::new("c.pem"),
        Path::new("/abs/k.pem"),
        Some(Path::new("ca.pem")),
    );
    resolve_server_paths(&mut s, Path::new("/etc/tailgate"));
    assert_eq!(s.cert_file, Path::new("/etc/tailgate/c.pem"));
    assert_eq!(s.key_file, Path::new("/abs/k.pem"));
    assert_eq!(
        s.client_ca_file.as_deref(),
        Some(Path::new("/etc/tailgate/ca.pem"))
    );
}
