#!/usr/bin/env python3
"""`make run`: the whole pipeline on this machine.

Brings the local stack up (DynamoDB Local on disk, the SNS emulator, the 16-bank
simulator, `cargo lambda watch` serving every function, the event pump), seeds the demo
users, runs one 16-bank query from submission to report exactly as the app would, prints
the SMS that were sent and the report, then keeps serving and prints how to call the API
with curl. Ctrl-C stops everything.

Standard library only; the stack itself is infra/local/stack.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import unicodedata
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "infra" / "local" / "stack.py"
DEMO_USER = "demo-user"
PAYMENT_PASSWORD = "135790"
BANKS = ["ICBC", "ABC", "BOC", "CCB", "BOCOM", "PSBC", "CMB", "SPDB", "CITIC", "CEB", "HXB",
         "CMBC", "CGB", "PAB", "CIB", "CZB"]
# Some banks answer by callback, as real ones may.
CALLBACK_BANKS = ["CMB", "CCB", "PAB", "CIB"]
# A bank leg is done in these progress statuses (functions/openapi.yaml, LegStatus).
SETTLED = {"RESPONDED", "NO_RESPONSE", "FAILED"}
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def say(msg: str = "") -> None:
    print(msg, flush=True)


def request(method: str, url: str, body: object | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict | list | None, dict]:
    data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with OPENER.open(req, timeout=60) as resp:
            raw, status, hdrs = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, dict(e.headers)
    return status, (json.loads(raw) if raw else None), hdrs


def devtools(state: dict, *args: str) -> str:
    env = dict(os.environ,
               AWS_ENDPOINT_URL_DYNAMODB=state["dynamodb_endpoint"],
               AWS_ENDPOINT_URL_SNS=state["sns_endpoint"],
               AWS_ENDPOINT_URL_SQS=state["sqs_endpoint"],
               AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    # The binary stack.py built, not `cargo run`: cargo would take the build lock (and
    # could compile) while the watch starts function instances with `cargo run`.
    out = subprocess.run([state["devtools"], *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"devtools {args[0]} failed:\n{out.stderr}")
    return out.stdout.strip()


def sms_to(state: dict, phone: str) -> list[str]:
    _, data, _ = request("GET", state["sns_endpoint"] + "/moto-api/data.json")
    return [m["message"] for m in (data or {}).get("sns", {}).get("SMS", [])
            if m.get("phone_number") == phone]


def width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def pad(s: str, w: int) -> str:
    return s + " " * max(0, w - width(s))


def table(rows: list[list[str]]) -> str:
    widths = [max(width(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line]
    for n, r in enumerate(rows):
        out.append("| " + " | ".join(pad(c, widths[i]) for i, c in enumerate(r)) + " |")
        if n == 0:
            out.append(line)
    out.append(line)
    return "\n".join(out)


def demo(state: dict) -> None:
    api = state["api_endpoint"]
    sim = state["bank_sim_endpoint"]
    say("\n== seeding the demo users (devtools seed)")
    say(devtools(state, "seed", "--prefix", state["table_prefix"]))
    token = devtools(state, "user-token", "--user", DEMO_USER)
    auth = {"authorization": f"Bearer {token}"}
    _, elig, _ = request("GET", api + "/v1/eligibility", headers=auth)
    say(f"eligibility of {DEMO_USER}: {json.dumps(elig, ensure_ascii=False)}")

    # The simulated banks: a few answer by callback; the demo person's ID number is read
    # from the seed (devtools prints none), so the behaviour is set bank-wide.
    for bank in CALLBACK_BANKS:
        request("PUT", f"{sim}/_admin/banks/{bank}", {"mode": "callback", "callback_delay_ms": 300})

    say("\n== 1. SMS verification code (POST /v1/verifications)")
    status, created, _ = request("POST", api + "/v1/verifications", {"purpose": "SUBMIT_QUERY"},
                                 auth)
    if status != 201:
        raise SystemExit(f"verification failed: {status} {created}")
    phone_digits = created["masked_phone"]
    phone = "+86" + "13800000001"  # the demo user's seeded phone (tests/testkit/src/seed.rs)
    code = re.search(r"(?<!\d)(\d{6})(?!\d)", sms_to(state, phone)[-1]).group(1)
    say(f"code sent to {phone_digits}; read back from the SNS emulator")

    say("\n== 2. submit the query to 16 banks (POST /v1/card-queries)")
    face = devtools(state, "face-token", "--user", DEMO_USER)
    body = {"banks": BANKS,
            "consent": {"agreement_version": elig["agreement_version"], "accepted": True},
            "verification": {"verification_id": created["verification_id"], "sms_code": code},
            "face_token": face, "payment_password": PAYMENT_PASSWORD}
    started = time.monotonic()
    status, accepted, _ = request("POST", api + "/v1/card-queries", body,
                                  dict(auth, **{"idempotency-key": str(uuid.uuid4())}))
    if status != 202:
        raise SystemExit(f"submission failed: {status} {accepted}")
    qid = accepted["query_id"]
    say(f"202 accepted: query {qid}, report due by {accepted['report_due_by']}")

    say("\n== 3. fan-out, bank answers and callbacks, aggregation (watching progress)")
    while True:
        _, rec, _ = request("GET", f"{api}/v1/card-queries/{qid}", headers=auth)
        # Settled only: QUEUED and RETRYING (issue 17) are legs still waiting to be sent.
        done = sum(1 for p in rec["progress"] if p["status"] in SETTLED)
        if rec["report_status"] != "PENDING":
            break
        if time.monotonic() - started > 120:
            raise SystemExit(f"no report after 120 s: {json.dumps(rec, ensure_ascii=False)}")
        print(f"\r   banks answered: {done}/16", end="", flush=True)
        time.sleep(0.2)
    say(f"\r   banks answered: 16/16 — report {rec['report_status']} "
        f"{time.monotonic() - started:.2f} s after submission")

    say("\n== 4. SMS sent to the demo user's phone")
    time.sleep(0.5)
    for text in sms_to(state, phone):
        say(f"   {phone}: {text}")

    say("\n== 5. view the report after a fresh verification (POST .../report)")
    # One code a minute per user: the demo asks with a face token instead.
    face = devtools(state, "face-token", "--user", DEMO_USER, "--purpose", "VIEW_REPORT")
    status, report, _ = request("POST", f"{api}/v1/card-queries/{qid}/report",
                                {"face_token": face}, auth)
    if status != 200:
        raise SystemExit(f"report refused: {status} {report}")
    s = report["summary"]
    rows = [["银行 bank", "状态 status", "借记卡 debit", "贷记卡 credit"]]
    rows += [[f"{b['bank_name']} {b['bank_code']}", b["status"], str(b["debit_cards"]),
              str(b["credit_cards"])] for b in s["banks"]]
    rows.append(["合计 total", "", str(s["debit_cards"]), str(s["credit_cards"])])
    say(table(rows))
    if report["cards"]:
        say(table([["银行 bank", "卡种 kind", "卡号 card"]] +
                  [[c["bank_name"], c["kind"], c["masked_number"]] for c in report["cards"]]))
    for n in report["notices"]:
        say(f"   · {n}")
    say(f"generated {report['generated_at']}, deleted after {report['expires_at']}")

    say("\n== the API keeps serving; try it with curl:")
    say(f"   TOKEN=$(cargo run -q -p devtools -- user-token --user {DEMO_USER})")
    say(f"   curl -s {api}/v1/banks -H \"Authorization: Bearer $TOKEN\"")
    say(f"   curl -s {api}/v1/card-queries -H \"Authorization: Bearer $TOKEN\"")
    say(f"   curl -s {api}/v1/card-queries/{qid} -H \"Authorization: Bearer $TOKEN\"")
    say("   FACE=$(cargo run -q -p devtools -- face-token --user demo-user --purpose SUBMIT_QUERY)")
    say(f"   curl -s -X POST {api}/v1/card-queries/{qid}/report -H \"Authorization: Bearer $TOKEN\""
        " -H 'content-type: application/json' -d \"{\\\"face_token\\\": \\\"$FACE\\\"}\"")
    say("   seeded users: demo-user, not-real-name, outside-pilot, locked-password "
        f"(payment password {PAYMENT_PASSWORD}); SMS: python3 infra/local/stack.py sms")
    say("Ctrl-C stops everything.")


# The reference web client (infra/local/web/server.py): the page plus a /v1 proxy to the API.
# WEB_PORT picks its port on 127.0.0.1 (0 = any free one).
WEB_PORT = int(os.environ.get("WEB_PORT", "9080"))


def start_web(state: dict) -> tuple[subprocess.Popen, str]:
    web = subprocess.Popen(
        [sys.executable, str(ROOT / "infra" / "local" / "web" / "server.py"), "--port", str(WEB_PORT),
         "--api", state["api_endpoint"], "--sns", state["sns_endpoint"],
         "--dynamodb", state["dynamodb_endpoint"], "--table-prefix", state["table_prefix"]],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = web.stdout.readline() if web.stdout else ""
    if not line.startswith("WEB READY "):
        web.kill()
        raise SystemExit(f"the web client did not start on port {WEB_PORT} (WEB_PORT=N picks "
                         f"another): {line.strip()}")
    return web, json.loads(line[len("WEB READY "):])["url"]


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # SIGTERM stops everything as Ctrl-C does; SIGINT too when the shell that started us
    # ignored it (a background job), since Python then installs no handler of its own.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    stack = subprocess.Popen([sys.executable, str(STACK), "up", "--with-api", "--persist"],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    state = None
    assert stack.stdout is not None
    try:
        for line in stack.stdout:
            if line.startswith("READY "):
                state = json.loads(line[len("READY "):])
                break
            sys.stdout.write(line)
    except KeyboardInterrupt:
        # Interrupted while the stack starts: it has no watchdog on us, so stop it here
        # or it would go on starting (and serving) on its own.
        stack.send_signal(signal.SIGTERM)
        return stack.wait() or 130
    if state is None:
        return stack.wait() or 1
    say("stack ready:")
    for name in ("api_endpoint", "bank_sim_endpoint", "dynamodb_endpoint", "sns_endpoint"):
        say(f"   {name:20} {state[name]}")
    web = None
    try:
        web, web_url = start_web(state)
        say(f"   {'web client':20} {web_url}  (the five steps in a browser)")
        demo(state)
        say(f"web client (一键查卡 in a browser): {web_url} — the demo query above put "
            f"{DEMO_USER} in its 7-day cooldown: the page's re-seed button clears it")
        while stack.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except SystemExit as e:
        say(f"run: {e}")
        stack.send_signal(signal.SIGTERM)
        stack.wait()
        return 1
    finally:
        if web is not None:
            web.terminate()
    if stack.poll() is None:
        stack.send_signal(signal.SIGTERM)
    return stack.wait()


if __name__ == "__main__":
    sys.exit(main())
