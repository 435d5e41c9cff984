// An email/card/password redactor in JavaScript: exactly the rule of the Rust reference redactor
// (plugins/example-redactor), so that host/tests/languages.rs can check both return the same edits.
// Only string-typed attribute values are looked at:
//   1. key `password`: the attribute is removed (reason `password`);
//   2. a value of only ASCII digits, spaces and `-` with 13 to 19 digits (a card number): every digit but
//      the last four is masked, one 1-byte range per digit (reason `card`);
//   3. otherwise the local part of each email-looking token is masked up to the `@` (reason `email`).
// Config: {} (no options). Build: ../build.sh (componentize-js), world tailgate:plugin/redactor@0.1.0.
//
// The trace arrives packed: `trace.text` is one Uint8Array holding every string, and each field names a
// byte range of it. Matching works on those bytes (ASCII only), so ranges fall on UTF-8 boundaries.

const ATTRIBUTE_KINDS = new Set([
  "resource-attribute",
  "scope-attribute",
  "span-attribute",
  "event-attribute",
  "link-attribute",
]);
const PASSWORD = Array.from("password", (c) => c.charCodeAt(0));

const isDigit = (b) => b >= 0x30 && b <= 0x39;
const isAlnum = (b) => isDigit(b) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
// . _ % + -
const isLocal = (b) => isAlnum(b) || b === 0x2e || b === 0x5f || b === 0x25 || b === 0x2b || b === 0x2d;
// . -
const isDomain = (b) => isAlnum(b) || b === 0x2e || b === 0x2d;

function equals(bytes, expected) {
  return bytes.length === expected.length && bytes.every((b, i) => b === expected[i]);
}

/** Digit positions to mask when `v` is a card number (all but the last four), or null. */
function cardDigits(v) {
  const digits = [];
  for (let i = 0; i < v.length; i++) {
    if (isDigit(v[i])) {
      digits.push(i);
    } else if (v[i] !== 0x20 && v[i] !== 0x2d) {
      return null;
    }
  }
  if (digits.length < 13 || digits.length > 19) {
    return null;
  }
  return digits.slice(0, digits.length - 4);
}

/** Mask ranges over the local part of each email in `v`. */
function emailLocals(v) {
  const out = [];
  let i = 0;
  while (i < v.length) {
    if (v[i] !== 0x40) {
      i++;
      continue;
    }
    let start = i;
    while (start > 0 && isLocal(v[start - 1])) start--;
    let end = i + 1;
    while (end < v.length && isDomain(v[end])) end++;
    let dotted = false;
    for (let j = i + 2; j < end - 1; j++) {
      if (v[j] === 0x2e) dotted = true;
    }
    if (start < i && dotted) {
      out.push({ start, len: i - start });
      i = end;
    } else {
      i++;
    }
  }
  return out;
}

export const redaction = {
  init(config) {
    let conf;
    try {
      conf = JSON.parse(config || "{}");
    } catch (e) {
      throw `invalid configuration: ${e.message}`;
    }
    if (conf === null || typeof conf !== "object" || Array.isArray(conf)) {
      throw "invalid configuration: expected a JSON object";
    }
    for (const key of Object.keys(conf)) {
      throw `invalid configuration: unknown field \`${key}\`, this redactor has no options`;
    }
    return { spanAttributes: [], resourceAttributes: [], scopeAttributes: [], fullTrace: false, stateful: false };
  },

  redact(_summary, trace) {
    const text = trace.text;
    const edits = [];
    trace.fields.forEach((f, field) => {
      if (!ATTRIBUTE_KINDS.has(f.kind) || f.valueType !== "str") {
        return;
      }
      const key = text.subarray(f.key.offset, f.key.offset + f.key.len);
      if (equals(key, PASSWORD)) {
        edits.push({ field, action: { tag: "remove" }, reason: "password" });
        return;
      }
      const value = text.subarray(f.value.offset, f.value.offset + f.value.len);
      const digits = cardDigits(value);
      if (digits !== null) {
        const ranges = digits.map((start) => ({ start, len: 1 }));
        edits.push({ field, action: { tag: "mask", val: ranges }, reason: "card" });
        return;
      }
      const emails = emailLocals(value);
      if (emails.length > 0) {
        edits.push({ field, action: { tag: "mask", val: emails }, reason: "email" });
      }
    });
    return edits;
  },
};
