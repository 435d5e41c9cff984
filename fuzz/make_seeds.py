#!/usr/bin/env python3
"""Writes the seed inputs in fuzz/corpus/<target>/seed-*: a few small, valid (and a few nearly valid) OTLP
requests in each encoding. Hand-rolled protobuf so it needs nothing installed. Run from anywhere."""
import gzip, json, os, random, struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)

def ld(field, body):  # length-delimited
    if isinstance(body, str):
        body = body.encode()
    return varint(field << 3 | 2) + varint(len(body)) + body

def vi(field, v):
    return varint(field << 3) + varint(v)

def f64(field, v):
    return varint(field << 3 | 1) + struct.pack("<Q", v)

def anyv(kind, v):
    if kind == "s": return ld(1, v)
    if kind == "b": return vi(2, 1 if v else 0)
    if kind == "i": return vi(3, v & (2**64 - 1))
    if kind == "d": return varint(4 << 3 | 1) + struct.pack("<d", v)
    if kind == "a": return ld(5, b"".join(ld(1, anyv(*x)) for x in v))
    if kind == "k": return ld(6, b"".join(ld(1, kv(*x)) for x in v))
    if kind == "y": return ld(7, v)

def kv(key, kind, v):
    return ld(1, key) + ld(2, anyv(kind, v))

def span(tid, sid, parent, name, attrs=(), events=(), links=(), status=None, ts=""):
    b = ld(1, tid) + ld(2, sid)
    if ts: b += ld(3, ts)
    if parent: b += ld(4, parent)
    b += ld(5, name) + vi(6, 2) + f64(7, 1_700_000_000_000_000_000) + f64(8, 1_700_000_000_500_000_000)
    for a in attrs: b += ld(9, kv(*a))
    for (n, ea) in events: b += ld(11, f64(1, 1_700_000_000_100_000_000) + ld(2, n) + b"".join(ld(3, kv(*a)) for a in ea))
    for (ltid, lsid, la) in links: b += ld(13, ld(1, ltid) + ld(2, lsid) + b"".join(ld(4, kv(*a)) for a in la))
    if status: b += ld(15, ld(2, status[1]) + vi(3, status[0]))
    return b

def request(resources):
    out = b""
    for (service, scopes) in resources:
        rs = ld(1, ld(1, kv("service.name", "s", service)))
        for (scope, spans) in scopes:
            rs += ld(2, ld(1, ld(1, scope) + ld(2, "1.0")) + b"".join(ld(2, s) for s in spans))
        rs += ld(3, "https://opentelemetry.io/schemas/1.26.0")
        out += ld(1, rs)
    return out

T = bytes(range(1, 17))
sample = request([
    ("frontend", [("http", [
        span(T, b"\x11" * 8, None, "GET /checkout", attrs=[
            ("http.method", "s", "GET"), ("http.status_code", "i", 200), ("ok", "b", True),
            ("ratio", "d", 0.5), ("raw", "y", b"\x00\x01"),
            ("tags", "a", [("s", "a"), ("i", -1)]), ("map", "k", [("user.email", "s", "a@b.c")]),
        ], ts="ot=th:8;rv:01,vendor=x"),
        span(T, b"\x22" * 8, b"\x11" * 8, "SELECT orders", attrs=[("db.statement", "s", "select * from t where email='x@y.z'")],
             events=[("retry", [("attempt", "i", 2)])], links=[(bytes(16 * [9]), bytes(8 * [8]), [("k", "s", "v")])]),
        span(T, b"\x33" * 8, b"\x11" * 8, "charge card", status=(2, "card declined")),
    ])]),
    ("payments", [("grpc", [span(T, b"\x44" * 8, b"\x33" * 8, "Charge")])]),
])
bad_ids = request([("svc", [("s", [
    span(bytes(16), b"\x01" * 8, None, "zero trace id"),
    span(T[:15], b"\x02" * 8, None, "short trace id"),
    span(T, b"", None, "no span id"),
    span(T, b"\x03" * 8, b"\x01\x02", "short parent"),
    span(T, b"\x04" * 8, None, "good"),
])])])

def hexid(b): return b.hex()
sample_json = {"resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "frontend"}}]},
    "scopeSpans": [{"scope": {"name": "http", "version": "1.0"}, "spans": [
        {"traceId": hexid(T), "spanId": "1111111111111111", "name": "GET /checkout", "kind": 2,
         "traceState": "ot=th:8", "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000500000000",
         "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}},
                        {"key": "code", "value": {"intValue": "200"}},
                        {"key": "tags", "value": {"arrayValue": {"values": [{"boolValue": True}, {"doubleValue": 1.5}]}}},
                        {"key": "map", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"bytesValue": "AAE="}}]}}}],
         "events": [{"timeUnixNano": "1700000000100000000", "name": "retry", "attributes": []}],
         "links": [{"traceId": "09" * 16, "spanId": "08" * 8}],
         "status": {"code": 2, "message": "boom"}},
        {"traceId": hexid(T), "spanId": "2222222222222222", "parentSpanId": "1111111111111111", "name": "child"},
        {"traceId": "00" * 16, "spanId": "3333333333333333", "name": "bad trace id"},
    ]}]}]}

def write(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

write("otlp_protobuf", "sample", sample)
write("otlp_protobuf", "bad-ids", bad_ids)
write("otlp_protobuf", "empty", b"")
write("otlp_json", "sample.json", json.dumps(sample_json).encode())
write("otlp_json", "empty.json", b"{}")
# gzip_body's input is (u16 limit, body): two bytes of limit, then the gzip body.
write("gzip_body", "sample", struct.pack("<H", 60000) + gzip.compress(sample, mtime=0))
write("gzip_body", "too-large", struct.pack("<H", 100) + gzip.compress(sample, mtime=0))
write("gzip_body", "two-members", struct.pack("<H", 4096) + gzip.compress(b"ab", mtime=0) * 2)
# The plugin-result targets take structured input (`arbitrary`): seed them with deterministic noise.
rng = random.Random(9)
for target in ("redactor_edits", "sampler_decision"):
    for i, n in enumerate((64, 256, 1024)):
        write(target, f"noise-{i}", bytes(rng.randrange(256) for _ in range(n)))
