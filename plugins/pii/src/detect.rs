//! The detectors: a byte-level gate over every string (one pass, no allocation) that rules out the
//! detectors whose patterns cannot match, then only the remaining detectors' regexes, then validation of
//! each candidate (Luhn, mod-97, SSN ranges, address parsing). Most strings of a trace fail every gate
//! and never reach a regex. Every regex is linear-time (the `regex` crate has no backtracking).

use crate::phone;
use regex::Regex;
use std::ops::Range;
use std::sync::OnceLock;

/// What a detector finds (its config and metric name is [`Kind::name`]).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Email,
    Card,
    Ssn,
    Iban,
    Ipv4,
    Ipv6,
    Jwt,
    Bearer,
    ApiKey,
    Password,
    UrlUserinfo,
    Phone,
}

impl Kind {
    /// Every detector.
    pub const ALL: [Kind; 12] = [
        Kind::Email,
        Kind::Card,
        Kind::Ssn,
        Kind::Iban,
        Kind::Ipv4,
        Kind::Ipv6,
        Kind::Jwt,
        Kind::Bearer,
        Kind::ApiKey,
        Kind::Password,
        Kind::UrlUserinfo,
        Kind::Phone,
    ];

    /// The detector's name in config, reasons and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Card => "card",
            Kind::Ssn => "ssn",
            Kind::Iban => "iban",
            Kind::Ipv4 => "ipv4",
            Kind::Ipv6 => "ipv6",
            Kind::Jwt => "jwt",
            Kind::Bearer => "bearer",
            Kind::ApiKey => "api_key",
            Kind::Password => "password",
            Kind::UrlUserinfo => "url_userinfo",
            Kind::Phone => "phone",
        }
    }
}

/// A validated finding: the byte range to redact inside the scanned text, and the part of it to keep
/// under a partial mask (e.g. the last four digits of a card, the domain of an email).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The detector.
    pub kind: Kind,
    /// Byte range in the scanned text.
    pub range: Range<usize>,
    /// The part of `range` that a partial mask keeps visible.
    pub keep: Option<Range<usize>>,
}

struct Pattern {
    kind: Kind,
    source: &'static str,
    /// Compiled on first use: most policies see most kinds rarely (the byte gate in [`candidates`]
    /// rules a kind out before its regex), and compiling every regex up front was ~15 ms of each
    /// instance's `init`, most of the plugin's load time.
    re: OnceLock<Regex>,
    /// Capture group holding the secret (0 = whole match).
    group: usize,
}

impl Pattern {
    fn re(&self) -> &Regex {
        self.re.get_or_init(|| {
            // Cannot fail: the patterns are constants of this file, and the test
            // `every_detector_pattern_compiles` compiles each of them.
            Regex::new(self.source).expect("a detector pattern compiles")
        })
    }
}

/// The compiled detectors.
pub struct Detectors {
    patterns: Vec<Pattern>,
    /// Bit set (see [`bit`]) of the enabled kinds.
    enabled: u16,
}

/// A kind's bit in a candidate set.
fn bit(k: Kind) -> u16 {
    1 << (k as u16)
}

/// The pattern(s) of one detector, with the capture group holding the secret. Word boundaries are ASCII
/// (`(?-u:\b)`) so that the lazy DFA handles every pattern (a Unicode `\b` would force the slower engine).
fn patterns_of(kind: Kind) -> Vec<(&'static str, usize)> {
    match kind {
        // `%40` is the `@` of an email percent-encoded in a URL (`?email=ada%40example.com`).
        Kind::Email => vec![(
            r"[A-Za-z0-9._%+\-]{1,64}(?:@|%40)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}",
            0,
        )],
        // `+` is a space in a form-encoded query (`?card=4111+1111+1111+1111`).
        Kind::Card => vec![(r"[0-9](?:[ \-+]?[0-9]){11,18}", 0)],
        Kind::Ssn => vec![(r"[0-9]{3}[ \-][0-9]{2}[ \-][0-9]{4}", 0)],
        Kind::Iban => vec![(
            r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?",
            0,
        )],
        Kind::Ipv4 => vec![(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}", 0)],
        Kind::Ipv6 => vec![(
            r"(?:[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){2,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3})?",
            0,
        )],
        Kind::Jwt => vec![(
            r"eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*",
            0,
        )],
        Kind::Bearer => vec![(
            r"(?i)(?-u:\b)(?:bearer|basic|token|digest)\s+([A-Za-z0-9._~+/\-]{8,}=*)",
            1,
        )],
        Kind::ApiKey => vec![
            (r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)", 0),
            (
                r"(?-u:\b)(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}(?-u:\b)",
                0,
            ),
            (r"(?-u:\b)github_pat_[A-Za-z0-9_]{22,255}(?-u:\b)", 0),
            (
                r"(?-u:\b)(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,99}(?-u:\b)",
                0,
            ),
            (r"(?-u:\b)xox[abposr]-[A-Za-z0-9\-]{10,200}(?-u:\b)", 0),
            (r"(?-u:\b)AIza[0-9A-Za-z_\-]{35}(?-u:\b)", 0),
            (r"-----BEGIN [A-Z ]{0,20}PRIVATE KEY-----", 0),
        ],
        // A key naming a secret (checked by [`is_secret_key`]), an optional closing quote (JSON, an
        // escaped JSON quote), `=` or `:`, then the value: a `\"`-quoted, `"`-quoted (with escapes) or
        // `'`-quoted string, or a bare token.
        Kind::Password => vec![(
            concat!(
                r#"(?i)(?-u:\b)[A-Za-z0-9_.\-]*"#,
                r#"(?:pass|pwd|secret|token|credential|auth|cookie|(?:api|access|private|secret|signing|encryption|master|client|session)[_.\-]?keys?)"#,
                r#"[A-Za-z0-9_.\-]*\\?["']?\s*[=:]\s*"#,
                r#"(?:\\"([^"\\\r\n]+)|"((?:[^"\\\r\n]|\\.)+)|'([^'\\\r\n]+)|([^\s"'\\&;,{}\[\]<>]+))"#,
            ),
            1,
        )],
        Kind::UrlUserinfo => vec![(
            r"(?i)(?-u:\b)[a-z][a-z0-9+.\-]{1,20}://([^/\s:@]{1,128}:[^/\s@]{1,256})@",
            1,
        )],
        // Found by `phone::find`, a parser, not a regex.
        Kind::Phone => vec![],
    }
}

impl Detectors {
    /// The given detectors; each regex is compiled on its first use.
    pub fn new(kinds: &[Kind]) -> Detectors {
        let mut patterns = Vec::new();
        for &k in kinds {
            for (p, group) in patterns_of(k) {
                patterns.push(Pattern {
                    kind: k,
                    source: p,
                    re: OnceLock::new(),
                    group,
                });
            }
        }
        let enabled = kinds.iter().fold(0, |m, &k| m | bit(k));
        Detectors { patterns, enabled }
    }

    /// Validated findings in `text`, sorted by start, without overlaps (the earlier, then the longer,
    /// finding wins). `skip_ip` turns the IPv4 detector off for this text (a version key).
    pub fn scan(&self, text: &str, skip_ip: bool) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut possible = candidates(text.as_bytes()) & self.enabled;
        if skip_ip {
            possible &= !bit(Kind::Ipv4);
        }
        if possible == 0 {
            return out;
        }
        for p in &self.patterns {
            if possible & bit(p.kind) == 0 {
                continue;
            }
            // Capture groups are never asked of the regex: its DFA finds the whole match, and the
            // secret's place in it follows from the pattern's shape (`secret_of`). Resolving captures
            // ran the bounded backtracker, whose visited set is cleared per search: about a third of
            // the plugin's instructions on a trace with PII.
            for m in p.re().find_iter(text) {
                let r = if p.group == 0 {
                    m.range()
                } else {
                    secret_of(p.kind, text, m.range())
                };
                if let Some(f) = validate(p.kind, text, r) {
                    out.push(f);
                }
            }
        }
        if possible & bit(Kind::Phone) != 0 {
            let covered: Vec<Range<usize>> = out.iter().map(|f| f.range.clone()).collect();
            out.extend(phone::find(text, &covered).into_iter().map(phone_finding));
        }
        if out.is_empty() {
            return out;
        }
        Self::resolve(out)
    }

    /// Like [`Detectors::scan`] but every enabled pattern runs, without the gate: the reference the gate
    /// is tested against.
    #[cfg(test)]
    pub fn scan_ungated(&self, text: &str) -> Vec<Finding> {
        let mut out = Vec::new();
        for p in &self.patterns {
            for c in p.re().captures_iter(text) {
                let Some(m) = group_of(&c, p.group) else {
                    continue;
                };
                if let Some(f) = validate(p.kind, text, m.range()) {
                    out.push(f);
                }
            }
        }
        if self.enabled & bit(Kind::Phone) != 0 {
            let covered: Vec<Range<usize>> = out.iter().map(|f| f.range.clone()).collect();
            out.extend(phone::find(text, &covered).into_iter().map(phone_finding));
        }
        Self::resolve(out)
    }

    /// For every pattern with a capture group and every match of it in `text`: the group as the regex
    /// engine resolves it and as [`secret_of`] finds it.
    #[cfg(test)]
    pub fn secret_pairs(&self, text: &str) -> Vec<(Range<usize>, Range<usize>)> {
        let mut out = Vec::new();
        for p in self.patterns.iter().filter(|p| p.group != 0) {
            for c in p.re().captures_iter(text) {
                let (Some(m), Some(g)) = (c.get(0), group_of(&c, p.group)) else {
                    continue;
                };
                out.push((g.range(), secret_of(p.kind, text, m.range())));
            }
        }
        out
    }

    /// Sorts findings by start and drops overlaps (the earlier, then the longer, finding wins).
    fn resolve(mut out: Vec<Finding>) -> Vec<Finding> {
        out.sort_by(|a, b| {
            a.range
                .start
                .cmp(&b.range.start)
                .then(b.range.end.cmp(&a.range.end))
        });
        let mut kept: Vec<Finding> = Vec::with_capacity(out.len());
        for f in out {
            if kept.last().is_none_or(|k| f.range.start >= k.range.end) {
                kept.push(f);
            }
        }
        kept
    }
}

/// The secret of a match: group 0 for a pattern without groups, else the first group that took part (the
/// password pattern has one per form of value).
#[cfg(test)]
fn group_of<'t>(c: &regex::Captures<'t>, group: usize) -> Option<regex::Match<'t>> {
    if group == 0 {
        c.get(0)
    } else {
        c.iter().skip(group).flatten().next()
    }
}

/// A phone number's finding: a partial mask keeps its last two digits.
fn phone_finding(r: Range<usize>) -> Finding {
    Finding {
        kind: Kind::Phone,
        keep: Some(r.end.saturating_sub(2).max(r.start)..r.end),
        range: r,
    }
}

/// Where capture group 1 of a pattern with a group lies inside a whole match `m` of it, found from the
/// pattern's shape instead of by the regex engine (tested against `captures` in `gate_equals_ungated`):
///
/// - bearer: the word, whitespace, then the group: it starts after the first run of whitespace;
/// - password: key characters and a key word (neither `=`, `:` nor whitespace), an optional quote,
///   whitespace, then `=` or `:`, whitespace and an optional `\"`, `"` or `'`, then the group (a bare
///   value starts with none of them): it starts after the first `=`/`:`, the whitespace and the quote;
/// - url userinfo: a scheme (no `:`), `://`, the group, then `@` which ends the match.
///
/// The group always ends where the match does, except url userinfo's before its final `@`.
fn secret_of(kind: Kind, text: &str, m: Range<usize>) -> Range<usize> {
    let s = &text[m.clone()];
    let skip_space = |from: usize| {
        s[from..]
            .char_indices()
            .find(|(_, c)| !c.is_whitespace())
            .map_or(s.len(), |(i, _)| from + i)
    };
    let start = match kind {
        Kind::Bearer => {
            let ws = s.find(char::is_whitespace).unwrap_or(s.len());
            skip_space(ws)
        }
        Kind::Password => {
            let sep = s.find(['=', ':']).map_or(s.len(), |i| i + 1);
            let at = skip_space(sep);
            match (s.as_bytes().get(at), s.as_bytes().get(at + 1)) {
                (Some(b'\\'), Some(b'"')) => at + 2,
                (Some(b'"' | b'\''), _) => at + 1,
                _ => at,
            }
        }
        Kind::UrlUserinfo => {
            let from = s.find("://").map_or(0, |i| i + 3);
            // Before the final `@`.
            let to = s.len().saturating_sub(1).max(from);
            return m.start + from..m.start + to;
        }
        _ => 0,
    };
    m.start + start.min(s.len())..m.end
}

/// ASCII whitespace as the regex `\s` sees it (non-ASCII whitespace is handled by the caller's fallback).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C)
}

/// True when `text[..end]` ends with `word` (lowercase ASCII), ignoring ASCII case.
fn ends_with_word(text: &[u8], end: usize, word: &[u8]) -> bool {
    end >= word.len() && text[end - word.len()..end].eq_ignore_ascii_case(word)
}

/// The kinds whose pattern could match somewhere in `text`: a necessary condition per kind, read from
/// the bytes without allocating. A kind outside the set has no match at all, so skipping its regex changes
/// nothing; a kind inside it still goes through its regex and validation.
///
/// - email `@`; url userinfo `://` and `@`;
/// - card 12 digits at most one space, dash or plus apart; SSN `ddd-dd-dddd` (or with spaces);
/// - IBAN two capitals then two digits; IPv4 a run of digits and dots with 3 dots and 7 bytes;
/// - IPv6 a run of hex digits, colons and dots with 2 colons and a hex digit;
/// - JWT `eyJ` twice; API keys `-----` or a format's literal (`AKIA ASIA ABIA ACCA AIza`, `gh?_`,
///   `github_pat_`, `_live_`/`_test_`, `xox?-`) in a text of at least 15 bytes;
/// - bearer `bearer|basic|token|digest` right before whitespace; password a run of key characters with
///   `pass|pwd|secret|token|credential|auth|cookie|key` in it right before optional quotes, optional
///   whitespace and `=` or `:`;
/// - phone a run of 9 `[0-9 ().+-]` (the shortest number `phone::find` takes: `+` and 8 digits).
///
/// Text with non-ASCII bytes keeps bearer and password (their `(?i)` and `\s` are Unicode-aware).
/// A table-driven pass over byte classes and counts (no positions) runs first and rules out most
/// strings; the positional checks then run only for the kinds it left.
pub fn candidates(text: &[u8]) -> u16 {
    let (coarse, classes) = coarse_candidates(text);
    if coarse == 0 {
        return 0;
    }
    exact_candidates(text, coarse, classes)
}

/// Byte classes for [`coarse_candidates`].
const DIGIT: u16 = 1;
const UPPER: u16 = 1 << 1;
const DOT: u16 = 1 << 2;
const COLON: u16 = 1 << 3;
const AT: u16 = 1 << 4;
const EQ: u16 = 1 << 5;
const SPACE: u16 = 1 << 6;
const J: u16 = 1 << 7;
/// `A`, `_` or `-`: every API key format has one.
const KEY_CHAR: u16 = 1 << 8;
const NON_ASCII: u16 = 1 << 9;
/// Space or dash: the SSN separators.
const SSN_SEP: u16 = 1 << 10;
const HEX: u16 = 1 << 11;
const PERCENT: u16 = 1 << 12;

const fn byte_classes() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if b.is_ascii_digit() {
            c |= DIGIT;
        }
        if b.is_ascii_uppercase() {
            c |= UPPER;
        }
        if b.is_ascii_hexdigit() {
            c |= HEX;
        }
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C) {
            c |= SPACE;
        }
        if matches!(b, b' ' | b'-') {
            c |= SSN_SEP;
        }
        if matches!(b, b'A' | b'_' | b'-') {
            c |= KEY_CHAR;
        }
        c |= match b {
            b'.' => DOT,
            b':' => COLON,
            b'@' => AT,
            b'=' => EQ,
            b'J' => J,
            b'%' => PERCENT,
            0x80..=0xFF => NON_ASCII,
            _ => 0,
        };
        t[i] = c;
        i += 1;
    }
    t
}

static BYTE_CLASSES: [u16; 256] = byte_classes();

/// A cheaper, looser [`candidates`]: from the classes of bytes present and two counts only, no
/// positions. Rules out most strings of a trace in a table lookup per byte.
/// Also returns the byte classes present.
fn coarse_candidates(text: &[u8]) -> (u16, u16) {
    let (mut m, mut digits, mut colons) = (0u16, 0u32, 0u32);
    for &b in text {
        m |= BYTE_CLASSES[b as usize];
        digits += u32::from(b.is_ascii_digit());
        colons += u32::from(b == b':');
    }
    let has = |c: u16| m & c != 0;
    // `%40`, a percent-encoded `@`: looked for only in the rare text with a `%`.
    let pct40 = has(PERCENT) && text.windows(3).any(|w| w == b"%40");
    let mut out = 0u16;
    let mut set = |k: Kind, yes: bool| {
        if yes {
            out |= bit(k);
        }
    };
    set(Kind::Email, has(AT) || pct40);
    set(Kind::UrlUserinfo, has(AT) && has(COLON));
    // Validation wants 12-19 digits in a card, 8-15 in a phone number.
    set(Kind::Card, digits >= 12);
    set(Kind::Phone, digits >= 8);
    set(Kind::Ssn, digits >= 9 && has(SSN_SEP));
    set(Kind::Iban, digits >= 2 && has(UPPER));
    set(Kind::Ipv4, digits >= 4 && has(DOT));
    set(Kind::Ipv6, colons >= 2 && has(HEX));
    set(Kind::Jwt, has(J) && has(DOT));
    set(Kind::Bearer, has(SPACE | NON_ASCII));
    set(Kind::Password, has(EQ | COLON));
    set(Kind::ApiKey, text.len() >= 15 && has(KEY_CHAR));
    (out, m)
}

/// The exact per-position conditions listed on [`candidates`], checked only for the kinds still in
/// `coarse`, each with its own small loop.
fn exact_candidates(text: &[u8], coarse: u16, classes: u16) -> u16 {
    let wants = |k: Kind| coarse & bit(k) != 0;
    let mut out = coarse & bit(Kind::Email);
    if wants(Kind::UrlUserinfo) && text.windows(3).any(|w| w == b"://") {
        out |= bit(Kind::UrlUserinfo);
    }
    if coarse
        & (bit(Kind::Card) | bit(Kind::Ssn) | bit(Kind::Iban) | bit(Kind::Ipv4) | bit(Kind::Phone))
        != 0
    {
        out |= numeric_candidates(text) & coarse;
    }
    if wants(Kind::Ipv6) {
        // A run of hex digits, colons and dots with 2 colons and a hex digit.
        let (mut colons, mut hex) = (0u32, 0u32);
        for &b in text {
            if b.is_ascii_hexdigit() || b == b':' || b == b'.' {
                colons += u32::from(b == b':');
                hex += u32::from(b.is_ascii_hexdigit());
                if colons >= 2 && hex >= 1 {
                    out |= bit(Kind::Ipv6);
                    break;
                }
            } else {
                (colons, hex) = (0, 0);
            }
        }
    }
    if wants(Kind::Jwt) && text.windows(3).filter(|w| w == b"eyJ").nth(1).is_some() {
        out |= bit(Kind::Jwt);
    }
    let non_ascii = classes & NON_ASCII != 0;
    if wants(Kind::Bearer)
        && (non_ascii
            || (0..text.len()).any(|i| {
                is_space(text[i])
                    && [&b"bearer"[..], b"basic", b"token", b"digest"]
                        .iter()
                        .any(|w| ends_with_word(text, i, w))
            }))
    {
        out |= bit(Kind::Bearer);
    }
    if wants(Kind::Password)
        && (non_ascii
            || (0..text.len())
                .any(|i| matches!(text[i], b'=' | b':') && password_key_before(text, i)))
    {
        out |= bit(Kind::Password);
    }
    if wants(Kind::ApiKey) && api_key_candidate(text) {
        out |= bit(Kind::ApiKey);
    }
    out
}

/// Card (12 digits at most one space, dash or plus apart), SSN (`ddd-dd-dddd`), IBAN (two capitals, two
/// digits), IPv4 (a run of digits and dots with 3 dots and 7 bytes), phone (see [`candidates`]).
fn numeric_candidates(text: &[u8]) -> u16 {
    let mut out = 0u16;
    let (mut card_run, mut card_sep) = (0u32, false);
    let (mut v4_len, mut v4_dots) = (0u32, 0u32);
    let mut phone_run = 0u32;
    for (i, &b) in text.iter().enumerate() {
        let digit = b.is_ascii_digit();
        if digit {
            card_run += 1;
            card_sep = false;
            if card_run >= 12 {
                out |= bit(Kind::Card);
            }
            if i >= 10 && is_ssn_at(text, i) {
                out |= bit(Kind::Ssn);
            }
            if i >= 3
                && text[i - 1].is_ascii_digit()
                && text[i - 2].is_ascii_uppercase()
                && text[i - 3].is_ascii_uppercase()
            {
                out |= bit(Kind::Iban);
            }
        } else if (b == b' ' || b == b'-' || b == b'+') && card_run > 0 && !card_sep {
            card_sep = true;
        } else {
            card_run = 0;
            card_sep = false;
        }
        if digit || b == b'.' {
            v4_len += 1;
            v4_dots += u32::from(b == b'.');
            if v4_dots >= 3 && v4_len >= 7 {
                out |= bit(Kind::Ipv4);
            }
        } else {
            (v4_len, v4_dots) = (0, 0);
        }
        if digit || matches!(b, b' ' | b'(' | b')' | b'.' | b'+' | b'-') {
            phone_run += 1;
            if phone_run >= 9 {
                out |= bit(Kind::Phone);
            }
        } else {
            phone_run = 0;
        }
    }
    out
}

/// A literal that starts or marks an API key format (`AKIA ASIA ABIA ACCA AIza`, `gh?_`, `github_pat_`,
/// `_live_`/`_test_`, `xox?-`), or `-----` (a private key block). Every format is at least 15 bytes,
/// which the caller checked.
fn api_key_candidate(text: &[u8]) -> bool {
    (0..text.len()).any(|i| match text[i] {
        b'A' => [&b"AKIA"[..], b"ASIA", b"ABIA", b"ACCA", b"AIza"]
            .iter()
            .any(|l| text[i..].starts_with(l)),
        b'_' => {
            i >= 3
                && &text[i - 3..i - 1] == b"gh"
                && matches!(text[i - 1], b'p' | b'o' | b'u' | b's' | b'r')
                || [&b"github_pat"[..], b"_live", b"_test"]
                    .iter()
                    .any(|w| text[..i].ends_with(w))
        }
        b'-' => i >= 4 && (&text[i - 4..i - 1] == b"xox" || &text[i - 4..i] == b"----"),
        _ => false,
    })
}

/// Whether `text` has the SSN shape `ddd-dd-dddd` (or with spaces) ending at `end` (inclusive).
fn is_ssn_at(text: &[u8], end: usize) -> bool {
    let s = &text[end - 10..=end];
    let sep = |b: u8| b == b' ' || b == b'-';
    sep(s[3])
        && sep(s[6])
        && s.iter()
            .enumerate()
            .all(|(k, b)| k == 3 || k == 6 || b.is_ascii_digit())
}

/// Whether the bytes before the `=` or `:` at `at` hold a password-like key: optional ASCII whitespace,
/// optional quotes and backslashes, then a run of key characters containing one of the password
/// pattern's stems (`pass pwd secret token credential auth cookie key`, any case). The key's words are
/// judged later ([`is_secret_key`]); this only rules texts out.
fn password_key_before(text: &[u8], at: usize) -> bool {
    let mut end = at;
    while end > 0 && is_space(text[end - 1]) {
        end -= 1;
    }
    while end > 0 && matches!(text[end - 1], b'"' | b'\'' | b'\\') {
        end -= 1;
    }
    // One pass back over the key characters, dispatching on each byte's letter.
    let mut j = end;
    while j > 0 && is_key_byte(text[j - 1]) {
        j -= 1;
        let at = |w: &[u8]| end - j >= w.len() && text[j..j + w.len()].eq_ignore_ascii_case(w);
        let hit = match text[j] | 0x20 {
            b'p' => at(b"pass") || at(b"pwd"),
            b's' => at(b"secret"),
            b't' => at(b"token"),
            b'c' => at(b"credential") || at(b"cookie"),
            b'a' => at(b"auth"),
            b'k' => at(b"key"),
            _ => false,
        };
        if hit {
            return true;
        }
    }
    false
}

fn byte_before(text: &str, at: usize) -> Option<u8> {
    at.checked_sub(1).map(|i| text.as_bytes()[i])
}

fn byte_at(text: &str, at: usize) -> Option<u8> {
    text.as_bytes().get(at).copied()
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// True when a numeric candidate is a whole token: not glued to more digits, letters or a dotted/dashed
/// continuation (`1.2.3.4.5`, `ORD-1234...` stays a candidate, `x4111...` does not).
fn standalone_number(text: &str, r: &Range<usize>, joiners: &[u8]) -> bool {
    let before_ok = match byte_before(text, r.start) {
        None => true,
        Some(b) if is_word(b) => false,
        Some(b) if joiners.contains(&b) => {
            !byte_before(text, r.start - 1).is_some_and(|c| c.is_ascii_digit())
        }
        Some(_) => true,
    };
    let after_ok = match byte_at(text, r.end) {
        None => true,
        Some(b) if is_word(b) => false,
        Some(b) if joiners.contains(&b) => {
            !byte_at(text, r.end + 1).is_some_and(|c| c.is_ascii_digit())
        }
        Some(_) => true,
    };
    before_ok && after_ok
}

/// Start of the last `n` alphanumeric characters of `text[r]`.
fn last_alnum(text: &str, r: &Range<usize>, n: usize) -> usize {
    let mut seen = 0;
    for i in (r.start..r.end).rev() {
        if text.as_bytes()[i].is_ascii_alphanumeric() {
            seen += 1;
            if seen == n {
                return i;
            }
        }
    }
    r.start
}

fn digits_of(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// The Luhn checksum (ISO/IEC 7812).
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut d = u32::from(d);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// Whether a number's prefix and length belong to a card scheme (Visa, Mastercard, Amex, Discover, JCB,
/// Diners, UnionPay, Maestro): cuts the 1-in-10 Luhn passes of arbitrary ids further.
fn card_scheme(d: &[u8]) -> bool {
    let n = d.len();
    let prefix = |k: usize| d.iter().take(k).fold(0u32, |a, &x| a * 10 + u32::from(x));
    match d[0] {
        4 => matches!(n, 13 | 16 | 19),
        5 => {
            (51..=55).contains(&prefix(2)) && n == 16
                || matches!(prefix(2), 50 | 56..=59) && (12..=19).contains(&n)
        }
        2 => (2221..=2720).contains(&prefix(4)) && n == 16,
        3 => {
            matches!(prefix(2), 34 | 37) && n == 15
                || (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&n)
                || ((300..=305).contains(&prefix(3)) || matches!(prefix(2), 36 | 38 | 39))
                    && (14..=19).contains(&n)
        }
        6 => (12..=19).contains(&n),
        _ => false,
    }
}

/// Separators, when present, must group the digits like a printed card: fours (the last group 1-4), or
/// Amex/Diners 4-6-5 / 4-6-4, with one kind of separator (space, dash, or `+` in a form-encoded URL).
fn card_grouping(s: &str) -> bool {
    let groups: Vec<usize> = s.split([' ', '-', '+']).map(str::len).collect();
    if groups.len() == 1 {
        return true;
    }
    let kinds = [' ', '-', '+'].iter().filter(|c| s.contains(**c)).count();
    if kinds > 1 {
        return false;
    }
    let fours = groups[..groups.len() - 1].iter().all(|&g| g == 4)
        && (1..=4).contains(&groups[groups.len() - 1]);
    fours || groups == [4, 6, 5] || groups == [4, 6, 4]
}

fn validate(kind: Kind, text: &str, r: Range<usize>) -> Option<Finding> {
    let s = &text[r.clone()];
    let whole = |keep: Option<Range<usize>>| {
        Some(Finding {
            kind,
            range: r.clone(),
            keep,
        })
    };
    match kind {
        Kind::Email => {
            let at = s.find('@').or_else(|| s.find("%40"))?;
            // A local part cannot start or end with a dot.
            let local = &s[..at];
            if local == "REDACTED"
                || local.starts_with('.')
                || local.ends_with('.')
                || byte_before(text, r.start).is_some_and(is_word)
            {
                return None;
            }
            whole(Some(r.start + at..r.end))
        }
        Kind::Card => {
            if !standalone_number(text, &r, b"-.+ ") {
                return None;
            }
            let d = digits_of(s);
            if !(12..=19).contains(&d.len()) || !card_grouping(s) || !card_scheme(&d) || !luhn(&d) {
                return None;
            }
            // Keep the last four digits.
            whole(Some(last_alnum(text, &r, 4)..r.end))
        }
        Kind::Ssn => {
            if !standalone_number(text, &r, b"-. ") {
                return None;
            }
            let sep = s.as_bytes()[3];
            if s.as_bytes()[6] != sep {
                return None;
            }
            let d = digits_of(s);
            let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
            let group = u32::from(d[3]) * 10 + u32::from(d[4]);
            let serial = d[5..].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
            if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
                return None;
            }
            // Advertised, invalid numbers.
            if s == "078-05-1120" || s == "219-09-9999" {
                return None;
            }
            whole(Some(r.end - 4..r.end))
        }
        Kind::Iban => {
            if byte_before(text, r.start).is_some_and(is_word)
                || byte_at(text, r.end).is_some_and(is_word)
            {
                return None;
            }
            let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').collect();
            if !(15..=34).contains(&compact.len()) || !iban_mod97(&compact) {
                return None;
            }
            whole(Some(last_alnum(text, &r, 4)..r.end))
        }
        Kind::Ipv4 => {
            if !standalone_number(text, &r, b".") {
                return None;
            }
            // Reject leading zeros ("01.02.2024" style dates and padded numbers) and octets past 255.
            let ok = s
                .split('.')
                .all(|o| o.parse::<u8>().is_ok() && (o == "0" || !o.starts_with('0')));
            // A dotted version glued to a `v` ("v1.2.3.4") is not an address.
            if !ok || byte_before(text, r.start).is_some_and(|b| b == b'v' || b == b'V') {
                return None;
            }
            whole(None)
        }
        Kind::Ipv6 => {
            let t = s.trim_end_matches(':');
            let r = r.start..r.start + t.len();
            if t.matches(':').count() < 2
                || byte_before(text, r.start).is_some_and(|b| is_word(b) || b == b':')
                || byte_at(text, r.end).is_some_and(is_word)
                || t.parse::<std::net::Ipv6Addr>().is_err()
                || !t.bytes().any(|b| b.is_ascii_hexdigit())
            {
                return None;
            }
            Some(Finding {
                kind,
                range: r,
                keep: None,
            })
        }
        Kind::Jwt => {
            if byte_before(text, r.start).is_some_and(is_word) {
                return None;
            }
            whole(None)
        }
        // What the URL sanitizer or an earlier redaction already wrote is not a secret.
        Kind::UrlUserinfo if s == "REDACTED:REDACTED" => None,
        Kind::Password | Kind::Bearer
            if s.starts_with("REDACTED") || s.starts_with("[REDACTED") =>
        {
            None
        }
        Kind::Password => {
            let key = key_before_separator(&text[..r.start]);
            if placeholder_value(&text[r.start..], s)
                || working_directory(key, s)
                || !is_secret_key(key)
            {
                return None;
            }
            // An escaped JSON string (`\"password\":\"x\"`) ends before the backslash of its quote.
            let end = if s.len() > 1 && s.ends_with('\\') {
                r.end - 1
            } else {
                r.end
            };
            Some(Finding {
                kind,
                range: r.start..end,
                keep: None,
            })
        }
        // A private key block goes whole: its BEGIN line, the key material and headers, the END line.
        Kind::ApiKey if s.starts_with("-----BEGIN") => Some(Finding {
            kind,
            range: r.start..pem_end(text, r.end),
            keep: None,
        }),
        Kind::Bearer | Kind::ApiKey | Kind::UrlUserinfo => whole(None),
        // Phone numbers have no pattern: `phone::find` validates as it parses.
        Kind::Phone => None,
    }
}

/// Where a private key block whose BEGIN line ends at `from` ends: after its `-----END ...-----` line, or
/// at the end of the text when it has none (a cut value, a block split over several strings: everything
/// after the BEGIN line may be key material).
fn pem_end(text: &str, from: usize) -> usize {
    let rest = &text[from..];
    let Some(at) = rest.find("-----END ") else {
        return text.len();
    };
    let after = at + "-----END ".len();
    match rest[after..].find("-----") {
        // The END line's label is short (`RSA PRIVATE KEY`); past that the block's footer is broken.
        Some(close) if close <= 40 => from + after + close + "-----".len(),
        _ => text.len(),
    }
}

/// The key of a `key=value` match: the key characters right before the `=`/`:` at the end of `before`
/// (the text up to the value), without the whitespace, quote and backslash between them.
fn key_before_separator(before: &str) -> &str {
    let b = before.as_bytes();
    let mut end = b.len();
    // The value's opening quote and the whitespace after the separator.
    while end > 0 && matches!(b[end - 1], b'"' | b'\'' | b'\\') {
        end -= 1;
    }
    while end > 0 && (is_space(b[end - 1]) || !b[end - 1].is_ascii()) {
        end -= 1;
    }
    if end > 0 && matches!(b[end - 1], b'=' | b':') {
        end -= 1;
    }
    while end > 0 && (is_space(b[end - 1]) || !b[end - 1].is_ascii()) {
        end -= 1;
    }
    while end > 0 && matches!(b[end - 1], b'"' | b'\'' | b'\\') {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && (is_key_byte(b[start - 1]) || !b[start - 1].is_ascii()) {
        start -= 1;
    }
    // On a character boundary: the loops stepped over whole non-ASCII characters only.
    before.get(start..end).unwrap_or("")
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Values that stand for no secret: booleans and empty markers, what a redaction already wrote, masks,
/// template (`${VAR}`, `{{ var }}`: `from` is the text from the value on) and SQL placeholders, auth scheme names (the bearer detector takes the credential after them).
fn placeholder_value(from: &str, v: &str) -> bool {
    const WORDS: &[&str] = &[
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "null",
        "nil",
        "none",
        "undefined",
        "empty",
        "required",
        "optional",
        "missing",
        "invalid",
        "expired",
        "redacted",
        "bearer",
        "basic",
        "digest",
        "negotiate",
        "?",
    ];
    let v = v.trim();
    WORDS.iter().any(|w| v.eq_ignore_ascii_case(w))
        || v.starts_with("REDACTED")
        || v.starts_with("[REDACTED")
        || from.starts_with("${")
        || from.starts_with("{{")
        || v.starts_with("%s")
        || v.bytes().all(|b| matches!(b, b'*' | b'x' | b'X' | b'.'))
        || (v.len() > 1 && v.starts_with('$') && v[1..].bytes().all(|b| b.is_ascii_digit()))
}

/// `PWD=/home/app`: the working directory in an environment dump, not a password.
fn working_directory(key: &str, value: &str) -> bool {
    (key.eq_ignore_ascii_case("pwd") || key.eq_ignore_ascii_case("oldpwd"))
        && (value.starts_with('/') || value.starts_with('~'))
}

/// Words that name a secret on their own, also at the end of a longer word (`accesstoken`, `dbpassword`).
const SECRET_WORD_ENDINGS: &[&str] = &[
    "password",
    "passwords",
    "passwd",
    "pwd",
    "passphrase",
    "passcode",
    "secret",
    "secrets",
    "token",
    "credential",
    "credentials",
    "apikey",
    "accesskey",
    "privatekey",
    "secretkey",
    "authkey",
    "cookie",
    "cookies",
];

/// Words that name a secret only as a whole word (`pass` but not `bypass`, `auth` but not `oauth`).
const SECRET_WORDS: &[&str] = &["pass", "auth", "authorization", "authentication"];

/// Words that make a following `key` a secret key (`api_key`, `PRIVATE-KEY`, `secret_access_key`).
const KEY_QUALIFIERS: &[&str] = &[
    "api",
    "access",
    "private",
    "secret",
    "signing",
    "encryption",
    "master",
    "client",
    "session",
    "auth",
];

/// Words that may follow the secret in its key and keep it one (`SECRET_ACCESS_KEY`, `password_hash`,
/// `token_value`); any other (`token_count`, `token_type`, `password_policy`, `secret_name`) says the
/// value is about the secret, not the secret.
const SECRET_TAIL_WORDS: &[&str] = &[
    "key",
    "keys",
    "access",
    "value",
    "val",
    "b64",
    "base64",
    "hex",
    "hash",
    "enc",
    "encrypted",
    "raw",
    "plain",
    "plaintext",
    "str",
    "string",
    "data",
    "material",
    "base",
    "old",
    "new",
    "current",
    "confirm",
    "confirmation",
    "text",
];

/// Words before the secret that say the value is a setting about it (`max_tokens`, `require_password`).
const SETTING_HEAD_WORDS: &[&str] = &[
    "max", "min", "num", "count", "total", "has", "is", "use", "enable", "disable", "require",
    "allow",
];

/// The words of a key, lower-case: split at every non-alphanumeric character and at camelCase
/// boundaries (`clientSecret`, `APIKey`, `AWS_SECRET_ACCESS_KEY`, `x-api-key`), trailing digits dropped
/// (`password2`). The long s and the Kelvin sign fold to `s` and `k` as the regex's case folding does.
fn key_words(key: &str) -> Vec<String> {
    let chars: Vec<char> = key
        .chars()
        .map(|c| match c {
            '\u{17f}' => 's',
            '\u{212a}' => 'k',
            c => c,
        })
        .collect();
    let mut words = Vec::new();
    let mut w = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !w.is_empty() {
                words.push(std::mem::take(&mut w));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1);
        let boundary = c.is_uppercase()
            && (prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
                || (prev.is_some_and(char::is_uppercase)
                    && next.is_some_and(|n| n.is_lowercase())));
        if boundary && !w.is_empty() {
            words.push(std::mem::take(&mut w));
        }
        w.extend(c.to_lowercase());
    }
    if !w.is_empty() {
        words.push(w);
    }
    for w in &mut words {
        let t = w.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if t > 0 {
            w.truncate(t);
        }
    }
    words
}

/// Whether a key (an attribute key, or the key of a `key=value` in text) names a secret, in any case and
/// separator style: a secret word (`password`, `passwd`, `pwd`, `secret`, `token`, `credential`, `auth`,
/// `authorization`, `cookie`, or `key` after `api`, `access`, `private`, `signing`, ...), followed only by
/// words that keep it one (`key`, `value`, `hash`, ...), and not after a word that makes it a setting
/// (`max`, `require`, `is`, ...). `AWS_SECRET_ACCESS_KEY`, `clientSecret`, `x-api-key`, `db.password`
/// are secret keys; `token_count`, `max_tokens`, `secret_name`, `auth_method`, `author` are not.
pub fn is_secret_key(key: &str) -> bool {
    let words = key_words(key);
    let mut last = None;
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        let n = if KEY_QUALIFIERS.contains(&w)
            && words.get(i + 1).is_some_and(|k| k == "key" || k == "keys")
        {
            2
        } else if SECRET_WORDS.contains(&w) || SECRET_WORD_ENDINGS.iter().any(|e| w.ends_with(e)) {
            1
        } else {
            0
        };
        if n > 0 {
            last = Some((i, i + n));
            i += n;
        } else {
            i += 1;
        }
    }
    let Some((start, end)) = last else {
        return false;
    };
    words[end..]
        .iter()
        .all(|w| SECRET_TAIL_WORDS.contains(&w.as_str()))
        && !words[..start]
            .iter()
            .any(|w| SETTING_HEAD_WORDS.contains(&w.as_str()))
}

/// The IBAN check: move the first four characters to the end, letters to numbers (A=10), mod 97 == 1.
pub fn iban_mod97(iban: &[u8]) -> bool {
    let mut rem = 0u32;
    for &b in iban[4..].iter().chain(&iban[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod pattern_tests {
    use super::*;

    /// What makes [`Pattern::re`]'s `expect` safe: every pattern of every kind compiles.
    #[test]
    fn every_detector_pattern_compiles() {
        let d = Detectors::new(&Kind::ALL);
        assert!(
            d.patterns.len() >= Kind::ALL.len() - 1,
            "every kind but phone has patterns"
        );
        for p in &d.patterns {
            assert!(Regex::new(p.source).is_ok(), "{:?}: {}", p.kind, p.source);
            // The lazily compiled regex is the same pattern.
            assert_eq!(p.re().as_str(), p.source);
        }
    }
}
