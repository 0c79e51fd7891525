#!/usr/bin/env python3
"""Headless Chromium drives the reference web client (infra/local/web) through one whole query
against the local stack and checks what a person sees:

- a wrong SMS code is refused with VERIFICATION_FAILED, shown with its message;
- with the right code the query is accepted and every chosen bank's progress settles;
- the "report ready" SMS appears on the (emulated) phone;
- after a face step-up the report's per-bank rows and cards equal the bank simulator's
  truth for the demo person (GET /_admin/truth/{id_number}), masked as 6222 **** **** 1234.

Run by tests/web_client.rs (`make test`), which passes the stack's endpoints in
WEB_TEST_* variables. Writes screenshots to $WEB_TEST_OUT (.local/web/). Exits non-zero,
printing why, on any failure; a missing browser is a failure too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
USER = "demo-user"
PASSWORD = "135790"  # every seeded user's (tests/testkit/src/seed.rs)
CALLBACK_BANK = "CMB"  # answers by callback, so progress is seen pending first
REPORT_WAIT_S = 90
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def env(name: str) -> str:
    v = os.environ.get(name)
    if not v:
        sys.exit(f"browser test: {name} is not set (run through tests/web_client.rs)")
    return v


def http(method: str, url: str, body: object | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with OPENER.open(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def start_web() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "infra/local/web/server.py"), "--port", "0",
         "--api", env("WEB_TEST_API"), "--sns", env("WEB_TEST_SNS"),
         "--dynamodb", env("WEB_TEST_DYNAMODB"), "--table-prefix", env("WEB_TEST_TABLE_PREFIX"),
         "--devtools", env("WEB_TEST_DEVTOOLS")],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("WEB READY "):
        proc.kill()
        sys.exit(f"browser test: the web server did not start (said {line!r})")
    return proc, json.loads(line[len("WEB READY "):])["url"]


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        sys.exit("browser test: chromium/chromedriver not installed; `python3 infra/local/"
                 "stack.py install` installs them as root (see .local/logs/install-apt-*.log)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1100,1400", "--lang=zh-CN", "--no-proxy-server"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def main() -> int:
    try:
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select, WebDriverWait
    except ImportError as e:
        sys.exit(f"browser test: selenium is missing from {sys.executable} ({e}); "
                 "`python3 infra/local/stack.py install` installs it")

    sim = env("WEB_TEST_BANK_SIM")
    id_number = env("WEB_TEST_ID_NUMBER")
    out = Path(env("WEB_TEST_OUT"))
    out.mkdir(parents=True, exist_ok=True)

    truth: dict[str, list[dict[str, str]]] = http("GET", f"{sim}/_admin/truth/{id_number}")["banks"]  # type: ignore[index]
    with_cards = [b for b, cards in truth.items() if cards and b != CALLBACK_BANK]
    without = [b for b, cards in truth.items() if not cards and b != CALLBACK_BANK]
    chosen = with_cards[:4] + without[:1] + [CALLBACK_BANK]
    assert with_cards, f"the simulator gives the demo person no cards at all: {truth}"
    # This person only, so nothing else on the stack changes behaviour.
    http("PUT", f"{sim}/_admin/subjects/{id_number}/banks/{CALLBACK_BANK}",
         {"mode": "callback", "latency_ms": 0, "callback_delay_ms": 1500})

    web, url = start_web()
    driver = None
    step = "start"
    try:
        driver = browser()
        # Bounds, not expectations: a function's first call under `cargo lambda watch` starts it.
        wait = WebDriverWait(driver, 60)
        by_id = lambda i: driver.find_element(By.ID, i)  # noqa: E731
        visible = lambda i: wait.until(lambda d: d.find_element(By.ID, i).is_displayed())  # noqa: E731

        def rows(selector: str) -> list[dict]:
            # Read in one script: the progress table is re-rendered while it is polled.
            return driver.execute_script(
                "return [...document.querySelectorAll(arguments[0])].map(r => "
                "({data: {...r.dataset}, cells: [...r.cells].map(c => c.innerText.trim())}))",
                selector)

        def attr(i: str, name: str) -> str | None:
            return driver.execute_script(
                "const e = document.getElementById(arguments[0]); "
                "return e ? e.getAttribute(arguments[1]) : null", i, name)

        step = "sign in"
        driver.get(url)
        wait.until(lambda d: any(o.get_attribute("value") == USER
                                 for o in d.find_elements(By.CSS_SELECTOR, "#user option")))
        # Re-seeding gives demo-user a fresh state (no cooldown from an earlier query).
        by_id("reseed").click()
        wait.until(lambda d: "re-seeded" in d.find_element(By.ID, "signed-in").text)
        Select(by_id("user")).select_by_value(USER)
        by_id("signin").click()
        visible("step-authorize")  # shown once eligibility, banks and history are in
        elig = by_id("eligibility").text
        assert by_id("eligibility").get_attribute("data-eligible") == "true", elig
        assert "可以查询 eligible 是 yes" in elig, elig

        step = "choose banks"
        by_id("banks-none").click()
        for code in chosen:
            driver.find_element(By.CSS_SELECTOR, f"#banks input[value='{code}']").click()
        picked = [c.get_attribute("value")
                  for c in driver.find_elements(By.CSS_SELECTOR, "#banks input:checked")]
        assert sorted(picked) == sorted(chosen), picked
        assert by_id("agreement-version").text.strip(), "no agreement version shown"
        by_id("consent").click()

        step = "SMS code"
        by_id("send-code").click()
        visible("sms-submit")
        phone_text = by_id("sms-submit").text
        assert "local" in phone_text, phone_text  # marked as the local emulator
        m = re.search(r"(?<!\d)(\d{6})(?!\d)", phone_text)
        assert m, f"no 6-digit code in what the phone shows: {phone_text!r}"
        code = m.group(1)
        by_id("face").click()
        visible("face-ok")
        by_id("password").send_keys(PASSWORD)

        step = "wrong SMS code is refused"
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        by_id("sms-code").send_keys(wrong)
        by_id("submit").click()
        visible("err-submit")
        err = by_id("err-submit")
        assert err.get_attribute("data-code") == "VERIFICATION_FAILED", err.text
        assert "VERIFICATION_FAILED" in err.text and "HTTP 422" in err.text, err.text
        message = err.text.split("—", 1)[-1].strip()
        assert message, f"the error shows no message: {err.text!r}"
        print(f"browser test: refusal shown: {err.text!r}")

        step = "submit"
        by_id("sms-code").clear()
        by_id("sms-code").send_keys(code)
        by_id("submit").click()
        visible("step-progress")
        assert not by_id("err-submit").is_displayed(), by_id("err-submit").text
        first = wait.until(lambda d: rows("#progress tbody tr"))
        assert sorted(r["data"]["bank"] for r in first) == sorted(chosen), first
        seen_pending = any(r["data"]["status"] == "PENDING" for r in first)
        WebDriverWait(driver, REPORT_WAIT_S).until(
            lambda d: attr("report-status", "data-status") not in (None, "", "PENDING"))
        assert attr("report-status", "data-status") == "READY", by_id("report-status").text
        settled = {r["data"]["bank"]: r["data"]["status"] for r in rows("#progress tbody tr")}
        assert settled == {b: "RESPONDED" for b in chosen}, settled
        print(f"browser test: progress settled (pending seen first: {seen_pending})")

        step = "SMS notice"
        visible("step-notice")
        notice = by_id("sms-notice").text
        assert "一键查卡" in notice and "报告" in notice and code not in notice, notice

        step = "step-up and report"
        by_id("view-face").click()
        visible("report")
        assert not by_id("err-view").is_displayed(), by_id("err-view").text
        shown = {r["data"]["bank"]: (r["cells"][1], int(r["cells"][2]), int(r["cells"][3]))
                 for r in rows("#report-summary tbody tr")}
        expected = {b: ("已答复 responded",
                        sum(c["kind"] == "DEBIT" for c in truth[b]),
                        sum(c["kind"] == "CREDIT" for c in truth[b])) for b in chosen}
        assert shown == expected, f"summary shown {shown} != simulator truth {expected}"
        kinds = {"DEBIT": "借记卡 debit", "CREDIT": "贷记卡 credit"}
        cards_shown = Counter((r["data"]["bank"], r["cells"][1], r["cells"][2])
                              for r in rows("#report-cards tbody tr[data-bank]"))
        cards_truth = Counter((b, kinds[c["kind"]], f"{c['first4']} **** **** {c['last4']}")
                              for b in chosen for c in truth[b])
        assert cards_shown == cards_truth, f"cards shown {cards_shown} != truth {cards_truth}"
        total = sum(cards_truth.values())
        assert f"共 {total} 张" in by_id("report-totals").text, by_id("report-totals").text
        notices = driver.find_elements(By.CSS_SELECTOR, "#report-notices li")
        assert notices and all(n.text.strip() for n in notices), "no notices shown"
        print(f"browser test: report matches the simulator: {len(chosen)} banks, {total} cards")

        step = "screenshot"
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1100, min(int(height) + 40, 8000))
        driver.execute_script("window.scrollTo(0, 0)")  # the page had scrolled to the report
        full = out / "report-page.png"
        driver.save_screenshot(str(full))
        section = out / "report-section.png"
        by_id("step-view").screenshot(str(section))
        print(f"browser test: screenshots {full} and {section}")
        return 0
    except (AssertionError, WebDriverException) as e:
        print(f"browser test FAILED at step '{step}': {type(e).__name__}: {e}", file=sys.stderr)
        if driver is not None:
            fail = out / "failure.png"
            driver.save_screenshot(str(fail))
            for el in driver.find_elements(By.CSS_SELECTOR, ".error"):
                if el.is_displayed():
                    print(f"  page error shown: {el.text}", file=sys.stderr)
            print(f"  screenshot of the failure: {fail}", file=sys.stderr)
        return 1
    finally:
        if driver is not None:
            driver.quit()
        web.terminate()
        web.wait(timeout=10)
        try:
            http("DELETE", f"{sim}/_admin/subjects/{id_number}")
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
