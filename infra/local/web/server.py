#!/usr/bin/env python3
"""The reference web client's local server (dev tooling, never deployed).

Serves the static page in infra/local/web/static/, forwards /v1/* unchanged to the local API
(so the page and the API share one origin and the functions need no CORS), and answers
a few local-only helper routes that stand in for what, in production, the app's own
user system, the face-verification SDK and the user's phone provide:

    GET  /_local/users                        the seeded users (seeded when it starts)
    POST /_local/seed                         re-seed them (fresh state: no cooldown)
    GET  /_local/token?user=U                 an app JWT for U (devtools user-token)
    GET  /_local/face-token?user=U&purpose=P  a passing face token (devtools face-token)
    GET  /_local/sms?masked=138****0001       SMS the SNS emulator holds for that phone
                                              (or ?phone=+86...), newest first

    server.py --api URL --sns URL --dynamodb URL [--table-prefix local-] [--port 0]
              [--devtools PATH]

Listens on 127.0.0.1 only and prints `WEB READY {"url": ...}` on stdout once it does.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
STATIC = Path(__file__).resolve().parent / "static"
HOST = "127.0.0.1"
MAX_BODY = 64 * 1024  # the API refuses over 16 KiB itself; this only bounds the proxy
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# Headers the page may send to the API, and the API's headers worth passing back.
FORWARD_REQUEST = ("authorization", "content-type", "idempotency-key", "accept")
FORWARD_RESPONSE = ("content-type", "retry-after", "allow")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def face_token_args(user: str, purpose: str) -> list[str]:
    # A face pass is bound to its purpose (SUBMIT_QUERY or VIEW_REPORT).
    return ["face-token", "--user", user, "--purpose", purpose]


def find_devtools() -> Path:
    """The devtools executable, built (debug) if needed, as stack.py builds its tools: one
    binary call per token instead of `cargo run`, which could rebuild under a running
    `cargo lambda watch`."""
    out = subprocess.run(["cargo", "build", "--quiet", "--locked", "-p", "devtools",
                          "--message-format=json-render-diagnostics"], cwd=ROOT,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise SystemExit(f"web: building devtools failed:\n{out.stderr[-3000:]}")
    for line in out.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg.get("target", {}).get("name") == "devtools":
            return Path(msg["executable"])
    raise SystemExit("web: cargo named no devtools executable")


def masked_matches(masked: str, phone: str) -> bool:
    """`138****0001` (the API's masked_phone) against `+8613800000001`."""
    national = phone[3:] if phone.startswith("+86") else phone
    head, _, tail = masked.partition("****")
    return len(national) == len(masked) and national.startswith(head) and national.endswith(tail)


class Helper:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.api = opts.api.rstrip("/")
        self.sns = opts.sns.rstrip("/")
        self.prefix = opts.table_prefix
        self.devtools = Path(opts.devtools) if opts.devtools else find_devtools()
        # devtools needs the DynamoDB endpoint (and refuses to run without it); SNS for
        # symmetry with `stack.py exec`.
        self.env = dict(os.environ, AWS_ENDPOINT_URL_DYNAMODB=opts.dynamodb,
                        AWS_ENDPOINT_URL_SNS=opts.sns,
                        AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="test",
                        AWS_SECRET_ACCESS_KEY="test")
        self.env.pop("AWS_SESSION_TOKEN", None)
        self.users: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def devtools_run(self, *args: str) -> str:
        out = subprocess.run([str(self.devtools), *args], cwd=ROOT, env=self.env,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(f"devtools {args[0]}: {out.stderr.strip()[-500:]}")
        return out.stdout.strip()

    def seed(self) -> list[dict[str, str]]:
        with self.lock:
            lines = self.devtools_run("seed", "--prefix", self.prefix).splitlines()
            self.users = [dict(zip(("user_id", "description"), ln.split("\t", 1)))
                          for ln in lines if "\t" in ln]
            return self.users

    def sms(self, masked: str | None, phone: str | None) -> list[dict[str, str]]:
        with OPENER.open(self.sns + "/moto-api/data.json", timeout=10) as resp:
            data = json.loads(resp.read())
        items = data.get("sns", {}).get("SMS", [])
        if isinstance(items, dict):
            items = list(items.values())
        out = [{"phone_number": m.get("phone_number", ""), "message": m.get("message", "")}
               for m in items if isinstance(m, dict)
               and ((phone and m.get("phone_number") == phone)
                    or (masked and masked_matches(masked, str(m.get("phone_number", "")))))]
        return list(reversed(out))


def make_handler(helper: Helper) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "card-lookup-web/1"

        def log_message(self, fmt: str, *args: object) -> None:
            # Paths only: query strings name users, bodies hold codes and passwords.
            sys.stderr.write(f"web: {self.command} {self.path.split('?', 1)[0]} "
                             f"{args[1] if len(args) > 1 else ''}\n")

        def _host_ok(self) -> bool:
            # A page on another site could make the browser call us through a DNS name
            # rebound to 127.0.0.1; only requests addressed to loopback names are served.
            host = (self.headers.get("host") or "").rsplit(":", 1)[0]
            if host in ("127.0.0.1", "localhost"):
                return True
            self._send(403, {"error": {"code": "FORBIDDEN", "message": "local only"}})
            return False

        def _send(self, status: int, body: object | bytes, ctype: str = "application/json",
                  extra: dict[str, str] | None = None) -> None:
            raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(raw)))
            self.send_header("cache-control", "no-store")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def _local_error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"code": "LOCAL_HELPER_ERROR", "message": message}})

        def _body(self) -> bytes | None:
            n = int(self.headers.get("content-length") or 0)
            if n > MAX_BODY:
                self._send(413, {"error": {"code": "PAYLOAD_TOO_LARGE",
                                           "message": "body too large for the local proxy"}})
                return None
            return self.rfile.read(n) if n else b""

        def _proxy(self) -> None:
            body = self._body()
            if body is None:
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARD_REQUEST}
            req = urllib.request.Request(helper.api + self.path, method=self.command,
                                         data=body if body or self.command in ("POST", "PUT")
                                         else None, headers=headers)
            try:
                with OPENER.open(req, timeout=120) as resp:
                    status, hdrs, raw = resp.status, resp.headers, resp.read()
            except urllib.error.HTTPError as e:
                status, hdrs, raw = e.code, e.headers, e.read()
            except OSError as e:
                self._send(502, {"error": {"code": "LOCAL_PROXY_ERROR",
                                           "message": f"the local API did not answer: {e}"}})
                return
            extra = {k: v for k, v in hdrs.items()
                     if k.lower() in FORWARD_RESPONSE and k.lower() != "content-type"}
            self._send(status, raw, hdrs.get("content-type") or "application/json", extra)

        def _local(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
            route = (method, url.path)
            try:
                if route == ("GET", "/_local/users"):
                    self._send(200, {"users": helper.users})
                elif route == ("POST", "/_local/seed"):
                    self._send(200, {"users": helper.seed()})
                elif route == ("GET", "/_local/token") and q.get("user"):
                    self._send(200, {"token": helper.devtools_run("user-token", "--user",
                                                                  q["user"])})
                elif route == ("GET", "/_local/face-token") and q.get("user"):
                    args = face_token_args(q["user"], q.get("purpose", "SUBMIT_QUERY"))
                    self._send(200, {"face_token": helper.devtools_run(*args)})
                elif route == ("GET", "/_local/sms") and (q.get("masked") or q.get("phone")):
                    self._send(200, {"messages": helper.sms(q.get("masked"), q.get("phone"))})
                else:
                    self._local_error(404, f"no local helper route {method} {url.path}")
            except (RuntimeError, OSError, ValueError) as e:
                self._local_error(502, str(e))

        def _static(self) -> None:
            name = urllib.parse.urlsplit(self.path).path.lstrip("/") or "index.html"
            path = (STATIC / name).resolve()
            if STATIC not in path.parents or not path.is_file():
                self._local_error(404, f"no such file: /{name}")
                return
            self._send(200, path.read_bytes(), CONTENT_TYPES.get(path.suffix,
                                                                 "application/octet-stream"))

        def _dispatch(self) -> None:
            if not self._host_ok():
                return
            if self.path.startswith("/v1/"):
                self._proxy()
            elif self.path.startswith("/_local/"):
                if self._body() is not None:
                    self._local(self.command)
            elif self.command == "GET":
                self._static()
            else:
                self._local_error(405, f"{self.command} is not served here")

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    return Handler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--api", required=True, help="the local API (cargo lambda watch)")
    ap.add_argument("--sns", required=True, help="the SNS emulator (moto server)")
    ap.add_argument("--dynamodb", required=True, help="DynamoDB Local (for re-seeding)")
    ap.add_argument("--table-prefix", default="local-")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1, 0 = any free")
    ap.add_argument("--devtools", help="the devtools executable (default: cargo builds it)")
    opts = ap.parse_args()
    helper = Helper(opts)
    # devtools can only tell the seeded users by seeding them (idempotent: a fresh state
    # for each), so that happens once here, in the open, rather than on a GET.
    helper.seed()
    server = ThreadingHTTPServer((HOST, opts.port), make_handler(helper))
    server.daemon_threads = True
    url = f"http://{HOST}:{server.server_address[1]}/"
    print("WEB READY " + json.dumps({"url": url}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
