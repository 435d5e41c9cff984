#!/usr/bin/env python3
"""A small, bounded load for the demo: `GET /checkout` on the api-service at a steady rate.

Most requests are normal (the services still fail and are slow now and then on their own, at their
DEMO_*_RATE); a share asks for a failure (`fail=user` or `fail=api`) or a slow call (`slow=user`) so that
every run has traces that tailgate must keep. Some requests carry a logged-in customer's email, which the
api-service puts into baggage: PII for tailgate to remove. Standard library only.

    python3 load.py --target http://127.0.0.1:8080 --requests 300 --rate 5

Prints one line per 50 requests and a summary; waits (up to --wait-start seconds) for the api-service to
answer first. Stops by itself after --requests requests.
"""

import argparse
import json
import random
import sys
import time
import urllib.error
import urllib.request


def get(url: str, timeout: float = 10.0):
    req = urllib.request.Request(url, headers={"x-tenant": random.choice(["acme", "globex", "initech"])})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except ValueError:
            return e.code, {}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="http://127.0.0.1:8080", help="the api-service's base URL")
    p.add_argument("--requests", type=int, default=300, help="how many requests in all (default 300)")
    p.add_argument("--rate", type=float, default=5.0, help="requests per second (default 5)")
    p.add_argument("--fail-share", type=float, default=0.05, help="share asking for a failure")
    p.add_argument("--slow-share", type=float, default=0.03, help="share asking for a slow call")
    p.add_argument("--wait-start", type=float, default=60.0, help="seconds to wait for the api-service")
    a = p.parse_args()
    base = a.target.rstrip("/")

    deadline = time.monotonic() + a.wait_start
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                break
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                print(f"load: {base} did not answer within {a.wait_start:.0f} s", file=sys.stderr)
                return 1
            time.sleep(1)

    counts: dict[int, int] = {}
    kept_hint = []  # trace ids of the requests that asked for an error or a slow call
    start = time.monotonic()
    for i in range(a.requests):
        query = f"user={random.randint(1, 500)}"
        if random.random() < 0.3:
            query += f"&email=shopper{random.randint(1, 99)}%40mail.example.net"
        roll = random.random()
        if roll < a.fail_share:
            query += "&fail=" + random.choice(["user", "api"])
        elif roll < a.fail_share + a.slow_share:
            query += "&slow=user"
        try:
            status, body = get(f"{base}/checkout?{query}")
        except (urllib.error.URLError, OSError) as e:
            status, body = 0, {"error": str(e)}
        counts[status] = counts.get(status, 0) + 1
        if ("fail=" in query or "slow=" in query) and body.get("trace_id"):
            kept_hint.append(body["trace_id"])
        if (i + 1) % 50 == 0:
            print(f"load: {i + 1}/{a.requests} requests, status counts {dict(sorted(counts.items()))}", flush=True)
        # Pace to --rate from the start, whatever each request took.
        time.sleep(max(0.0, start + (i + 1) / a.rate - time.monotonic()))

    print(f"load: done, {a.requests} requests, status counts {dict(sorted(counts.items()))}")
    if kept_hint:
        print("load: some traces tailgate keeps (errors and slow calls asked for), to look up in Jaeger:")
        for t in kept_hint[-5:]:
            print(f"  {t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
