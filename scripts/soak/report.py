#!/usr/bin/env python3
"""Judges a soak (scripts/soak.sh) from its clients' summaries and the
servers' stored-uuid files: requests by kind and status, latency
percentiles, errors, wrong answers, and the stores themselves (every push
answered 200 must be stored on its server, no refused push anywhere);
with --gateway-allow/--gateway-block (the gateway's exchanges_total by
decision) also that the gateway decided exactly the exchanges the clients
saw answered 200 and 403, and with --gateway-refused (its exchanges_total
for endpoint "connection") that it refused exactly the connections the
denied client saw closed.
Prints the figures, then `verdict: ok` or `verdict: FAILED (...)` as its
last line, and the request total as `requests: N`; exits 1 on failure.

Usage: report.py --client FILE [--client FILE...] --stored NAME=FILE [...]
                 [--gateway-allow N --gateway-block N --gateway-refused N]"""
import argparse
import json
import math
import sys


def percentile(sorted_values, p):
    """Nearest rank: the smallest value with at least p % of all at or below it."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", action="append", required=True)
    parser.add_argument("--stored", action="append", required=True)
    parser.add_argument("--gateway-allow", type=int)
    parser.add_argument("--gateway-block", type=int)
    parser.add_argument("--gateway-refused", type=int)
    args = parser.parse_args()

    counts, latencies, errors, wrong, slowest = {}, [], [], [], []
    error_count = wrong_count = 0
    allowed, blocked = {}, {}
    for path in args.client:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
        for key, n in summary["counts"].items():
            counts[key] = counts.get(key, 0) + n
        latencies += summary["latencies_ms"]
        errors += summary["errors"]
        error_count += summary["error_count"]
        wrong += summary["wrong"]
        slowest += [tuple(e) for e in summary["slowest"]]
        wrong_count += summary["wrong_count"]
        for which, into in (("allowed", allowed), ("blocked", blocked)):
            for server, uuids in summary[which].items():
                into.setdefault(server, set()).update(uuids)

    stored = {}
    for spec in args.stored:
        name, path = spec.split("=", 1)
        with open(path, encoding="ascii") as f:
            stored[name] = set(f.read().split())

    # Pushes answered 200 but not stored; pushes meant to be refused but
    # stored anyway (whatever their answer).
    missing = sum(len(u - stored.get(s, set())) for s, u in allowed.items())
    leaked = sum(len(u & stored.get(s, set())) for s, u in blocked.items())

    total = sum(counts.values())
    print(f"requests: {total}")
    for key in sorted(counts):
        print(f"  {key:<22} {counts[key]}")
    latencies.sort()
    print("latency ms: " + " ".join(f"p{p}={percentile(latencies, p):.1f}" for p in (50, 90, 99))
          + f" max={latencies[-1] if latencies else 0:.1f}")
    for ms, when, kind, status, fresh in sorted(slowest, reverse=True)[:5]:
        print(f"  slow: {ms} ms at {when} {kind} {status}{' (new TLS session)' if fresh else ''}")
    print(f"stores: {sum(len(v) for v in stored.values())} events stored, "
          f"{missing} allowed pushes answered 200 but missing, "
          f"{leaked} refused pushes stored")
    for line in errors:
        print(f"  error: {line}")
    for line in wrong:
        print(f"  wrong: {line}")

    problems = []
    if error_count:
        problems.append(f"{error_count} errors")
    if wrong_count:
        problems.append(f"{wrong_count} wrong answers")
    if leaked:
        problems.append(f"{leaked} blocked pushes stored")
    if missing:
        problems.append(f"{missing} allowed pushes not stored")
    answered = {code: sum(n for k, n in counts.items() if k.endswith(f" {code}")) for code in (200, 403)}
    for code, decision, decided in ((200, "allow", args.gateway_allow), (403, "block", args.gateway_block)):
        if decided is not None:
            print(f"gateway decided {decided} {decision}, clients saw {answered[code]} answered {code}")
            if decided != answered[code]:
                problems.append(f"gateway decided {decided} {decision} but clients saw {answered[code]} {code}")
    # Connections the gateway refused before any request: the denied
    # client saw each of them closed.
    closed = sum(n for k, n in counts.items() if k.endswith(" closed"))
    if args.gateway_refused is not None:
        print(f"gateway refused {args.gateway_refused} connections, clients saw {closed} closed")
        if args.gateway_refused != closed:
            problems.append(f"gateway refused {args.gateway_refused} connections but clients saw {closed} closed")
    if total == 0:
        problems.append("no requests")
    print(f"verdict: {'ok' if not problems else 'FAILED (' + ', '.join(problems) + ')'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
