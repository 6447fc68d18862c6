#!/usr/bin/env python3
"""A quiet MISP-like HTTPS server for scripts/soak.sh: stores pushed events
in memory and appends each stored event's uuid to a file (so the soak can
prove that no blocked push was stored and every allowed one was), and
serves pulls of two seeded events (one tlp:green, one tlp:red) and of
the last KEPT pushed events (the clients pull only their recent pushes;
an hour's pushes would otherwise hold gigabytes here). Prints nothing per
request: the soak runs for hours.

Usage: misp_server.py NAME ADDR PORT CERT KEY STORED-FILE"""
import json
import ssl
import sys
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GREEN = "5ee0a000-0000-4000-8000-00000000000a"
RED = "5ee0a000-0000-4000-8000-00000000000b"


def seeded(uuid, tag):
    return {"Event": {"uuid": uuid, "info": f"seeded soak event {tag}", "distribution": "1",
                      "Tag": [{"name": tag}],
                      "Attribute": [{"type": "domain", "category": "Network activity",
                                     "value": "seeded.example"}],
                      "Object": []}}


SEEDED = {GREEN: seeded(GREEN, "tlp:green"), RED: seeded(RED, "tlp:red")}
PUSHED = OrderedDict()
KEPT = 4096
LOCK = threading.Lock()
STORED = None


def find(uuid):
    """The event with this uuid (seeded or recently pushed), or None; under LOCK."""
    return SEEDED.get(uuid) or PUSHED.get(uuid)


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
        with LOCK:
            known = find(self._event_uuid()) is not None
        self._answer(200 if known else 404)

    def do_GET(self):
        if self.path == "/servers/getVersion":
            self._answer(200, {"version": "2.5.2", "perm_sync": True, "request_encoding": ["gzip"]})
            return
        with LOCK:
            event = find(self._event_uuid()) if self.path.startswith("/events/view/") else None
        if event is None:
            self._answer(404, {"message": "Not Found"})
        else:
            self._answer(200, event)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not self.path.startswith("/events/add"):
            self._answer(404, {"message": "Not Found"})
            return
        try:
            event = json.loads(body)
            uuid = event["Event"]["uuid"]
        except (ValueError, KeyError, TypeError):
            self._answer(400, {"message": "bad event"})
            return
        with LOCK:
            PUSHED[uuid] = event
            PUSHED.move_to_end(uuid)
            while len(PUSHED) > KEPT:
                PUSHED.popitem(last=False)
            STORED.write(uuid + "\n")
            STORED.flush()
        self._answer(200, event)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A connection the gateway drops mid-way is not the server's
        # failure; the soak judges the gateway's answers, not this.
        pass


def main():
    global STORED
    name, addr, port, cert, key, stored = sys.argv[1:7]
    STORED = open(stored, "a", encoding="ascii")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd = Server((addr, int(port)), Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print(f"{name} listening on {addr}:{port}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
