"""A PII redaction processor for rotel's Python processor SDK, used by `tailgate-bench compare` as the
reference point of issue 7's redaction target ("rotel with a Python redaction processor").

It does the same kind of work as tailgate's standard `pii` plugin on the benchmark workload, kept simple
so it is a fair (fast) Python baseline: every string attribute of the resource and of every span is
checked against one combined regular expression (emails, card numbers, IPv4 addresses, bearer tokens and
JWTs, SQL string literals, secrets in URL query strings) and the matches are masked; values under
sensitive keys (passwords, tokens, card numbers, emails) are replaced whole. Status messages are
checked too.
"""

import re

from rotel_sdk.open_telemetry.common.v1 import AnyValue

_PII = re.compile(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"  # email
    r"|\b(?:\d[ -]?){13,19}\b"  # card-like digit runs
    r"|\b(?:\d{1,3}\.){3}\d{1,3}\b"  # IPv4
    r"|[Bb]earer\s+[A-Za-z0-9._~+/=-]+"  # bearer tokens
    r"|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"  # JWT
    r"|'[^']*'"  # SQL string literals
    r"|(?:token|access_token|api_key|password|secret)=[^&\s]+"  # secrets in query strings
)
_SENSITIVE_KEYS = re.compile(r"(?i)password|passwd|secret|token|authorization|card_number|email|ssn")


def _mask(m):
    return "*" * len(m.group(0))


def _redact(attributes):
    for kv in attributes:
        value = kv.value
        if value is None:
            continue
        v = value.value
        if not isinstance(v, str):
            continue
        if _SENSITIVE_KEYS.search(kv.key):
            kv.value = AnyValue("[REDACTED]")
            continue
        new = _PII.sub(_mask, v)
        if new != v:
            kv.value = AnyValue(new)


def process_spans(resource_spans):
    if resource_spans.resource is not None:
        _redact(resource_spans.resource.attributes)
    for scope_spans in resource_spans.scope_spans:
        for span in scope_spans.spans:
            _redact(span.attributes)
            status = span.status
            if status is not None and status.message:
                new = _PII.sub(_mask, status.message)
                if new != status.message:
                    status.message = new
