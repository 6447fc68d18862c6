#!/usr/bin/env python3
"""A tiny MISP-like HTTPS server for the demo: keeps pushed events in
memory, serves one seeded event for pulls, and prints every request it
receives, so you can see what crossed the gateway.

Usage: misp_server.py NAME ADDR PORT CERT KEY"""
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEEDED = "385283a1-b5e0-4e10-a532-dce11c365a56"
EVENTS = {SEEDED: {"Event": {"uuid": SEEDED, "info": "seeded demo event", "distribution": "1",
                             "Tag": [{"name": "tlp:green"}],
                             "Attribute": [{"type": "domain", "category": "Network activity",
                                            "value": "bad.example"}],
                             "Object": []}}}
NAME = "misp"


def say(text):
    print(f"    [{NAME}] {text}", flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _event_uuid(self):
        return self.path.split("/")[3] if self.path.count("/") >= 3 else ""

    def do_HEAD(self):
        say(f"received HEAD {self.path}")
        self._answer(200 if self._event_uuid() in EVENTS else 404)

    def do_GET(self):
        say(f"received GET {self.path}")
        if self.path == "/servers/getVersion":
            self._answer(200, {"version": "2.5.2", "perm_sync": True, "request_encoding": ["gzip"]})
        elif self.path.startswith("/events/view/") and self._event_uuid() in EVENTS:
            self._answer(200, EVENTS[self._event_uuid()])
        else:
            self._answer(404, {"message": "Not Found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        say(f"received POST {self.path} ({len(body)} bytes)")
        if self.path.startswith("/events/add") or self.path.startswith("/events/edit/"):
            event = json.loads(body)
            EVENTS[event["Event"]["uuid"]] = event
            say(f"stored event {event['Event']['uuid']} \"{event['Event'].get('info', '')}\"")
            self._answer(200, event)
        else:
            self._answer(404, {"message": "Not Found"})

    def log_message(self, *args):
        pass


def main():
    global NAME
    NAME, addr, port, cert, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd = ThreadingHTTPServer((addr, port), Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
