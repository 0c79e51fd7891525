"""SNS throttling for the local stack: a pass-through proxy in front of moto's SNS that
answers a Publish `Throttling` (as SNS does past its SMS quota) for the phone numbers
told, for as long as told. Everything else (other actions, /moto-api/, other services
on moto's port) passes through unchanged. The functions' AWS_ENDPOINT_URL_SNS points
here; moto itself is not touched.

Per number, not for the whole stack: the system tests share one stack and run in
parallel, so a test throttles its own users' phones and nobody else's.

It also keeps every SMS that moto accepted through it, in order, so a load run can read
the new ones cheaply (`GET /_sms?from=N`) instead of moto's whole model dump
(`/moto-api/data.json`, every service's state, re-serialised on each poll and growing
with every message: under a burst of thousands of users it took longer than a code's
wait and stalled moto for the functions).

Admin API (JSON):
    POST /_throttle {"phone_numbers": ["+86..."], "seconds": 30}   throttle those numbers
         (seconds 0: stop now)
    POST /_throttle {"all": true, "seconds": 30}                    every Publish
    GET  /_throttle  {"all_remaining_s": 0.0, "phones": {"+86...": {"remaining_s": 12.5,
                      "refused": 3}}, "refused_total": 3}

    GET  /_sms?from=N {"sms": [{"message_id", "phone_number", "message"}, ...],
                      "next": M}   the SMS accepted since the N-th (0: all), and M to ask
                      from next time

Run: python3 sns_throttle.py --port N --upstream http://127.0.0.1:M (standard library
only; the stack starts it, see supervise.py).
"""

import argparse
import http.client
import json
import re
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ADMIN_PATH = "/_throttle"
SMS_PATH = "/_sms"
MESSAGE_ID = re.compile(rb"<MessageId>([^<]+)</MessageId>")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade", "content-length"}
THROTTLING = (
    '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error>'
    "<Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
    "<RequestId>{rid}</RequestId></ErrorResponse>"
)


class Throttles:
    """Which numbers are throttled until when (monotonic), and how often each was."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.until: dict[str, float] = {}
        self.all_until = 0.0
        self.refused: dict[str, int] = {}

    def set(self, phones: list[str] | None, seconds: float) -> None:
        until = time.monotonic() + max(0.0, seconds)
        with self.lock:
            if phones is None:
                self.all_until = until
            else:
                for p in phones:
                    self.until[p] = until

    def refuse(self, phone: str) -> bool:
        now = time.monotonic()
        with self.lock:
            if now < self.all_until or now < self.until.get(phone, 0.0):
                self.refused[phone] = self.refused.get(phone, 0) + 1
                return True
            return False

    def view(self) -> dict[str, Any]:
        now = time.monotonic()
        with self.lock:
            phones = set(self.until) | set(self.refused)
            return {
                "all_remaining_s": max(0.0, self.all_until - now),
                "phones": {p: {"remaining_s": max(0.0, self.until.get(p, 0.0) - now),
                               "refused": self.refused.get(p, 0)} for p in sorted(phones)},
                "refused_total": sum(self.refused.values()),
            }


class Delivered:
    """The SMS moto accepted through the proxy, in the order it accepted them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sms: list[dict[str, str]] = []

    def add(self, message_id: str, phone: str, message: str) -> None:
        with self.lock:
            self.sms.append({"message_id": message_id, "phone_number": phone,
                             "message": message})

    def since(self, start: int) -> dict[str, Any]:
        with self.lock:
            return {"sms": self.sms[max(0, start):], "next": len(self.sms)}


def make_handler(upstream: str, throttles: Throttles,
                 delivered: Delivered) -> type[BaseHTTPRequestHandler]:
    target = urllib.parse.urlsplit(upstream)
    seq = iter(range(1, 1 << 62))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # only refusals are logged
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reply(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _admin(self, body: bytes) -> None:
            if self.command == "POST":
                try:
                    req = json.loads(body or b"{}")
                    seconds = float(req.get("seconds", 0))
                    phones = None if req.get("all") else [str(p) for p in req["phone_numbers"]]
                except (ValueError, KeyError, TypeError) as e:
                    self._reply(400, json.dumps({"error": str(e)}).encode(), "application/json")
                    return
                throttles.set(phones, seconds)
            self._reply(200, json.dumps(throttles.view()).encode(), "application/json")

        def _sms(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            try:
                start = int((query.get("from") or ["0"])[0])
            except ValueError:
                self._reply(400, b'{"error": "from is a number"}', "application/json")
                return
            self._reply(200, json.dumps(delivered.since(start)).encode(), "application/json")

        def _publish_of(self, body: bytes) -> tuple[str, str] | None:
            """The phone number and text of an SNS Publish to a number (query protocol,
            form-encoded)."""
            if self.command != "POST" or b"Action=Publish" not in body:
                return None
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            if form.get("Action") != ["Publish"] or not form.get("PhoneNumber"):
                return None
            return form["PhoneNumber"][0], (form.get("Message") or [""])[0]

        def _forward(self, body: bytes, publish: tuple[str, str] | None) -> None:
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                found = MESSAGE_ID.search(data) if publish and resp.status == 200 else None
                if publish and found:
                    delivered.add(found.group(1).decode(), *publish)
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError as e:
                self._reply(502, f"upstream: {e}".encode(), "text/plain")
            finally:
                conn.close()

        def _handle(self) -> None:
            body = self._body()
            if self.path.split("?")[0] == ADMIN_PATH:
                self._admin(body)
                return
            if self.path.split("?")[0] == SMS_PATH and self.command == "GET":
                self._sms()
                return
            publish = self._publish_of(body)
            phone = publish[0] if publish else None
            if phone is not None and throttles.refuse(phone):
                # The number's last 4 only: the log is not a place for phone numbers.
                print(f"Throttling a Publish to ...{phone[-4:]}", flush=True)
                self._reply(400, THROTTLING.format(rid=f"throttled-{next(seq)}").encode(),
                            "text/xml")
                return
            self._forward(body, publish)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

    return Handler


def argv(port: int, upstream: str) -> list[str]:
    """The command line that serves the proxy on `port` in front of `upstream`."""
    return [sys.executable, __file__, "--port", str(port), "--upstream", upstream]


def healthy(endpoint: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(endpoint + ADMIN_PATH, timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="moto's endpoint, http://127.0.0.1:N")
    opts = p.parse_args()
    server = ThreadingHTTPServer((opts.host, opts.port), make_handler(opts.upstream, Throttles(), Delivered()))
    server.daemon_threads = True
    print(f"SNS throttling proxy on http://{opts.host}:{opts.port} -> {opts.upstream}",
          flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
