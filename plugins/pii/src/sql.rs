//! SQL literal scrubbing for `db.query.text` / `db.statement`: string, number, hex and dollar-quoted
//! literals become `?`; keywords, identifiers (quoted or not), operators, placeholders and comments'
//! shape stay, so the statement still groups and reads (the Collector's sanitizer over-scrubs, #44229).

/// Replaces the literals of a statement with `?`.
pub fn scrub_sql(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    // Index of the last byte copied verbatim, so runs are copied as slices.
    let mut copied = 0;
    let flush = |out: &mut String, from: usize, to: usize| out.push_str(&sql[from..to]);
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                // 'it''s' and 'it\'s'
                let mut j = i + 1;
                while j < b.len() {
                    if b[j] == b'\\' {
                        j += 2;
                        continue;
                    }
                    if b[j] == b'\'' {
                        if b.get(j + 1) == Some(&b'\'') {
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    j += 1;
                }
                flush(&mut out, copied, i);
                // A prefixed literal (E'..', N'..', X'..', B'..') keeps its prefix.
                out.push('?');
                i = (j + 1).min(b.len());
                copied = i;
            }
            b'"' | b'`' => {
                // Quoted identifiers stay.
                let close = sql[i + 1..]
                    .find(c as char)
                    .map(|k| i + 1 + k + 1)
                    .unwrap_or(b.len());
                i = close;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                // A line comment can carry anything: keep the marker, drop the text.
                let end = sql[i..].find('\n').map(|k| i + k).unwrap_or(b.len());
                flush(&mut out, copied, i);
                out.push_str("-- ?");
                i = end;
                copied = i;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = sql[i + 2..]
                    .find("*/")
                    .map(|k| i + 2 + k + 2)
                    .unwrap_or(b.len());
                let body = &sql[i..end];
                // Optimizer hints (/*+ ... */) are shape, not data.
                if !body.starts_with("/*+") {
                    flush(&mut out, copied, i);
                    out.push_str("/* ? */");
                    copied = end;
                }
                i = end;
            }
            b'$' => {
                // $1 placeholders stay; $$..$$ and $tag$..$tag$ are literals.
                let tag_end = sql[i + 1..].find('$').map(|k| i + 1 + k);
                match tag_end {
                    Some(t)
                        if sql[i + 1..t]
                            .bytes()
                            .all(|x| x.is_ascii_alphanumeric() || x == b'_')
                            && !sql[i + 1..t]
                                .bytes()
                                .next()
                                .is_some_and(|x| x.is_ascii_digit()) =>
                    {
                        let tag = &sql[i..=t];
                        let body_end = sql[t + 1..]
                            .find(tag)
                            .map(|k| t + 1 + k + tag.len())
                            .unwrap_or(b.len());
                        flush(&mut out, copied, i);
                        out.push('?');
                        i = body_end;
                        copied = i;
                    }
                    _ => {
                        i += 1;
                        while i < b.len() && b[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
            }
            b'0'..=b'9' | b'.'
                if (c != b'.' || b.get(i + 1).is_some_and(u8::is_ascii_digit))
                    && !i.checked_sub(1).is_some_and(|p| is_ident(b[p])) =>
            {
                let mut j = i;
                if c == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
                    j += 2;
                    while j < b.len() && b[j].is_ascii_hexdigit() {
                        j += 1;
                    }
                } else {
                    while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                        j += 1;
                    }
                    if j < b.len() && matches!(b[j], b'e' | b'E') {
                        let mut k = j + 1;
                        if k < b.len() && matches!(b[k], b'+' | b'-') {
                            k += 1;
                        }
                        if k < b.len() && b[k].is_ascii_digit() {
                            j = k;
                            while j < b.len() && b[j].is_ascii_digit() {
                                j += 1;
                            }
                        }
                    }
                }
                if j < b.len() && is_ident(b[j]) {
                    // Part of an identifier such as 1st_col: leave it.
                    while j < b.len() && is_ident(b[j]) {
                        j += 1;
                    }
                    i = j;
                    continue;
                }
                flush(&mut out, copied, i);
                out.push('?');
                i = j;
                copied = i;
            }
            _ if is_ident(c) => {
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    flush(&mut out, copied, b.len().min(i.max(copied)));
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::scrub_sql;

    #[test]
    fn literals_go_shape_stays() {
        assert_eq!(
            scrub_sql("SELECT * FROM users WHERE email = 'bob@example.com' AND age > 42 LIMIT 10"),
            "SELECT * FROM users WHERE email = ? AND age > ? LIMIT ?"
        );
        assert_eq!(
            scrub_sql(
                "select t1.col2 from \"Table3\" t1 where id in (1, 2.5, -3e10) and x = 'it''s'"
            ),
            "select t1.col2 from \"Table3\" t1 where id in (?, ?, -?) and x = ?"
        );
        assert_eq!(
            scrub_sql("UPDATE a SET b = $1 WHERE c = $$secret$$"),
            "UPDATE a SET b = $1 WHERE c = ?"
        );
        assert_eq!(
            scrub_sql("SELECT 0xFF -- card 4111111111111111\n"),
            "SELECT ? -- ?\n"
        );
        assert_eq!(
            scrub_sql("SELECT /*+ INDEX(a) */ 1 /* user bob */"),
            "SELECT /*+ INDEX(a) */ ? /* ? */"
        );
        assert_eq!(
            scrub_sql("INSERT INTO t VALUES ('unterminated"),
            "INSERT INTO t VALUES (?"
        );
    }
}
