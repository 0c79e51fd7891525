"""DynamoDB Local on Java: the loopback launcher (`LoopbackDynamoDBLocal`, compiled at
install time), finding the jar, and the JVM command line.

Standard library only; see infra/local/README.md.
"""

import hashlib
import os
import platform
import shutil
import sys
from pathlib import Path

from .common import DYNAMO_NPM_PKG, NPM_DIR, SHIM_DIR, StackError, _run_step, rel, say


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


def dynamodb_command(java: str, jar: Path, lib: Path, shim: Path | None, storage: list[str],
                     port: int) -> list[str]:
    """The JVM command line of DynamoDB Local on `port`, through the loopback launcher when
    it was compiled."""
    # Serial GC: fewer threads and less memory when several stacks run in parallel
    # tests on 2 cores; startup is about 1 s either way.
    jvm = [java, f"-Djava.library.path={lib}", "-Xmx1g", "-XX:+UseSerialGC"]
    main = (["-cp", f"{shim}{os.pathsep}{jar}", SHIM_CLASS] if shim
            else ["-jar", str(jar)])
    # -sharedDb: one database whatever the access key/region of the caller.
    # -disableTelemetry: DynamoDB Local otherwise tries to reach AWS.
    return jvm + main + storage + ["-port", str(port), "-sharedDb", "-disableTelemetry"]
