//! URL sanitizing for `url.full`, `http.url`, `url.query` and the like, as the semantic conventions ask:
//! credentials become `REDACTED:REDACTED@`, and the values of sensitive query keys become `REDACTED`.

/// The semantic conventions' default sensitive query keys, plus common credential names.
pub const DEFAULT_QUERY_KEYS: &[&str] = &[
    "AWSAccessKeyId",
    "Signature",
    "sig",
    "X-Goog-Signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "key",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "code",
    "session",
    "sessionid",
    "auth",
];

/// Sanitizes a full URL (or anything that looks like one); other text passes unchanged.
pub fn sanitize_url(url: &str, keys: &[String]) -> String {
    let mut out = String::with_capacity(url.len() + 16);
    let mut rest = url;
    if let Some(i) = url.find("://") {
        out.push_str(&url[..i + 3]);
        rest = &url[i + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            out.push_str("REDACTED:REDACTED@");
            rest = &rest[at + 1..];
        }
    }
    match rest.find('?') {
        Some(q) => {
            out.push_str(&rest[..=q]);
            let after = &rest[q + 1..];
            let (query, fragment) = after.split_at(after.find('#').unwrap_or(after.len()));
            out.push_str(&sanitize_query(query, keys));
            out.push_str(fragment);
        }
        None => out.push_str(rest),
    }
    out
}

/// Sanitizes a query string (without the `?`): `key=value` pairs whose key is listed (ASCII
/// case-insensitively) get the value `REDACTED`.
pub fn sanitize_query(query: &str, keys: &[String]) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, v)) if !v.is_empty() && keys.iter().any(|x| x.eq_ignore_ascii_case(k)) => {
                out.push_str(k);
                out.push_str("=REDACTED");
            }
            _ => out.push_str(pair),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        DEFAULT_QUERY_KEYS.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn credentials_and_query_keys() {
        assert_eq!(
            sanitize_url(
                "https://bob:hunter2@example.com/a?x=1&X-Amz-Signature=abc#f",
                &keys()
            ),
            "https://REDACTED:REDACTED@example.com/a?x=1&X-Amz-Signature=REDACTED#f"
        );
        assert_eq!(
            sanitize_url("/search?q=shoes&token=t0k", &keys()),
            "/search?q=shoes&token=REDACTED"
        );
        assert_eq!(
            sanitize_url("https://example.com/a@b", &keys()),
            "https://example.com/a@b"
        );
        assert_eq!(
            sanitize_query("sig=1&page=2", &keys()),
            "sig=REDACTED&page=2"
        );
    }
}
