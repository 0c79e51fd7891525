//! The local stack launcher starts every service, reports it healthy, and on SIGTERM
//! stops them all, leaving no process and no listening port behind.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn alive(pid: u64) -> bool {
    // A reaped process has no /proc entry; a zombie would still count as left behind.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

fn listening(port: u16) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

#[tokio::test]
async fn launcher_starts_healthy_services_and_stops_them_all() {
    let root = testkit::workspace_root();
    let state_file = std::env::temp_dir().join(format!(
        "launcher-test-{}.json",
        ulid::Ulid::generate().to_string().to_lowercase()
    ));
    let mut launcher = Command::new("python3")
        .arg(root.join("infra/local/stack.py"))
        .args(["up", "--dynamodb-port", "0", "--sns-port", "0"])
        .arg("--state-file")
        .arg(&state_file)
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let ready = BufReader::new(launcher.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find_map(|l| l.strip_prefix("READY ").map(str::to_owned))
        .expect("launcher reports ready");
    let state: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(state, on_disk, "the state file says what stdout said");

    let endpoints: testkit::Endpoints = serde_json::from_value(state.clone()).unwrap();
    let pids: Vec<u64> = state["pids"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(pids.len() >= 2, "one pid per service: {state}");
    assert!(pids.iter().all(|&p| alive(p)));

    // Healthy means usable: a real call to each service.
    let clients = testkit::LocalClients::new(&endpoints);
    clients.dynamodb.list_tables().send().await.unwrap();
    clients.sns.list_topics().send().await.unwrap();

    let ports = [
        port_of(&endpoints.dynamodb_endpoint),
        port_of(&endpoints.sns_endpoint),
    ];
    assert!(ports.iter().all(|&p| listening(p)));

    let status = Command::new("kill")
        .args(["-TERM", &launcher.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = launcher.wait().unwrap();
    assert!(exit.success(), "launcher exits cleanly on SIGTERM: {exit}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && (pids.iter().any(|&p| alive(p))) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<_> = pids.iter().filter(|&&p| alive(p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let busy: Vec<_> = ports.iter().filter(|&&p| listening(p)).collect();
    assert!(busy.is_empty(), "ports still listening: {busy:?}");
    assert!(!state_file.exists(), "the state file is removed on stop");
}

#[test]
fn a_failed_command_keeps_the_stacks_logs_and_says_where() {
    let root = testkit::workspace_root();
    let out = Command::new("python3")
        .arg(root.join("infra/local/stack.py"))
        .args(["exec", "--", "sh", "-c", "exit 3"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "the command's exit code");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("sh exited 3; the stack's logs are kept in"))
        .unwrap_or_else(|| panic!("no word of the kept logs: {stderr}"));
    let pid = line
        .split("*-")
        .nth(1)
        .and_then(|r| r.split(".log").next())
        .unwrap_or_else(|| panic!("no launcher pid in {line:?}"));
    let dynamodb_log = root.join(format!(".local/logs/dynamodb-{pid}.log"));
    assert!(dynamodb_log.exists(), "{} is kept", dynamodb_log.display());
    for service in ["dynamodb", "sns", "sns-throttle"] {
        let _ = std::fs::remove_file(root.join(format!(".local/logs/{service}-{pid}.log")));
    }
}

#[test]
fn the_failure_digest_names_function_errors_and_the_pumps_failed_or_slow_invocations() {
    let root = testkit::workspace_root();
    let dir = std::env::temp_dir().join(format!(
        "digest-test-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let function = dir.join("fn-aggregate-report-1.log");
    std::fs::write(
        &function,
        [
            "=== 2026-12-02T01:07:17 $ target/debug/aggregate-report",
            r#"{"level":"INFO","fields":{"message":"report published"}}"#,
            r#"{"level":"WARN","fields":{"message":"callback refused"}}"#,
            r#"{"level":"ERROR","fields":{"message":"stream record failed; it will be retried"}}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let pump = dir.join("pump.log");
    std::fs::write(
        &pump,
        [
            r#"{"function":"aggregate-report","outcome":"ok","ms":120}"#,
            r#"{"function":"aggregate-report","outcome":"ok","ms":61000}"#,
            r#"{"function":"bank-inquiry","outcome":"function_error","ms":40}"#,
            r#"{"level":"info","msg":"event sources"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let script = format!(
        "import sys; sys.path.insert(0, {lib:?}); from pathlib import Path; \
         from localstack.digest import digest; \
         print('\\n'.join(digest([('fn-aggregate-report-1', Path({f:?})), ('pump', Path({p:?})), \
         ('dynamodb', Path({f:?}))])))",
        lib = root.join("infra/local").display().to_string(),
        f = function.display().to_string(),
        p = pump.display().to_string(),
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fn-aggregate-report-1: 1 lines of trouble"),
        "{text}"
    );
    assert!(text.contains("stream record failed"), "{text}");
    assert!(
        !text.contains("callback refused"),
        "warnings are the tests' own: {text}"
    );
    assert!(!text.contains("report published"), "{text}");
    assert!(text.contains("pump: 2 lines of trouble"), "{text}");
    assert!(
        text.contains("61000") && text.contains("function_error"),
        "{text}"
    );
    assert!(
        !text.contains(r#""ms":120"#),
        "a quick ok invocation: {text}"
    );
    assert!(
        !text.contains("dynamodb"),
        "only the pump and the functions: {text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
