//! Phone numbers, found by a hand-written validating parser rather than a regex, so the detector can be
//! on by default: a number is only a phone number in the shapes people write them, and ids, timestamps,
//! versions, dates, card numbers and digit runs are not.
//!
//! Accepted (every character in `[0-9 ().+-]`, which the byte gate relies on):
//!
//! - **International**, `+` or `00` then an assigned country calling code (ITU-T E.164 prefixes), then the
//!   national number: `+1 415-555-0100`, `+44 20 7946 0958`, `+33 1 23 45 67 89`, `+49 (0) 30 123456`,
//!   `0044 20 7946 0958`, compact `+14155550100`. `+1` and `+7` need exactly 10 national digits (NANP:
//!   area and exchange codes `[2-9]dd`, not `N11`); other codes 6-12, at most 15 digits in all (E.164).
//! - **NANP national**, 3-3-4 digits with one kind of separator or a parenthesized area code, optionally
//!   after a `1` trunk: `(415) 555-0100`, `415-555-0100`, `415.555.0100`, `1-800-555-0199`.
//! - **Trunk-0 national** (most of Europe, Asia, Oceania): `0` then a non-zero digit, 10-11 digits in at
//!   least two groups of 2+ digits with one kind of separator (space or dash), or a parenthesized first
//!   group: `020 7946 0958`, `06 12 34 56 78`, `07911 123456`, `(030) 1234567`.
//!
//! Never: digits without separators and without `+` (ids, epoch seconds), a number glued to letters,
//! digits or a dotted/dashed continuation (`ORD-2024-000123`, UUID groups, `1.2.3.4.5`), a `+` after a
//! digit (`1+2`), groups that do not fit a shape above (dates `2024-01-15`, times, SSNs `123-45-6789`,
//! cards `4111 1111 1111 1111`, semver, IPs).
//!
//! `libphonenumber` ports (the `phonenumber` crate) were not used: their metadata and per-country regexes
//! add about a megabyte to the component and run a full parse per candidate on the hot path, while
//! redaction needs "is this shaped like a real phone number", not carrier or region details.

use std::ops::Range;

/// The byte ranges of the phone numbers in `text`, in order, not overlapping. Runs whose digits lie inside
/// one of `covered` (the other detectors' findings: a card, an IP address) are not looked at: whatever
/// phone number they hold is redacted with them.
pub fn find(text: &str, covered: &[Range<usize>]) -> Vec<Range<usize>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut groups = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !is_phone_byte(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let (mut digits, mut first, mut last) = (0, usize::MAX, 0);
        // A number starts at the run's start, after a space or at a `(` or `+`: inside a run joined only
        // by `-` and `.` every group but the first is glued to digits.
        let mut opens = false;
        while i < b.len() && is_phone_byte(b[i]) {
            if b[i].is_ascii_digit() {
                digits += 1;
                first = first.min(i);
                last = i;
            } else {
                opens |= matches!(b[i], b' ' | b'(' | b'+');
            }
            i += 1;
        }
        let glued = start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        // The shortest number is `+` and 8 digits, or 10 digits with separators.
        if i - start < 9 || digits < 8 || (glued && !opens) {
            continue;
        }
        if covered.iter().any(|c| c.start <= first && last < c.end) {
            continue;
        }
        groups_of(b, start, i, &mut groups);
        find_in_run(b, &groups, &mut out);
    }
    out
}

fn is_phone_byte(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b' ' | b'(' | b')' | b'.' | b'+' | b'-')
}

/// A group of digits and what stands between it and the group before.
#[derive(Debug, Clone, Copy)]
struct Group {
    /// Byte range of the digits.
    start: usize,
    end: usize,
    /// The separator before it: `b' '`, `b'-'`, `b'.'`, `0` for none (first group).
    sep: u8,
    /// Wrapped in parentheses.
    paren: bool,
}

/// Finds phone numbers in a run of phone bytes (its `groups`): tries each group that can start a number,
/// longest candidate first.
fn find_in_run(b: &[u8], groups: &[Group], out: &mut Vec<Range<usize>>) {
    let mut g = 0;
    while g < groups.len() {
        let mut found = None;
        // At most 7 groups in a number (`+33 1 23 45 67 89` has 6 after the code).
        let last = (g + 8).min(groups.len());
        for e in (g..last).rev() {
            if let Some(r) = number(b, &groups[g..=e]) {
                found = Some((e, r));
                break;
            }
        }
        match found {
            Some((e, r)) => {
                out.push(r);
                g = e + 1;
            }
            None => g += 1,
        }
    }
}

/// The digit groups of a run, with their separators; a group boundary that is not a single separator
/// (`--`, `..`, ` - `, a stray `(`) starts over, so it splits the run into independent parts.
fn groups_of(b: &[u8], from: usize, to: usize, out: &mut Vec<Group>) {
    out.clear();
    let mut i = from;
    // Bytes between the previous group and this one.
    let mut gap_start = from;
    while i < to {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < to && b[i].is_ascii_digit() {
            i += 1;
        }
        let gap = &b[gap_start..start];
        let (sep, paren, ok) = match (out.last(), gap) {
            // The first group: anything before it is checked by `number` (a `+`, a `(`).
            (None, _) => (0, gap.ends_with(b"("), true),
            (Some(p), g) if p.paren => match g {
                b")" => (0, false, true),
                b") " => (b' ', false, true),
                b")-" => (b'-', false, true),
                _ => (0, false, false),
            },
            (Some(_), b" " | b"-" | b".") => (gap[0], false, true),
            (Some(_), b" (" | b"(") => (b' ', true, true),
            _ => (0, false, false),
        };
        let closes = b.get(i) == Some(&b')');
        if !ok {
            // Not a separator: a new, independent sequence starts at this group.
            out.push(Group {
                start,
                end: i,
                sep: 0xff,
                paren: gap.ends_with(b"(") && closes,
            });
        } else {
            out.push(Group {
                start,
                end: i,
                sep,
                paren: paren && closes,
            });
        }
        gap_start = i;
    }
}

fn digits(g: &Group) -> usize {
    g.end - g.start
}

/// Whether `groups` (consecutive groups of one run) form a phone number; its byte range if so.
fn number(b: &[u8], groups: &[Group]) -> Option<Range<usize>> {
    let first = groups[0];
    let last = groups[groups.len() - 1];
    // Inside the candidate every boundary must be a real separator.
    if groups[1..].iter().any(|g| g.sep == 0xff) {
        return None;
    }
    let plus = first.start > 0 && b[first.start - 1] == b'+' && !first.paren;
    // A `+` or the `(` of a parenthesized first group belongs to the number.
    let start = if plus || first.paren {
        first.start - 1
    } else {
        first.start
    };
    let end = if last.paren { last.end + 1 } else { last.end };
    // Cheap rejections first: a national number has two groups or more, every number 8-17 digits
    // (`00`, a code and 12 national digits at most; 10 at least without a `+`).
    let count: usize = groups.iter().map(digits).sum();
    if (!plus && groups.len() < 2) || !(8..=17).contains(&count) || !standalone(b, start, end) {
        return None;
    }
    // The digits, on the stack (at most 17, checked above): this runs on every digit run of a trace.
    let mut buf = [0u8; 17];
    let mut n = 0;
    for g in groups {
        for &d in &b[g.start..g.end] {
            buf[n] = d - b'0';
            n += 1;
        }
    }
    let all = &buf[..n];
    let ok = if plus {
        international(b, groups, all, 0)
    } else if all.starts_with(&[0, 0]) && !first.paren {
        international(b, groups, all, 2)
    } else {
        national(groups, all)
    };
    ok.then_some(start..end)
}

/// Not glued to what is around it: no letter, digit or `_` next to it, and no `-`, `.`, `/`, `+`, `#` or
/// `:` joining it to a letter or digit (`ORD-2024-000123`, `1.2.3.4.5`, `v1.2.3`, `12:30:45`).
fn standalone(b: &[u8], start: usize, end: usize) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let joiner = |c: u8| matches!(c, b'-' | b'.' | b'/' | b'+' | b'#' | b':' | b'%');
    let before = match start.checked_sub(1).map(|i| b[i]) {
        None => true,
        Some(c) if word(c) => false,
        // `tel:+1...`, `phone:415...`: a colon after a word is a label, after a digit a time.
        Some(b':') => !start.checked_sub(2).is_some_and(|i| b[i].is_ascii_digit()),
        Some(c) if joiner(c) => !start.checked_sub(2).is_some_and(|i| word(b[i])),
        Some(_) => true,
    };
    let after = match b.get(end) {
        None => true,
        Some(&c) if word(c) => false,
        Some(&c) if joiner(c) => !b.get(end + 1).is_some_and(|&n| word(n)),
        Some(_) => true,
    };
    before && after
}

/// The separators between `groups` are all the same (space, dash or dot); a
/// parenthesized group may sit among them.
fn uniform(groups: &[Group]) -> bool {
    let mut kind = None;
    for g in groups {
        if g.sep == 0 {
            continue;
        }
        match kind {
            None => kind = Some(g.sep),
            Some(k) if k == g.sep => {}
            Some(_) => return false,
        }
    }
    true
}

/// NANP area or exchange code: `[2-9]dd`, not `N11`.
fn nanp_code(d: &[u8]) -> bool {
    d[0] >= 2 && !(d[1] == 1 && d[2] == 1)
}

fn nanp(national: &[u8]) -> bool {
    national.len() == 10 && nanp_code(&national[..3]) && nanp_code(&national[3..6])
}

/// Length of the assigned country calling code `d` starts with (E.164 codes are a prefix code), or `None`.
fn country_code(d: &[u8]) -> Option<usize> {
    let two = |a: u8, b: u8| u32::from(a) * 10 + u32::from(b);
    match *d.first()? {
        0 => None,
        1 | 7 => Some(1),
        f => {
            let t = two(f, *d.get(1)?);
            let two_digit = matches!(
                t,
                20 | 27
                    | 30..=34
                    | 36
                    | 39
                    | 40
                    | 41
                    | 43..=49
                    | 51..=58
                    | 60..=66
                    | 81
                    | 82
                    | 84
                    | 86
                    | 90..=95
                    | 98
            );
            if two_digit {
                return Some(2);
            }
            // The three-digit codes' first two digits (the unassigned ones among them are rare enough).
            let three = matches!(
                t,
                21..=26 | 29 | 35 | 37 | 38 | 42 | 50 | 59 | 67..=69 | 80 | 85 | 87 | 88 | 96 | 97 | 99
            );
            (three && d.len() > 2).then_some(3)
        }
    }
}

/// `+` or `00` (`prefix` digits of `all`), a country code, the national number.
fn international(b: &[u8], groups: &[Group], all: &[u8], prefix: usize) -> bool {
    let d = &all[prefix..];
    let Some(cc) = country_code(d) else {
        return false;
    };
    // The code stands alone or starts the first group; a `(0)` trunk may follow it.
    let Some(first_len) = digits(&groups[0]).checked_sub(prefix) else {
        return false;
    };
    if first_len < cc {
        return false;
    }
    let mut national = &d[cc..];
    let mut rest = &groups[1..];
    if first_len == cc
        && let Some(g) = rest.first()
        && g.paren
        && b[g.start..g.end] == *b"0"
    {
        national = &national[1..];
        rest = &rest[1..];
    }
    if groups.len() == 1 {
        // Compact: `+14155550100` (never `00...` compact: that is any zero-padded number).
        if prefix != 0 {
            return false;
        }
    } else {
        // After a `+` the separators may mix (`+7 495 123-45-67`); after `00` they agree. At most one
        // single-digit group after the code (a 1-digit area code), groups of at most 8 digits unless the
        // national number is one group.
        let singles = rest.iter().filter(|g| digits(g) == 1).count();
        let long = rest.len() > 1 && rest.iter().any(|g| digits(g) > 8);
        if (prefix != 0 && !uniform(rest)) || singles > 1 || long {
            return false;
        }
    }
    match d[0] {
        1 => nanp(national),
        7 => national.len() == 10,
        _ => (6..=12).contains(&national.len()) && cc + national.len() <= 15 && national[0] != 0,
    }
}

/// NANP 3-3-4 (optionally after a `1` trunk) or trunk-0 national.
fn national(groups: &[Group], all: &[u8]) -> bool {
    let len = |i: usize| digits(&groups[i]);
    if groups.len() < 2 {
        return false;
    }
    let plain_seps = |gs: &[Group]| gs.iter().all(|g| matches!(g.sep, 0 | b' ' | b'-' | b'.'));
    // NANP: `(415) 555-0100`, `415-555-0100`, `1 415 555 0100`.
    let (nanp_groups, nanp_digits) = if groups.len() == 4 && len(0) == 1 && all[0] == 1 {
        (&groups[1..], &all[1..])
    } else {
        (groups, all)
    };
    let shape_334 = nanp_groups.len() == 3
        && digits(&nanp_groups[0]) == 3
        && digits(&nanp_groups[1]) == 3
        && digits(&nanp_groups[2]) == 4;
    if shape_334 && nanp(nanp_digits) && plain_seps(groups) {
        let paren_area = nanp_groups[0].paren;
        // A parenthesized area code may be followed by any separator; otherwise one kind throughout.
        if paren_area && !nanp_groups[1..].iter().any(|g| g.paren) {
            return uniform(&nanp_groups[2..]) || nanp_groups[2].sep == b'-';
        }
        if groups.iter().all(|g| !g.paren) && uniform(groups) {
            return true;
        }
    }
    // Trunk 0: `020 7946 0958`, `06 12 34 56 78`, `(030) 1234567`.
    if all[0] != 0 || all[1] == 0 || !(10..=11).contains(&all.len()) {
        return false;
    }
    if (0..groups.len()).any(|i| len(i) < 2) || groups[1..].iter().any(|g| g.paren) {
        return false;
    }
    // Dotted trunk-0 numbers read too much like versions and dates: space or dash only.
    groups[1..].iter().all(|g| matches!(g.sep, b' ' | b'-')) && uniform(&groups[1..])
}

#[cfg(test)]
mod tests {
    use super::find;

    fn found(text: &str) -> Vec<&str> {
        find(text, &[]).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn phone_numbers_are_found() {
        for (text, want) in [
            ("call +1 415-555-0100 now", "+1 415-555-0100"),
            ("+1 (415) 555-0100", "+1 (415) 555-0100"),
            ("tel:+14155550100", "+14155550100"),
            ("+44 20 7946 0958", "+44 20 7946 0958"),
            ("+442079460958", "+442079460958"),
            ("+33 1 23 45 67 89", "+33 1 23 45 67 89"),
            ("+49 (0) 30 123456", "+49 (0) 30 123456"),
            ("+49 30 1234567", "+49 30 1234567"),
            ("0044 20 7946 0958", "0044 20 7946 0958"),
            ("+91 98765 43210", "+91 98765 43210"),
            ("+81 3-1234-5678", "+81 3-1234-5678"),
            ("+353 1 234 5678", "+353 1 234 5678"),
            ("+7 495 123-45-67", "+7 495 123-45-67"),
            ("(415) 555-0100", "(415) 555-0100"),
            ("phone: 415-555-0100.", "415-555-0100"),
            ("415.555.0100", "415.555.0100"),
            ("415 555 0100", "415 555 0100"),
            ("1-800-555-0199", "1-800-555-0199"),
            ("020 7946 0958", "020 7946 0958"),
            ("06 12 34 56 78", "06 12 34 56 78"),
            ("07911 123456", "07911 123456"),
            ("(030) 1234567", "(030) 1234567"),
            ("\"phone\":\"+1-212-555-0187\"", "+1-212-555-0187"),
        ] {
            assert_eq!(found(text), vec![want], "{text:?}");
        }
        assert_eq!(
            found("+1 415 555 0100 020 7946 0958"),
            vec!["+1 415 555 0100", "020 7946 0958"],
            "two numbers in one run"
        );
    }

    #[test]
    fn look_alikes_are_not_phone_numbers() {
        for text in [
            "4155550100",
            "1700000000",
            "1700000000000000000",
            "+1700000000",
            "2024-01-15",
            "2024-01-15T10:20:30Z",
            "2024-01-15T10:20:30+01:00",
            "Tue, 15 Nov 1994 08:12:31 +0530",
            "12:30:45",
            "123-45-6789",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "550e8400-e29b-41d4-a716-446655440000",
            "00000000-0000-0000-0000-000000000000",
            "ORD-2024-000123",
            "1.2.3.4",
            "10.120.130.140",
            "v1.22.333",
            "1.22.3333",
            "9f86d081884c7d659a2feaa0c55ad015",
            "1Z999AA10123456784",
            "/users/{id}/orders/12345678",
            "1 234 567 890",
            "12 345 678",
            "100-200-3000",
            "911-555-0100",
            "415-111-0100",
            "1+2345678901",
            "0000 1234 5678",
            "01.02.2024 10.20",
            "(555) 0100",
            "3.14159 2.71828",
            "8080-8090",
            "x415-555-0100",
            "415-555-0100-7",
            "555-0100",
            "0044123",
            "duration 123 ms, 4567 bytes",
            "20240115 102030",
        ] {
            assert_eq!(found(text), Vec::<&str>::new(), "{text:?}");
        }
    }
}
