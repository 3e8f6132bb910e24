"""An HTTP forwarder between the agent and the collector that can lose a response.

Usage: python proxy.py LISTEN_PORT COLLECTOR_BASE CONTROL_DIR

Forwards every request. When CONTROL_DIR/lose exists, the next ingest request the collector
answers 200 is the one whose answer is lost: the proxy writes CONTROL_DIR/committed (the
batch is stored), waits until CONTROL_DIR/killed exists (the test has SIGKILLed the
collector), then closes the agent's connection without an answer and removes `lose`. The
agent sees a failed request for a batch that was stored, and must not store it twice.
"""
import http.client
import os
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, target, control = int(sys.argv[1]), urllib.parse.urlparse(sys.argv[2]), sys.argv[3]


class Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.forward()

    def do_POST(self):
        self.forward()

    def forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        try:
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError:
            self.close_connection = True
            return  # the collector is down: the agent sees its connection closed
        lose = os.path.join(control, "lose")
        if self.path == "/api/v1/ingest" and resp.status == 200 and os.path.exists(lose):
            os.remove(lose)
            open(os.path.join(control, "committed"), "w").close()
            for _ in range(600):
                if os.path.exists(os.path.join(control, "killed")):
                    break
                time.sleep(0.05)
            self.close_connection = True
            return
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


ThreadingHTTPServer(("127.0.0.1", port), Forward).serve_forever()
