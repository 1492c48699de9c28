#!/usr/bin/env python3
"""A small HTTP file server on 127.0.0.1 for the HTTP backend tests.

usage: http-server.py DIR PORTFILE MODE
  range    GET with Range answers 206 with Content-Range (HEAD too)
  norange  ignores Range, always 200 with the whole file (like
           python3 -m http.server)
  stall    sends the status line and headers, then nothing
  flaky    every other GET answers 503 first, then as "range"
The port it listens on is written to PORTFILE.
"""
import http.server
import os
import re
import sys
import threading
import time

ROOT, PORTFILE, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
counter = {"n": 0}
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_file(self, head):
        path = os.path.join(ROOT, self.path.lstrip("/").split("?")[0])
        if not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = os.path.getsize(path)
        rng = self.headers.get("Range")
        m = re.match(r"bytes=(\d+)-(\d*)$", rng or "")
        if MODE == "flaky":
            with lock:
                counter["n"] += 1
                bad = counter["n"] % 2 == 1
            if bad:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        if MODE == "stall":
            self.send_response(206)
            self.send_header("Content-Length", "1")
            self.send_header("Content-Range", "bytes 0-0/%d" % size)
            self.end_headers()
            self.wfile.flush()
            time.sleep(3600)
            return
        if m and MODE != "norange":
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else size - 1
            end = min(end, size - 1)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        else:
            start, end = 0, size - 1
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes" if MODE != "norange" else "none")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if head:
            return
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start + 1
            try:
                while left > 0:
                    chunk = f.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def do_GET(self):
        self.send_file(False)

    def do_HEAD(self):
        self.send_file(True)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORTFILE + ".tmp", PORTFILE)
server.serve_forever()
