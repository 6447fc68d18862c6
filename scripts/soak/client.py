#!/usr/bin/env python3
"""Load for scripts/soak.sh: THREADS parallel MISP sync clients, each
opening TLS sessions of one to five keep-alive requests to the remote
MISP servers named on the command line, as a MISP server's sync client
does through a transparent gateway (no proxy; the remote's name resolved to
its address; the gateway's CA trusted). Each request's expected answer is
known from its kind; anything else is recorded as a wrong verdict, an
exception as an error. Stops at the deadline (a request in flight ends
first, bounded by a 30 s socket timeout) and writes a JSON summary.

Usage: client.py --role sender|denied --ca FILE --seconds N --threads N
                 --rate REQ_PER_S --out FILE NAME=IP [NAME=IP...]
  sender: pushes (allowed tlp:green, small and large; blocked tlp:red) and
          pulls (seeded tlp:green, seeded tlp:red, a pushed event) and
          getVersion, to servers its compartment may reach
  denied: getVersion and an allowed-looking push to servers its compartment
          may not reach: the gateway must close each such connection without
          an answer (outcome "closed"); any answer is a wrong verdict"""
import argparse
import heapq
import http.client
import json
import random
import socket
import ssl
import threading
import time
import uuid as uuidlib

# The peer closed the connection before any answer: how a refused
# connection looks to a client (a wrong verdict or an error otherwise).
CLOSED = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError,
          http.client.RemoteDisconnected)

GREEN = "5ee0a000-0000-4000-8000-00000000000a"
RED = "5ee0a000-0000-4000-8000-00000000000b"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json",
           "Authorization": "soak-key"}


class Conn(http.client.HTTPSConnection):
    """HTTPS to NAME (SNI, Host, certificate check) at a fixed address."""

    def __init__(self, name, ip, ctx):
        super().__init__(name, 443, context=ctx, timeout=30)
        self.ip = ip

    def connect(self):
        sock = socket.create_connection((self.ip, 443), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def event(uuid, tag, attributes):
    attrs = [{"type": "domain", "category": "Network activity", "value": f"host{i}.soak.example",
              "Tag": [{"name": "tlp:green"}]} for i in range(attributes)]
    return json.dumps({"Event": {"uuid": uuid, "info": f"soak push {tag}", "distribution": "1",
                                 "Tag": [{"name": tag}], "Attribute": attrs, "Object": []}})


class Result:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.latencies = []
        self.slowest = []  # min-heap of the 5 slowest: (ms, when, kind, status, new session)
        self.errors = []
        self.error_count = 0
        self.wrong = []
        self.wrong_count = 0
        self.allowed = {}
        self.blocked = {}

    def record(self, kind, status, expected, ms, detail="", fresh=False):
        with self.lock:
            key = f"{kind} {status}"
            self.counts[key] = self.counts.get(key, 0) + 1
            self.latencies.append(round(ms, 3))
            entry = (round(ms, 1), time.strftime("%H:%M:%S"), kind, str(status), fresh)
            if len(self.slowest) < 5:
                heapq.heappush(self.slowest, entry)
            else:
                heapq.heappushpop(self.slowest, entry)
            if status != expected:
                self.wrong_count += 1
                if len(self.wrong) < 20:
                    self.wrong.append(f"{kind}: {status} (expected {expected}) {detail[:200]}")

    def error(self, kind, exc):
        with self.lock:
            self.error_count += 1
            self.counts[f"{kind} error"] = self.counts.get(f"{kind} error", 0) + 1
            if len(self.errors) < 20:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {kind}: {type(exc).__name__}: {exc}")

    def pushed(self, which, server, uuid):
        with self.lock:
            which.setdefault(server, []).append(uuid)


def sender_request(rng, name, mine):
    """(kind, method, path, body, expected status, uuid stored if allowed)"""
    roll = rng.random()
    if roll < 0.30:
        u = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
        size = 1 if rng.random() < 0.8 else rng.randint(50, 400)
        return ("push_allowed", "POST", "/events/add/metadata:1", event(u, "tlp:green", size), 200, u)
    if roll < 0.45:
        u = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
        return ("push_blocked", "POST", "/events/add/metadata:1", event(u, "tlp:red", 2), 403, u)
    if roll < 0.65:
        return ("pull_allowed", "GET", f"/events/view/{GREEN}", None, 200, None)
    if roll < 0.75:
        return ("pull_blocked", "GET", f"/events/view/{RED}", None, 403, None)
    if roll < 0.90 and mine.get(name):
        return ("pull_pushed", "GET", f"/events/view/{rng.choice(mine[name])}", None, 200, None)
    return ("version", "GET", "/servers/getVersion", None, 200, None)


def denied_request(rng, name, mine):
    if rng.random() < 0.5:
        return ("denied_version", "GET", "/servers/getVersion", None, "closed", None)
    u = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
    return ("denied_push", "POST", "/events/add/metadata:1", event(u, "tlp:green", 1), "closed", u)


def worker(args, index, servers, result, deadline):
    rng = random.Random(args.seed * 1000 + index)
    ctx = ssl.create_default_context(cafile=args.ca)
    pick = sender_request if args.role == "sender" else denied_request
    pause = args.threads / args.rate if args.rate > 0 else 0
    mine = {}  # this thread's stored pushes per server, for pulls (last 50)
    while time.monotonic() < deadline:
        name, ip = rng.choice(servers)
        conn = Conn(name, ip, ctx)
        try:
            for n in range(rng.randint(1, 5)):
                if time.monotonic() >= deadline:
                    break
                kind, method, path, body, expected, uuid = pick(rng, name, mine)
                start = time.monotonic()
                try:
                    conn.request(method, path, body=body, headers=HEADERS)
                    resp = conn.getresponse()
                    data = resp.read()
                except CLOSED as exc:
                    ms = (time.monotonic() - start) * 1000
                    if expected == "closed":
                        result.record(kind, "closed", expected, ms, fresh=n == 0)
                        if uuid is not None:
                            result.pushed(result.blocked, name, uuid)
                    else:
                        result.error(kind, exc)
                    pace(rng, pause)
                    break
                except Exception as exc:  # noqa: BLE001 - every failure is reported
                    result.error(kind, exc)
                    pace(rng, pause)
                    break
                ms = (time.monotonic() - start) * 1000
                result.record(kind, resp.status, expected, ms, data.decode("utf-8", "replace"), n == 0)
                if uuid is not None:
                    if expected == 200:
                        if resp.status == 200:  # else a wrong answer already
                            result.pushed(result.allowed, name, uuid)
                            mine.setdefault(name, []).append(uuid)
                            del mine[name][:-50]
                    else:  # every refused push, whatever the answer
                        result.pushed(result.blocked, name, uuid)
                pace(rng, pause)
                if resp.will_close:
                    break
        finally:
            close(conn)


def pace(rng, pause):
    """Sleeps PAUSE seconds on average, so the threads together keep the rate."""
    if pause:
        time.sleep(rng.uniform(0, 2 * pause))


def close(conn):
    """Ends the session as a well-behaved TLS client does: close_notify first."""
    sock = conn.sock
    if isinstance(sock, ssl.SSLSocket):
        try:
            sock.settimeout(2)
            sock.unwrap().close()
        except (OSError, ValueError):
            pass
    conn.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=["sender", "denied"], required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("servers", nargs="+")
    args = parser.parse_args()
    servers = [tuple(s.split("=", 1)) for s in args.servers]
    result = Result()
    deadline = time.monotonic() + args.seconds
    threads = [threading.Thread(target=worker, args=(args, i, servers, result, deadline))
               for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump({"counts": result.counts, "latencies_ms": result.latencies,
                   "errors": result.errors, "error_count": result.error_count,
                   "wrong": result.wrong, "slowest": sorted(result.slowest, reverse=True), "wrong_count": result.wrong_count,
                   "allowed": result.allowed, "blocked": result.blocked}, out)


if __name__ == "__main__":
    main()
