#!/usr/bin/env python3
"""A tiny MISP-like HTTPS server for the demo: answers the sync endpoints
with canned JSON and prints every request it receives, so you can see what
crossed the gateway. Usage: misp_server.py ADDR PORT CERT KEY"""
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EVENT = {"Event": {"info": "demo event", "distribution": "1", "Tag": [{"name": "tlp:green"}],
                   "Attribute": [{"type": "domain", "category": "Network activity", "value": "bad.example"}],
                   "Object": []}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        print(f"  server received: GET {self.path}", flush=True)
        self._answer(EVENT if self.path.startswith("/events/view/") else {"version": "2.5.0"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        print(f"  server received: POST {self.path} ({len(body)} bytes)", flush=True)
        self._answer({})

    def log_message(self, *args):
        pass


def main():
    addr, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd = ThreadingHTTPServer((addr, port), Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
