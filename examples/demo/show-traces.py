#!/usr/bin/env python3
"""Shows the traces tailgate kept: from Jaeger's query API, or from tailgate's file exporter's output
(OTLP/JSON, one request per line).

    python3 show-traces.py --jaeger http://127.0.0.1:16686 [--trees 3]
    python3 show-traces.py target/demo/kept-traces.jsonl [--trees 3]

Prints one line per kept trace (the rule that kept it, services, spans, duration, errors, redactions),
totals by rule, and the span tree of a few traces with the attributes tailgate redacted. With --jaeger,
each trace comes from Jaeger's own API (every service in `GET /api/services`, then its traces of the last
hour from `GET /api/v3/traces`, exactly as stored), and the lines end with the trace's links: Jaeger's UI
route `/trace/<id>` and the JSON API `/api/traces/<id>`. Standard library only.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict


def value(v: dict):
    for k in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if k in v:
            return v[k]
    if "arrayValue" in v:
        return [value(x) for x in v["arrayValue"].get("values", [])]
    return None


def attrs(items) -> dict:
    return {a["key"]: value(a.get("value", {})) for a in items or []}


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def from_jaeger(base: str) -> list:
    """Every trace Jaeger holds (started in the last hour), as OTLP/JSON requests, one per service."""
    services = get_json(f"{base}/api/services").get("data") or []
    now = time.time()
    stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    requests = []
    for service in services:
        query = urllib.parse.urlencode(
            {
                "query.service_name": service,
                "query.start_time_min": stamp(now - 3600),
                "query.start_time_max": stamp(now + 60),
                "query.num_traces": 10000,
                "query.raw_traces": "true",
            }
        )
        try:
            requests.append(get_json(f"{base}/api/v3/traces?{query}").get("result", {}))
        except urllib.error.HTTPError as e:
            if e.code != 404:  # 404: no trace for this service
                raise
    return requests


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="the file tailgate's file exporter wrote (--exporter-protocol file)")
    p.add_argument("--jaeger", metavar="URL", help="read the traces from Jaeger's query API at URL instead")
    p.add_argument("--trees", type=int, default=2, help="how many traces to print as span trees")
    a = p.parse_args()
    if bool(a.file) == bool(a.jaeger):
        p.error("give either a file or --jaeger URL")

    if a.jaeger:
        base = a.jaeger.rstrip("/")
        requests = from_jaeger(base)
        source = f"Jaeger at {base}"
    else:
        with open(a.file, encoding="utf-8") as f:
            requests = [json.loads(line) for line in f if line.strip()]
        source = a.file
    traces = defaultdict(list)
    seen = set()
    for req in requests:
        for rs in req.get("resourceSpans", []):
            service = attrs(rs.get("resource", {}).get("attributes")).get("service.name", "?")
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    # Jaeger answers a trace once per service it spans: count each span once.
                    if a.jaeger and (s["traceId"], s["spanId"]) in seen:
                        continue
                    seen.add((s["traceId"], s["spanId"]))
                    traces[s["traceId"]].append((service, s))
    if not traces:
        print(f"no traces in {source} (yet): tailgate sends a trace once it is decided and kept")
        return 1

    by_rule = Counter()
    rows = []
    for tid, spans in traces.items():
        rules = {attrs(s.get("attributes")).get("tailgate.rule") for _, s in spans} - {None}
        rule = ",".join(sorted(rules)) or "?"
        by_rule[rule] += 1
        start = min(int(s["startTimeUnixNano"]) for _, s in spans)
        end = max(int(s["endTimeUnixNano"]) for _, s in spans)
        errors = sum(1 for _, s in spans if s.get("status", {}).get("code") in (2, "STATUS_CODE_ERROR"))
        redacted = sum(int(attrs(s.get("attributes")).get("tailgate.redacted.count") or 0) for _, s in spans)
        services = sorted({svc for svc, _ in spans})
        rows.append((start, tid, rule, services, len(spans), (end - start) / 1e6, errors, redacted))

    rows.sort()
    links = "  links (UI, JSON)" if a.jaeger else ""
    print(f"{'trace id':32}  {'kept by':12}  {'spans':>5}  {'ms':>7}  {'errors':>6}  {'redacted':>8}  services{links}")
    for _, tid, rule, services, n, ms, errors, redacted in rows:
        link = f"  {base}/trace/{tid}  {base}/api/traces/{tid}" if a.jaeger else ""
        print(f"{tid:32}  {rule:12}  {n:5}  {ms:7.1f}  {errors:6}  {redacted:8}  {' -> '.join(services)}{link}")
    print(f"\n{len(rows)} traces kept ({source}): " + ", ".join(f"{n} by {r}" for r, n in sorted(by_rule.items())))

    # A few span trees, errors and slow ones first, with the redacted attributes.
    shown = sorted(rows, key=lambda r: (r[2] == "sample-10pct", r[0]))[: a.trees]
    for _, tid, rule, *_ in shown:
        spans = traces[tid]
        children = defaultdict(list)
        ids = {s["spanId"] for _, s in spans}
        for svc, s in spans:
            parent = s.get("parentSpanId") or ""
            children[parent if parent in ids else None].append((svc, s))
        print(f"\ntrace {tid} (kept by {rule}):")

        def walk(parent, depth):
            for svc, s in sorted(children.get(parent, []), key=lambda x: int(x[1]["startTimeUnixNano"])):
                ms = (int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"])) / 1e6
                status = " ERROR" if s.get("status", {}).get("code") in (2, "STATUS_CODE_ERROR") else ""
                print(f"  {'  ' * depth}{svc}: {s['name']} ({ms:.1f} ms){status}")
                at = attrs(s.get("attributes"))
                if at.get("tailgate.redacted.count"):
                    shown_keys = [k for k in at if not k.startswith("tailgate.") and (
                        "*" in str(at[k]) or "hmac:" in str(at[k]) or "REDACTED" in str(at[k]) or "?" in str(at[k]))]
                    for k in shown_keys:
                        print(f"  {'  ' * depth}    {k} = {at[k]}")
                walk(s["spanId"], depth + 1)

        walk(None, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
