"""An email/card/password redactor in Python: exactly the rule of the Rust reference redactor
(plugins/example-redactor), so that host/tests/languages.rs can check both return the same edits.

Only string-typed attribute values are looked at:
  1. key `password`: the attribute is removed (reason `password`);
  2. a value of only ASCII digits, spaces and `-` with 13 to 19 digits (a card number): every digit but the
     last four is masked, one 1-byte range per digit (reason `card`);
  3. otherwise the local part of each email-looking token is masked up to the `@` (reason `email`).

The trace arrives packed: `trace.text` is one `bytes` holding every string and each field names a byte range
of it. Matching works on those bytes (ASCII only), so ranges fall on UTF-8 boundaries.

Config: {} (no options). Build: ../build.sh (componentize-py 0.25.1), or by hand from the repository root:
    componentize-py -d wit/v0.1.0 -w tailgate:plugin/redactor@0.1.0 componentize \
        -p examples/plugins/python/redactor app -o target/plugins/python-redactor.wasm
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.redaction import (
    Edit,
    EditAction_Mask,
    EditAction_Remove,
    FieldKind,
    MaskRange,
    ValueType,
)
from wit_world.imports.types import Interest

ATTRIBUTE_KINDS = {
    FieldKind.RESOURCE_ATTRIBUTE,
    FieldKind.SCOPE_ATTRIBUTE,
    FieldKind.SPAN_ATTRIBUTE,
    FieldKind.EVENT_ATTRIBUTE,
    FieldKind.LINK_ATTRIBUTE,
}
DIGITS = frozenset(b"0123456789")
ALNUM = DIGITS | frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
LOCAL = ALNUM | frozenset(b"._%+-")
DOMAIN = ALNUM | frozenset(b".-")


def card_digits(v: bytes):
    """Digit positions to mask when `v` is a card number (all but the last four), or None."""
    digits = []
    for i, b in enumerate(v):
        if b in DIGITS:
            digits.append(i)
        elif b not in b" -":
            return None
    if not 13 <= len(digits) <= 19:
        return None
    return digits[:-4]


def email_locals(v: bytes):
    """(start, len) of the local part of each email in `v`."""
    out = []
    i = 0
    while i < len(v):
        if v[i] != 0x40:  # @
            i += 1
            continue
        start = i
        while start > 0 and v[start - 1] in LOCAL:
            start -= 1
        end = i + 1
        while end < len(v) and v[end] in DOMAIN:
            end += 1
        domain = v[i + 1 : end]
        if start < i and len(domain) >= 3 and b"." in domain[1:-1]:
            out.append((start, i - start))
            i = end
        else:
            i += 1
    return out


def edits(trace):
    """The edits for a packed trace."""
    text = trace.text
    out = []
    for index, f in enumerate(trace.fields):
        if f.kind not in ATTRIBUTE_KINDS or f.value_type != ValueType.STR:
            continue
        if text[f.key.offset : f.key.offset + f.key.len] == b"password":
            out.append(Edit(field=index, action=EditAction_Remove(), reason="password"))
            continue
        value = text[f.value.offset : f.value.offset + f.value.len]
        digits = card_digits(value)
        if digits is not None:
            ranges = [MaskRange(start=d, len=1) for d in digits]
            out.append(Edit(field=index, action=EditAction_Mask(ranges), reason="card"))
            continue
        emails = email_locals(value)
        if emails:
            ranges = [MaskRange(start=s, len=n) for s, n in emails]
            out.append(Edit(field=index, action=EditAction_Mask(ranges), reason="email"))
    return out


class Redaction(exports.Redaction):
    """The exported `tailgate:plugin/redaction` interface."""

    def init(self, config: str) -> Interest:
        try:
            conf = json.loads(config or "{}")
        except ValueError as e:
            raise Err(f"invalid configuration: {e}")
        if not isinstance(conf, dict):
            raise Err("invalid configuration: expected a JSON object")
        for key in conf:
            raise Err(f"invalid configuration: unknown field `{key}`, this redactor has no options")
        return Interest(span_attributes=[], resource_attributes=[], scope_attributes=[],
                        full_trace=False, stateful=False)

    def redact(self, summary, trace):
        return edits(trace)
