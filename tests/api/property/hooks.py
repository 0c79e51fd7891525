"""schemathesis hooks for the property run of tests/api/property (loaded through
SCHEMATHESIS_HOOKS; the test sets every variable read here).

- Bank callbacks are signed as a bank signs them (shared/src/bank/signing.rs):
  HMAC-SHA256 with the bank's secret over `timestamp \\n nonce \\n METHOD \\n path \\n
  hex(sha256(body))`, on the bytes actually sent (a requests auth hook sees the prepared
  request). Only the signature headers the generated case carries are filled in: a case
  that leaves one out tests exactly that, and must still be refused (401).
- One submission of the stateful phase gets the credentials a schema cannot hold (a
  fresh SMS code, face pass and the payment password of the test's user, from
  PROPERTY_CREDENTIALS): the banks and the consent stay as generated, so a body valid by
  the schema is accepted (202), and the links from that answer are followed.
"""

import hashlib
import hmac
import json
import os
import secrets
import string
import threading
import time

import requests
import schemathesis

SIGNATURE_HEADERS = ("X-Bank-Code", "X-Timestamp", "X-Nonce", "X-Signature")
NONCE_ALPHABET = string.ascii_letters + string.digits


def _load_json(var):
    path = os.environ.get(var)
    if not path:
        raise RuntimeError(f"{var} is not set (the property test sets it)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


BANK_SECRETS = {bank: bytes.fromhex(h) for bank, h in _load_json("PROPERTY_BANK_SECRETS").items()}
_credentials = _load_json("PROPERTY_CREDENTIALS")
_credentials_lock = threading.Lock()
_credentials_used = False


def _header(headers, name):
    for key in list(headers or {}):
        if key.lower() == name.lower():
            return key
    return None


class BankSignature(requests.auth.AuthBase):
    """Signs the prepared request: its method, path and body bytes are what is sent."""

    def __init__(self, present):
        self.present = present

    def __call__(self, r):
        path = r.path_url.split("?", 1)[0]
        bank = path.rstrip("/").rsplit("/", 1)[-1]
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        timestamp = str(int(time.time()))
        nonce = "".join(secrets.choice(NONCE_ALPHABET) for _ in range(32))
        secret = BANK_SECRETS.get(bank, b"\0" * 32)
        canonical = "\n".join(
            [timestamp, nonce, r.method.upper(), path, hashlib.sha256(body).hexdigest()]
        )
        values = {
            "X-Bank-Code": bank,
            "X-Timestamp": timestamp,
            "X-Nonce": nonce,
            "X-Signature": hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest(),
        }
        for name in SIGNATURE_HEADERS:
            existing = _header(r.headers, name)
            if existing is not None:
                del r.headers[existing]
            if name in self.present:
                r.headers[name] = values[name]
        return r


def _with_credentials(case):
    """The one submission that carries real credentials (a positive, well-shaped body)."""
    global _credentials_used
    body = case.body
    if not isinstance(body, dict) or not {"verification", "face_token", "payment_password"} <= body.keys():
        return
    if not isinstance(body.get("verification"), dict):
        return
    with _credentials_lock:
        if _credentials_used:
            return
        _credentials_used = True
    body["verification"] = {
        "verification_id": _credentials["verification_id"],
        "sms_code": _credentials["sms_code"],
    }
    body["face_token"] = _credentials["face_token"]
    body["payment_password"] = _credentials["payment_password"]


@schemathesis.hook
def before_call(context, case, kwargs):
    operation_id = case.operation.definition.raw.get("operationId")
    if operation_id == "bankCallback":
        present = {n for n in SIGNATURE_HEADERS if _header(case.headers, n) is not None}
        kwargs["auth"] = BankSignature(present)
    elif operation_id == "submitCardQuery" and case.meta is not None:
        # In the stateful phase, where the links from its 202 are followed.
        meta = case.meta
        if meta.generation.mode.is_positive and meta.phase.name == "stateful":
            _with_credentials(case)
