"""keep-errors, in Python: the same contract and decisions as the Rust `keep-errors` plugin.

Keeps every trace with a span whose status is ERROR and, optionally, every trace with an HTTP status code
in the configured classes (`http.response.status_code` / `http.status_code`). Abstains otherwise.

Config (JSON, all optional): {"status_error": true, "http_status": ["5xx", 429]}

Build: scripts/build-plugins.sh (componentize-py 0.25.1), or by hand:
    componentize-py -d wit/v0.1.0 -w tailgate:plugin/sampler@0.1.0 componentize -p plugins/python/keep_errors app \
        -o target/plugins/python-keep-errors.wasm
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.sampling import Decision, Verdict
from wit_world.imports.types import (
    AttributeValue_Int,
    AttributeValue_Str,
    Interest,
)

STATUS_KEYS = ["http.response.status_code", "http.status_code"]
KNOWN_KEYS = {"status_error", "http_status"}


def parse_status(entry):
    """Returns a predicate on an integer status code for one `http_status` entry."""
    if isinstance(entry, bool):
        raise ValueError(f"http_status entry {entry!r} is neither a class like \"5xx\" nor a code")
    if isinstance(entry, int):
        return lambda code: code == entry
    text = str(entry).strip().lower()
    if text.endswith("xx") and text[:-2] in {"1", "2", "3", "4", "5"}:
        klass = int(text[:-2])
        return lambda code: code // 100 == klass
    if text.isdigit():
        exact = int(text)
        return lambda code: code == exact
    raise ValueError(f"http_status entry {text!r} is neither a class like \"5xx\" nor a code")


class Config:
    """The parsed configuration. Module-level: componentize-py may create a new `Sampling` per call."""

    status_error = True
    http = []


class Sampling(exports.Sampling):
    """The exported `tailgate:plugin/sampling` interface."""

    def init(self, config: str) -> Interest:
        try:
            conf = json.loads(config or "{}")
        except ValueError as e:
            raise Err(f"invalid configuration: {e}")
        if not isinstance(conf, dict):
            raise Err("invalid configuration: expected a JSON object")
        for key in conf:
            if key not in KNOWN_KEYS:
                raise Err(f"invalid configuration: unknown field `{key}`, expected one of `status_error`, `http_status`")
        Config.status_error = bool(conf.get("status_error", True))
        try:
            Config.http = [parse_status(e) for e in conf.get("http_status", [])]
        except ValueError as e:
            raise Err(f"invalid configuration: {e}")
        span_keys = STATUS_KEYS if Config.http else []
        return Interest(span_attributes=span_keys, resource_attributes=[], scope_attributes=[],
                        full_trace=False, stateful=False)

    def decide(self, summary, attributes, full) -> Decision:
        if Config.status_error and summary.error_span_count > 0:
            return Decision(verdict=Verdict.KEEP, probability=None, reason="error")
        for a in attributes:
            value = a.value
            code = None
            if isinstance(value, AttributeValue_Int):
                code = value.value
            elif isinstance(value, AttributeValue_Str) and value.value.strip().isdigit():
                code = int(value.value)
            if code is not None and any(match(code) for match in Config.http):
                return Decision(verdict=Verdict.KEEP, probability=None, reason="http_status")
        return Decision(verdict=Verdict.ABSTAIN, probability=None, reason=None)
