"""The running stack: services in their own process groups that die with the launcher,
health checks, the API (functions, watch, gate, pump), the state file, stopping.

Standard library only; see infra/local/README.md.
"""

import argparse
import atexit
import ctypes
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .common import (
    BIN_DIR, DATA_DIR, DEFAULT_STATE, FUNCTION_INSTANCES, GATE_MAX_IN_FLIGHT, HOST,
    INSTANCE_RESTARTS, LOCAL, LOG_DIR, PROBE_TIMEOUT_S, PUMP_READY_LINE, PUMP_TABLE, REGION,
    ROOT, STARTUP_TIMEOUT_S, STOP_GRACE_S, StackError, TABLE_PREFIX, VENV_DIR,
    WATCH_GATE_READY_LINE, api_healthy, atomic_write, bank_sim_healthy, dynamodb_healthy,
    cargo_build, function_names, http, log_tail, parse_env_file, pick_free_port, pid_alive,
    port_free, port_listening, proc_start_time, rel, say, sns_healthy, watch_routes,
)
from .java import dynamodb_command
from . import sns_throttle
from .install import _abs, ensure_installed


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
            return dynamodb_command(java, jar, lib, shim, storage, port)

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
            # moto's server mode serves every service on its one port.
            "sqs_endpoint": by["sns"].endpoint,
            "pids": {"dynamodb": by["dynamodb"].proc.pid, "sns": by["sns"].proc.pid},  # type: ignore[union-attr]
            "launcher_pid": os.getpid(),
        }
        if not self._start_sns_throttle(by["sns"].endpoint):
            return
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
            self.state["queue_env"] = self.queue_env
            self.state["devtools"] = str(self.bins["devtools"])
            if getattr(self, "fault_dir", None) is not None:
                self.state["fault_dir"] = str(self.fault_dir)
            # Where each instance logs, for the benchmarks that read the functions' lines.
            self.state["function_logs"] = {
                s.name.removeprefix("fn-"): str(s.log) for s in instances}
            self.state["release"] = bool(getattr(self.opts, "release", False))
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
            # Through the throttling proxy (sns_throttle.py) when there is one.
            "AWS_ENDPOINT_URL_SNS": state.get("sns_throttle_endpoint", state["sns_endpoint"]),
            "AWS_ENDPOINT_URL_SQS": state["sqs_endpoint"],
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

    def _start_sns_throttle(self, moto: str) -> bool:
        """The SNS throttling proxy in front of moto (`sns_throttle.py`). False if
        interrupted."""
        proxy = Service("sns_throttle", "SNS throttling proxy", "--sns-port", 0,
                        lambda port: sns_throttle.argv(port, moto), LOCAL,
                        sns_throttle.healthy, self._log_path("sns-throttle"))
        self.services.append(proxy)
        if not self._start_and_wait([proxy], STARTUP_TIMEOUT_S):
            return False
        assert self.state is not None and proxy.proc is not None
        self.state["sns_throttle_endpoint"] = proxy.endpoint
        self.state["pids"]["sns_throttle"] = proxy.proc.pid
        return True

    def _run_devtools(self, env: dict[str, str], args: list[str]) -> str:
        run = subprocess.run([str(self.bins["devtools"])] + args, cwd=ROOT, env=env,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if run.returncode != 0:
            raise StackError(f"devtools {args[0]} failed:\n{run.stderr[-3000:]}")
        return run.stdout

    def _prepare_bank_sim(self, env: dict[str, str]) -> Service:
        """The simulated banks (infra/local/bank-sim): every bank of the service
        configuration (SERVICE_CONFIG, else the shipped one), with the local bank secrets
        of exactly those banks (devtools bank-secrets: the keys' file, derived for banks
        it does not list), which the functions get too."""
        secrets = LOCAL / f"bank-secrets-{os.getpid()}.json"
        self._run_devtools(env, ["bank-secrets", "--out", str(secrets)])
        self.bank_secrets_file = secrets

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
        say("creating the template's queues in moto (devtools queues)")
        queue_env = parse_env_file(self._run_devtools(env, ["queues", "--prefix", TABLE_PREFIX]))
        # The callback URL names the API's port, so it is chosen before the API starts.
        port = self.opts.api_port or pick_free_port()
        if not port_free(port):
            raise StackError(f"port {port} on {HOST} is already in use; cannot start cargo "
                             f"lambda watch there (choose another --api-port, or 0)")
        config = LOCAL / f"service-{os.getpid()}.json"
        fn_env = self._run_devtools(env, [
            "env", "--prefix", TABLE_PREFIX, "--api-url", f"http://{HOST}:{port}",
            "--bank-sim-url", bank_sim, "--config-out", str(config),
            "--bank-secrets", str(self.bank_secrets_file)])
        env_file = LOCAL / f"functions-{os.getpid()}.env"
        atomic_write(env_file, fn_env)
        routes_file = LOCAL / f"watch-routes-{os.getpid()}.json"
        atomic_write(routes_file, json.dumps(watch_routes()))
        self.generated_files = [env_file, config, routes_file, self.bank_secrets_file]
        self.pump_bin = self.bins["event-pump"]
        self.fn_env = dict(env)
        self.fn_env.update(parse_env_file(fn_env))
        # INQUIRY_QUEUE_URL and any other `!Ref <queue>` of the functions' environment.
        self.fn_env.update(queue_env)
        self.queue_env = queue_env

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
        """Builds every function (debug, or release with --release) before anything
        serves, in one cargo call, and returns their executables. Nothing builds them
        again while the stack runs."""
        names = function_names()
        profile = ("--release",) if getattr(self.opts, "release", False) else ()
        say(f"building the functions (cargo build {''.join(p + ' ' for p in profile)}"
            f"-p {' -p '.join(names)})")
        return cargo_build(names, env, "the functions", profile)

    def _build_fault_injection(self, env: dict[str, str]) -> dict[str, Path]:
        """aggregate-report built with `shared/fault-injection` (the aggregator aborts at
        a point armed by a file in the state's `fault_dir`), copied aside: the normal
        build that follows puts the plain binary back in place for every other stack."""
        say("building aggregate-report with --features shared/fault-injection")
        exe = cargo_build(["aggregate-report"], env, "aggregate-report with fault injection",
                          ("--features", "shared/fault-injection"))["aggregate-report"]
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
        return cargo_build(names, env, "the local tools")

    def _prepare_pump(self, state: dict[str, Any], api_endpoint: str) -> Service:
        """The event pump: the table's stream, the queues and the schedules to the
        functions served by `cargo lambda watch`, as infra/template.yaml declares them."""
        argv = [str(self.pump_bin),
                "--dynamodb-endpoint", state["dynamodb_endpoint"],
                "--sqs-endpoint", state["sqs_endpoint"],
                "--queue-prefix", TABLE_PREFIX,
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
