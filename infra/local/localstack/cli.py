"""The command line of `stack.py`: install, up, exec, sms, status, down.

Standard library only; see infra/local/README.md.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# The first paragraph of the entry point's docstring, as `stack.py --help` always said.
DESCRIPTION = "Local AWS stack for the card-lookup project: DynamoDB Local + the moto SNS server."

from .common import (
    DATA_DIR, LOG_DIR, DEFAULT_API_PORT, DEFAULT_BANK_SIM_PORT, DEFAULT_DYNAMODB_PORT,
    DEFAULT_SCHEDULE_EVERY_S, DEFAULT_SNS_PORT, DEFAULT_STATE, LOCAL, STOP_GRACE_S, StackError,
    WATCH_INTERVAL_S, dynamodb_healthy, http, pid_alive, read_state, rel, say, sns_healthy,
)
from .digest import digest
from .install import ensure_installed
from .supervise import Stack


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
    env["LOCAL_SNS_THROTTLE_URL"] = stack.state["sns_throttle_endpoint"]
    if "api_endpoint" in stack.state:
        env["LOCAL_API_URL"] = stack.state["api_endpoint"]
        env["LOCAL_TABLE_PREFIX"] = stack.state["table_prefix"]
        env["LOCAL_BANK_SIM_URL"] = stack.state["bank_sim_endpoint"]
        # What the functions get (INQUIRY_QUEUE_URL), so tests can read the queues.
        env.update(stack.state.get("queue_env", {}))
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
    failed = child.returncode != 0 and stack.signal_received is None
    if failed:
        lines = digest([(s.name, s.log) for s in stack.services])
        say(f"{cmd[0]} exited {child.returncode}; the stack's logs are kept in "
            f"{rel(LOG_DIR)}/*-{os.getpid()}.log; what they hold as trouble: "
            f"{'' if lines else 'nothing'}")
        for line in lines:
            say(line)
    stack.stop(clean=not (died or failed))
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
    p.add_argument("--release", action="store_true",
                   help="with --with-api: serve release builds of the functions, as Lambda "
                        "runs them (the benchmarks' CPU and durations; a first build takes "
                        "minutes)")
    p.add_argument("--persist", action="store_true",
                   help=f"keep DynamoDB data on disk in {rel(DATA_DIR)} (default: in memory)")
    p.add_argument("--state-file", metavar="PATH", help=state_help)
    p.add_argument("--parent-pid", type=int, metavar="PID",
                   help="stop everything when this process no longer exists (polled every 0.5 s)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="stack.py", description=DESCRIPTION)
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
