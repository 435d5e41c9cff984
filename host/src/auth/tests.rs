use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

fn bearer(token: &str) -> Authenticator {
    Authenticator::bearer(&Secret::new(token), "t").expect("valid token")
}

#[test]
fn bearer_token_is_checked() {
    let auth = bearer("tok-123");
    assert_eq!(
        auth.check(&headers(&[("authorization", "Bearer tok-123")])),
        Ok(())
    );
    assert_eq!(
        auth.check(&headers(&[("Authorization", "bearer   tok-123")])),
        Ok(())
    );
    for wrong in [
        "Bearer tok-124",
        "Bearer tok-1234",
        "Bearer ",
        "Basic tok-123",
        "tok-123",
        "Bearertok-123",
    ] {
        assert!(
            matches!(
                auth.check(&headers(&[("authorization", wrong)])),
                Err(AuthFailure::Invalid { .. })
            ),
            "{wrong}"
        );
    }
    let missing = auth.check(&HeaderMap::new()).expect_err("missing");
    assert!(matches!(missing, AuthFailure::Missing { .. }));
    assert_eq!(
        missing.to_string(),
        "authentication required: send the `authorization` header with `Bearer <token>`"
    );
}

#[test]
fn header_credential_is_checked() {
    let cfg = AuthConfig {
        bearer_token: None,
        header: Some(HeaderAuth {
            name: "X-API-Key".into(),
            value: Secret::new("k3y"),
        }),
    };
    let auth = Authenticator::new(&cfg, "a").expect("valid");
    assert_eq!(auth.check(&headers(&[("x-api-key", "k3y")])), Ok(()));
    assert!(
        auth.check(&headers(&[("x-api-key", "Bearer k3y")]))
            .is_err()
    );
    assert!(auth.check(&headers(&[("authorization", "k3y")])).is_err());
    assert!(!auth.is_bearer());
}

#[test]
fn invalid_blocks_are_refused_with_the_key() {
    let both = AuthConfig {
        bearer_token: Some(Secret::new("a")),
        header: Some(HeaderAuth {
            name: "x".into(),
            value: Secret::new("b"),
        }),
    };
    let none = AuthConfig {
        bearer_token: None,
        header: None,
    };
    let empty = AuthConfig {
        bearer_token: Some(Secret::new("")),
        header: None,
    };
    let spaces = AuthConfig {
        bearer_token: Some(Secret::new(" padded ")),
        header: None,
    };
    let bad_name = AuthConfig {
        bearer_token: None,
        header: Some(HeaderAuth {
            name: "bad name".into(),
            value: Secret::new("v"),
        }),
    };
    for (cfg, needle) in [
        (both, "not both"),
        (none, "set bearer_token or header"),
        (empty, "receivers.x.auth.bearer_token: must not be empty"),
        (spaces, "printable ASCII"),
        (bad_name, "header.name"),
    ] {
        let e = cfg
            .validate("receivers.x.auth")
            .expect_err(needle)
            .to_string();
        assert!(e.contains(needle) && e.contains("receivers.x.auth"), "{e}");
    }
}

#[test]
fn secrets_never_print() {
    let cfg = crate::config::Config::parse(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        auth:\n          bearer_token: very-secret-1\n      http:\n        auth:\n          header: {name: x-k, value: very-secret-2}\nadmin:\n  token: very-secret-3\n",
        "t",
    )
    .expect("valid");
    let printed = format!(
        "{cfg:?} {:?}",
        Authenticator::new(
            cfg.receivers
                .otlp
                .protocols
                .grpc
                .as_ref()
                .and_then(|g| g.auth.as_ref())
                .expect("auth"),
            "k"
        )
    );
    assert!(!printed.contains("very-secret"), "{printed}");
    assert!(printed.contains("<redacted>"));
}

#[test]
fn unknown_auth_keys_are_named() {
    let e = crate::config::Config::parse(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        auth:\n          token: x\n",
        "t",
    )
    .expect_err("unknown key");
    assert!(e.to_string().contains("token"), "{e}");
}
