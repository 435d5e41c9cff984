//! `pii`: tailgate's standard PII redactor. Sane defaults with no configuration:
//!
//! - **Detectors with validation**, on every string of the trace (attribute values of every type as the
//!   host renders them, span names, status messages, event names): email, payment cards (Luhn + card
//!   scheme + printed grouping), US SSN (area/group/serial rules), IBAN (mod-97), IPv4, IPv6 (parsed),
//!   JWTs, bearer/basic tokens, API keys (AWS, GitHub, Stripe, Slack, Google, private key blocks),
//!   passwords in `key=value` / JSON, URL userinfo; phone numbers (off by default).
//! - **Keys by name**: identity keys (`user.email`, `user.id`, `enduser.id`, ...) are hashed by the host
//!   (HMAC, stable pseudonyms); secret keys (`http.request.header.authorization`, cookies, anything named
//!   like a password or token) are replaced with `REDACTED`.
//! - **URLs** (`url.full`, `http.url`, `url.query`, ...): credentials become `REDACTED:REDACTED@`,
//!   sensitive query keys get `REDACTED`. **SQL** (`db.query.text`, `db.statement`): literals become `?`.
//! - **Modes**: block list (default: everything passes except what is detected) or allow list (only
//!   listed attribute keys pass; their values are still scanned).
//!
//! Fast: one byte-level pass per string rules out the detectors that cannot match (most strings reach no
//! regex at all), regexes and validation run only on candidates, and what an attribute key means is
//! worked out once per distinct key and cached across calls. Strings longer than `max_scan_bytes` are
//! cut to that length (scanned part kept, rest dropped).
//! Configuration: see `Config` and docs/plugins.md.

pub mod detect;
pub mod phone;
pub mod sql;
pub mod url;

use detect::{Detectors, Finding, Kind};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{
    Edit, EditAction, FieldKind, Interest, MaskRange, PackedTrace, Redactor, TextField,
    TraceSummary, ValueType,
};

/// What to do with a finding or a sensitive key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", crate = "tailgate_plugin_sdk::serde")]
pub enum Action {
    /// Remove the attribute (on names and messages: replace the match, as `redact`).
    Remove,
    /// Replace the match with `[REDACTED:<detector>]` (a key's whole value with `REDACTED`).
    Redact,
    /// Replace every character of the match with `*`.
    Mask,
    /// Mask all but the useful part: the last 4 digits of a card, SSN or IBAN, the domain of an email.
    Partial,
    /// Replace the value with the host's keyed hash (HMAC) when the match is the whole value; a match
    /// inside a longer text is masked instead (the host hashes whole values only).
    Hash,
}

/// Block list: redact what is detected. Allow list: additionally remove every attribute whose key is
/// not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case", crate = "tailgate_plugin_sdk::serde")]
pub enum Mode {
    /// Everything passes except what is detected.
    #[default]
    BlockList,
    /// Only `allow_keys` pass (values still scanned); every other attribute is removed.
    AllowList,
}

/// One detector's settings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
pub struct DetectorConfig {
    /// Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Default: see [`DetectorsConfig`].
    pub action: Option<Action>,
}

fn yes() -> bool {
    true
}

/// The detectors; each `{enabled, action}`. Defaults: all on; actions `partial` for
/// email, card, ssn, iban; `mask` for ip addresses and phone; `redact` for tokens, keys and passwords.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default, crate = "tailgate_plugin_sdk::serde")]
#[allow(missing_docs)] // one field per detector, named as in `detect::Kind::name`
pub struct DetectorsConfig {
    pub email: Option<DetectorConfig>,
    pub card: Option<DetectorConfig>,
    pub ssn: Option<DetectorConfig>,
    pub iban: Option<DetectorConfig>,
    pub ipv4: Option<DetectorConfig>,
    pub ipv6: Option<DetectorConfig>,
    pub jwt: Option<DetectorConfig>,
    pub bearer: Option<DetectorConfig>,
    pub api_key: Option<DetectorConfig>,
    pub password: Option<DetectorConfig>,
    pub url_userinfo: Option<DetectorConfig>,
    pub phone: Option<DetectorConfig>,
}

/// The plugin configuration (JSON; every key optional, unknown keys are an error naming them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, crate = "tailgate_plugin_sdk::serde")]
pub struct Config {
    /// `block_list` (default) or `allow_list`.
    pub mode: Mode,
    /// Allow-list mode: attribute keys that pass (exact; a trailing `*` matches a prefix).
    pub allow_keys: Vec<String>,
    /// Keys whose value identifies a person; replaces the default list.
    pub identity_keys: Option<Vec<String>>,
    /// Added to the identity keys.
    pub extra_identity_keys: Vec<String>,
    /// Action for identity keys. Default `hash`.
    pub identity_action: Action,
    /// Keys whose value is a secret; replaces the default list. A key is also secret when its words name
    /// a secret (`detect::is_secret_key`: `db.password`, `aws.secret_access_key`, `clientSecret`,
    /// `x-api-key`, `app.session_token`, but not `gen_ai.usage.input_tokens` or `auth.method`).
    pub secret_keys: Option<Vec<String>>,
    /// Added to the secret keys.
    pub extra_secret_keys: Vec<String>,
    /// Action for secret keys. Default `redact`.
    pub secret_action: Action,
    /// Per-detector settings.
    pub detectors: DetectorsConfig,
    /// Keys holding full URLs; replaces the default list.
    pub url_keys: Option<Vec<String>>,
    /// Keys holding a URL query string; replaces the default list.
    pub query_string_keys: Option<Vec<String>>,
    /// Query keys whose values become `REDACTED`; replaces the default list.
    pub query_keys: Option<Vec<String>>,
    /// Added to the query keys.
    pub extra_query_keys: Vec<String>,
    /// Keys holding SQL text whose literals become `?`; replaces the default list.
    pub sql_keys: Option<Vec<String>>,
    /// Keys whose last segment ends with one of these are never IPv4 addresses (`service.version:
    /// 1.2.3.4`). Default `["version"]`.
    pub not_ip_key_suffixes: Vec<String>,
    /// Scan span names, event names and status messages too. Default true.
    pub scan_names: bool,
    /// Longest text scanned; longer values are cut to this many bytes before scanning. Default 32768.
    pub max_scan_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::BlockList,
            allow_keys: Vec::new(),
            identity_keys: None,
            extra_identity_keys: Vec::new(),
            identity_action: Action::Hash,
            secret_keys: None,
            extra_secret_keys: Vec::new(),
            secret_action: Action::Redact,
            detectors: DetectorsConfig::default(),
            url_keys: None,
            query_string_keys: None,
            query_keys: None,
            extra_query_keys: Vec::new(),
            sql_keys: None,
            not_ip_key_suffixes: vec!["version".into()],
            scan_names: true,
            max_scan_bytes: 32 << 10,
        }
    }
}

/// Semantic-convention keys whose values identify a person.
pub const DEFAULT_IDENTITY_KEYS: &[&str] = &[
    "user.email",
    "user.name",
    "user.full_name",
    "user.id",
    "user.hash",
    "enduser.id",
    "enduser.pseudo.id",
    "client.address",
    "client.socket.address",
    "host.mac",
    "device.id",
];

/// Semantic-convention keys whose values are secrets.
pub const DEFAULT_SECRET_KEYS: &[&str] = &[
    "http.request.header.authorization",
    "http.request.header.proxy-authorization",
    "http.request.header.cookie",
    "http.request.header.x-api-key",
    "http.request.header.x-auth-token",
    "http.response.header.set-cookie",
    "rpc.grpc.request.metadata.authorization",
    "rpc.grpc.request.metadata.cookie",
    "db.connection_string",
];

/// Keys holding full URLs.
pub const DEFAULT_URL_KEYS: &[&str] = &["url.full", "http.url", "url.original", "http.target"];
/// Keys holding query strings.
pub const DEFAULT_QUERY_STRING_KEYS: &[&str] = &["url.query"];
/// Keys holding SQL text.
pub const DEFAULT_SQL_KEYS: &[&str] = &["db.query.text", "db.statement"];

/// What the configuration compiles to.
pub struct Pii {
    mode: Mode,
    allow_exact: Vec<String>,
    allow_prefix: Vec<String>,
    identity_keys: Vec<String>,
    identity_action: Action,
    secret_keys: Vec<String>,
    secret_action: Action,
    actions: HashMap<Kind, Action>,
    detectors: Detectors,
    url_keys: Vec<String>,
    query_string_keys: Vec<String>,
    query_keys: Vec<String>,
    sql_keys: Vec<String>,
    not_ip_suffixes: Vec<String>,
    scan_names: bool,
    max_scan_bytes: usize,
    /// What each attribute key seen so far means (keys repeat on every span of every trace).
    key_classes: RefCell<HashMap<Box<str>, KeyClass, BuildHasherDefault<Fnv>>>,
}

/// Most cached key classes; past it the cache starts over (keys are client-controlled).
const MAX_CACHED_KEYS: usize = 4096;

/// What an attribute key means to the redactor.
#[derive(Debug, Clone, Default)]
struct KeyClass {
    /// The key itself carries personal data (`user.jane@example.com`): what it becomes.
    key_edit: Option<Rc<KeyEdit>>,
    /// Allow-list mode: the key passes.
    allowed: bool,
    secret: bool,
    identity: bool,
    url: bool,
    query: bool,
    sql: bool,
    /// The key's last segment marks a version (no IPv4 detection).
    skip_ip: bool,
}

/// The edit of a key that carries personal data: renamed with the findings masked or redacted (as the
/// detectors' actions say; `hash` masks, the host hashes values only), or the attribute removed when an
/// action is `remove`.
#[derive(Debug)]
struct KeyEdit {
    action: EditAction,
    reason: String,
}

/// FNV-1a: keys are short and the cache is private to one instance, so a fast hash is enough.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn lower(list: Vec<String>) -> Vec<String> {
    list.into_iter().map(|s| s.to_ascii_lowercase()).collect()
}

impl Pii {
    /// Compiles a configuration.
    pub fn new(c: Config) -> Result<Pii, String> {
        if c.max_scan_bytes < 64 {
            return Err("invalid configuration: max_scan_bytes must be at least 64".into());
        }
        let d = &c.detectors;
        let table: [(Kind, Option<DetectorConfig>, bool, Action); 12] = [
            (Kind::Email, d.email, true, Action::Partial),
            (Kind::Card, d.card, true, Action::Partial),
            (Kind::Ssn, d.ssn, true, Action::Partial),
            (Kind::Iban, d.iban, true, Action::Partial),
            (Kind::Ipv4, d.ipv4, true, Action::Mask),
            (Kind::Ipv6, d.ipv6, true, Action::Mask),
            (Kind::Jwt, d.jwt, true, Action::Redact),
            (Kind::Bearer, d.bearer, true, Action::Redact),
            (Kind::ApiKey, d.api_key, true, Action::Redact),
            (Kind::Password, d.password, true, Action::Redact),
            (Kind::UrlUserinfo, d.url_userinfo, true, Action::Redact),
            (Kind::Phone, d.phone, true, Action::Mask),
        ];
        let mut kinds = Vec::new();
        let mut actions = HashMap::new();
        for (kind, cfg, on, default) in table {
            let enabled = cfg.map(|c| c.enabled).unwrap_or(on);
            if enabled {
                kinds.push(kind);
                actions.insert(kind, cfg.and_then(|c| c.action).unwrap_or(default));
            }
        }
        let (allow_prefix, allow_exact): (Vec<String>, Vec<String>) =
            c.allow_keys.iter().cloned().partition(|k| k.ends_with('*'));
        if c.mode == Mode::AllowList && c.allow_keys.is_empty() {
            return Err("invalid configuration: mode allow_list needs allow_keys".into());
        }
        let mut identity_keys = c
            .identity_keys
            .unwrap_or_else(|| owned(DEFAULT_IDENTITY_KEYS));
        identity_keys.extend(c.extra_identity_keys);
        let mut secret_keys = c.secret_keys.unwrap_or_else(|| owned(DEFAULT_SECRET_KEYS));
        secret_keys.extend(c.extra_secret_keys);
        let mut query_keys = c
            .query_keys
            .unwrap_or_else(|| owned(url::DEFAULT_QUERY_KEYS));
        query_keys.extend(c.extra_query_keys);
        Ok(Pii {
            mode: c.mode,
            allow_exact,
            allow_prefix: allow_prefix
                .into_iter()
                .map(|k| k.trim_end_matches('*').to_owned())
                .collect(),
            identity_keys: lower(identity_keys),
            identity_action: c.identity_action,
            secret_keys: lower(secret_keys),
            secret_action: c.secret_action,
            actions,
            detectors: Detectors::new(&kinds),
            url_keys: c.url_keys.unwrap_or_else(|| owned(DEFAULT_URL_KEYS)),
            query_string_keys: c
                .query_string_keys
                .unwrap_or_else(|| owned(DEFAULT_QUERY_STRING_KEYS)),
            query_keys,
            sql_keys: c.sql_keys.unwrap_or_else(|| owned(DEFAULT_SQL_KEYS)),
            not_ip_suffixes: c.not_ip_key_suffixes,
            scan_names: c.scan_names,
            max_scan_bytes: c.max_scan_bytes,
            key_classes: RefCell::default(),
        })
    }

    /// What `key` means, from the cache or worked out now.
    fn key_class(&self, key: &str) -> KeyClass {
        let mut cache = self.key_classes.borrow_mut();
        if let Some(c) = cache.get(key) {
            return c.clone();
        }
        let kl = key.to_ascii_lowercase();
        let last_segment = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
        let c = KeyClass {
            key_edit: self.key_edit(key).map(Rc::new),
            allowed: self.allowed(key),
            secret: self.is_secret(key, &kl),
            identity: self.is_identity(&kl),
            url: self.url_keys.iter().any(|k| k == key),
            query: self.query_string_keys.iter().any(|k| k == key),
            sql: self.sql_keys.iter().any(|k| k == key),
            skip_ip: self
                .not_ip_suffixes
                .iter()
                .any(|s| last_segment.ends_with(s.as_str())),
        };
        if cache.len() >= MAX_CACHED_KEYS {
            cache.clear();
        }
        cache.insert(key.into(), c.clone());
        c
    }

    /// The edit of a key whose text the detectors flag, if any.
    fn key_edit(&self, key: &str) -> Option<KeyEdit> {
        let findings = self.detectors.scan(key, false);
        if findings.is_empty() {
            return None;
        }
        let actions: Vec<Action> = findings.iter().map(|fi| self.actions[&fi.kind]).collect();
        let kinds: BTreeSet<&str> = findings.iter().map(|fi| fi.kind.name()).collect();
        let reason = format!(
            "key_{}",
            kinds.into_iter().collect::<Vec<_>>().join("+key_")
        );
        let action = if actions.contains(&Action::Remove) {
            EditAction::Remove
        } else {
            EditAction::RenameKey(rewrite(key, &findings, &actions))
        };
        Some(KeyEdit { action, reason })
    }

    fn allowed(&self, key: &str) -> bool {
        self.allow_exact.iter().any(|k| k == key)
            || self
                .allow_prefix
                .iter()
                .any(|p| key.starts_with(p.as_str()))
    }

    fn is_identity(&self, key_lower: &str) -> bool {
        self.identity_keys.iter().any(|k| k == key_lower)
    }

    fn is_secret(&self, key: &str, key_lower: &str) -> bool {
        self.secret_keys.iter().any(|k| k == key_lower) || detect::is_secret_key(key)
    }

    /// The edits for a packed trace.
    pub fn edits(&self, t: &PackedTrace) -> Vec<Edit> {
        let mut out = Vec::new();
        for (i, f) in t.fields.iter().enumerate() {
            let is_attr = !matches!(
                f.kind,
                FieldKind::SpanName | FieldKind::StatusMessage | FieldKind::EventName
            );
            if !is_attr && !self.scan_names {
                continue;
            }
            let class = if is_attr {
                self.key_class(t.key(f))
            } else {
                KeyClass::default()
            };
            let value = self.field_edit(t, f, is_attr, &class);
            // A key carrying personal data is renamed (or its attribute removed) whatever happens to its
            // value, unless the value's edit removes the attribute anyway.
            if let Some(k) = &class.key_edit
                && !value
                    .as_ref()
                    .is_some_and(|(a, _)| *a == EditAction::Remove)
            {
                out.push(Edit {
                    field: i as u32,
                    action: k.action.clone(),
                    reason: Some(k.reason.clone()),
                });
                if k.action == EditAction::Remove {
                    continue;
                }
            }
            if let Some(e) = value {
                out.push(Edit {
                    field: i as u32,
                    action: e.0,
                    reason: Some(e.1),
                });
            }
        }
        out
    }

    fn field_edit(
        &self,
        t: &PackedTrace,
        f: &TextField,
        is_attr: bool,
        class: &KeyClass,
    ) -> Option<(EditAction, String)> {
        if is_attr && self.mode == Mode::AllowList && !class.allowed {
            return Some((EditAction::Remove, "allow_list".into()));
        }
        if matches!(f.value_type, ValueType::Empty | ValueType::Boolean) {
            return None;
        }
        let raw = t.bytes(&f.value);
        if class.secret {
            return Some((
                key_action(self.secret_action, raw.len(), is_attr),
                "secret_key".into(),
            ));
        }
        if class.identity && !raw.is_empty() {
            return Some((
                key_action(self.identity_action, raw.len(), is_attr),
                "identity_key".into(),
            ));
        }
        // Bytes that are not UTF-8: scan each valid run in place and mask what is found.
        let Ok(text) = std::str::from_utf8(raw) else {
            return self.scan_bytes(raw);
        };
        let (text, cut) = cut(text, self.max_scan_bytes);
        let is_string = matches!(f.value_type, ValueType::Str | ValueType::Name);
        let url = is_string && class.url;
        let query = is_string && class.query;
        let sql = is_string && class.sql;
        let mut reasons = BTreeSet::new();
        let rewritten = if url {
            Some(url::sanitize_url(text, &self.query_keys))
        } else if query {
            Some(url::sanitize_query(text, &self.query_keys))
        } else if sql {
            Some(sql::scrub_sql(text))
        } else {
            None
        };
        if let Some(r) = &rewritten
            && r != text
        {
            reasons.insert(if url || query { "url" } else { "sql" });
        }
        let base = rewritten.as_deref().unwrap_or(text);
        let skip_ip = class.skip_ip;
        let findings = self.detectors.scan(base, skip_ip);
        for fi in &findings {
            reasons.insert(fi.kind.name());
        }
        if cut {
            reasons.insert("too_long");
        }
        if findings.is_empty() && !cut && rewritten.as_deref().is_none_or(|r| r == text) {
            return None;
        }
        let reason = reasons.into_iter().collect::<Vec<_>>().join("+");
        let actions: Vec<Action> = findings.iter().map(|fi| self.actions[&fi.kind]).collect();
        // Remove wins for attributes; hash of a whole-value match goes to the host.
        if is_attr && actions.contains(&Action::Remove) {
            return Some((EditAction::Remove, reason));
        }
        let whole = findings.len() == 1
            && findings[0].range == (0..base.len())
            && !cut
            && rewritten.is_none();
        if whole && actions[0] == Action::Hash {
            return Some((EditAction::Hash, reason));
        }
        // Pure masks on an unchanged text go as ranges (the host keeps the value's length); so does every
        // finding in an array or map (a redacted one masked whole), which a replacement would turn into
        // a string; anything else is a rewrite of the whole text.
        let container = matches!(f.value_type, ValueType::Array | ValueType::Kvlist);
        let only_masks = actions
            .iter()
            .all(|a| matches!(a, Action::Mask | Action::Partial | Action::Hash));
        if (only_masks || container) && !cut && rewritten.is_none() {
            let ranges = findings
                .iter()
                .zip(&actions)
                .flat_map(|(fi, a)| match a {
                    Action::Redact | Action::Remove => vec![MaskRange {
                        start: fi.range.start as u32,
                        len: (fi.range.end - fi.range.start) as u32,
                    }],
                    _ => mask_ranges(fi, *a, base),
                })
                .collect();
            return Some((EditAction::Mask(ranges), reason));
        }
        let mut s = rewrite(base, &findings, &actions);
        if cut {
            s.push_str("...[truncated]");
        }
        Some((EditAction::Replace(s), reason))
    }

    /// Masks findings in the valid UTF-8 runs of a non-UTF-8 byte value.
    fn scan_bytes(&self, raw: &[u8]) -> Option<(EditAction, String)> {
        let mut ranges = Vec::new();
        let mut reasons = BTreeSet::new();
        let mut offset = 0usize;
        for chunk in raw.utf8_chunks() {
            let v = chunk.valid();
            if offset + v.len() > self.max_scan_bytes {
                break;
            }
            for fi in self.detectors.scan(v, false) {
                reasons.insert(fi.kind.name());
                let len = fi.range.end - fi.range.start;
                ranges.push(MaskRange {
                    start: (offset + fi.range.start) as u32,
                    len: len as u32,
                });
            }
            offset += v.len() + chunk.invalid().len();
        }
        if ranges.is_empty() {
            return None;
        }
        Some((
            EditAction::Mask(ranges),
            reasons.into_iter().collect::<Vec<_>>().join("+"),
        ))
    }
}

/// `base` with each finding redacted (`[REDACTED:<detector>]`) or masked as its action says.
fn rewrite(base: &str, findings: &[Finding], actions: &[Action]) -> String {
    let mut s = String::with_capacity(base.len());
    let mut at = 0;
    for (fi, a) in findings.iter().zip(actions) {
        s.push_str(&base[at..fi.range.start]);
        match a {
            Action::Redact | Action::Remove => {
                s.push_str("[REDACTED:");
                s.push_str(fi.kind.name());
                s.push(']');
            }
            _ => {
                let mut from = fi.range.start;
                for r in mask_ranges(fi, *a, base) {
                    let (rs, re) = (r.start as usize, (r.start + r.len) as usize);
                    s.push_str(&base[from..rs]);
                    s.extend(std::iter::repeat_n('*', base[rs..re].chars().count()));
                    from = re;
                }
                s.push_str(&base[from..fi.range.end]);
            }
        }
        at = fi.range.end;
    }
    s.push_str(&base[at..]);
    s
}

/// The edit for a sensitive key's whole value.
fn key_action(a: Action, len: usize, is_attr: bool) -> EditAction {
    match a {
        Action::Remove if is_attr => EditAction::Remove,
        Action::Hash => EditAction::Hash,
        Action::Mask | Action::Partial if len > 0 => EditAction::Mask(vec![MaskRange {
            start: 0,
            len: len as u32,
        }]),
        _ => EditAction::Replace("REDACTED".into()),
    }
}

/// The byte ranges a finding masks under an action (all of it, or all but its `keep` parts). Separators
/// of numbers (spaces, dashes) stay visible: `**** **** **** 1111`.
fn mask_ranges(f: &Finding, a: Action, text: &str) -> Vec<MaskRange> {
    let keep = if a == Action::Partial {
        f.keep.clone()
    } else {
        None
    };
    let numeric = matches!(f.kind, Kind::Card | Kind::Ssn | Kind::Iban | Kind::Phone);
    let mut out = Vec::new();
    let mut push = |from: usize, to: usize| {
        if !numeric {
            out.push(MaskRange {
                start: from as u32,
                len: (to - from) as u32,
            });
            return;
        }
        let mut run: Option<usize> = None;
        for i in from..=to {
            let sep = i == to || matches!(text.as_bytes()[i], b' ' | b'-');
            match (sep, run) {
                (true, Some(s)) => {
                    out.push(MaskRange {
                        start: s as u32,
                        len: (i - s) as u32,
                    });
                    run = None;
                }
                (false, None) => run = Some(i),
                _ => {}
            }
        }
    };
    let mut at = f.range.start;
    for k in keep
        .iter()
        .chain(std::iter::once(&(f.range.end..f.range.end)))
    {
        if k.start > at {
            push(at, k.start);
        }
        at = at.max(k.end);
    }
    out
}

/// Cuts `text` to at most `max` bytes on a character boundary; says whether it cut.
fn cut(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

impl Redactor for Pii {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
        Ok((Pii::new(c)?, Interest::summary_only()))
    }

    fn redact(&mut self, _: &TraceSummary, trace: &PackedTrace) -> Vec<Edit> {
        self.edits(trace)
    }
}

tailgate_plugin_sdk::export_redactor!(Pii);

#[cfg(test)]
mod tests;
