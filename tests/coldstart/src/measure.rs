//! One cold start of one function: a fresh process under a fresh emulator, its init
//! (process start → first `next`), its first invocation, the warm ones, its peak RSS.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use runtime_api::{Outcome, RuntimeApi};

use crate::events::Event;
use crate::setup::World;

/// A function process to measure: one of ours, or a peer.
pub struct Target {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub extra_env: Vec<(String, String)>,
    pub event: Event,
    /// The template's timeout: the events' deadline.
    pub timeout: Duration,
}

pub struct ColdStart {
    pub init: Duration,
    /// CPU time the process used during init, over all its threads: unlike `init`,
    /// barely moved by other processes competing for the CPUs.
    pub init_cpu: Duration,
    pub first: Duration,
    pub warm: Vec<Duration>,
    /// `VmHWM` once the calls are done, in KiB.
    pub peak_rss_kib: u64,
}

const INIT_WAIT: Duration = Duration::from_secs(60);

/// `VmHWM` of a live process: the peak resident set since it started.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// CPU time of a live process so far, summed over its threads' `schedstat` (ns on CPU).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns = 0u64;
    for task in tasks.flatten() {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += parse_schedstat(&stat)?;
        }
    }
    Some(Duration::from_nanos(ns))
}

fn parse_schedstat(stat: &str) -> Option<u64> {
    stat.split_whitespace().next()?.parse().ok()
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub async fn cold_start(
    target: &Target,
    world: &World,
    warm_calls: usize,
    log: &std::path::Path,
) -> Result<ColdStart, String> {
    let api = RuntimeApi::start(&target.name, target.timeout)
        .await
        .map_err(|e| format!("the emulator does not start: {e}"))?;
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = tokio::process::Command::new(&target.program);
    cmd.args(&target.args)
        .envs(world.env.iter().cloned())
        .envs(target.extra_env.iter().cloned())
        .envs([
            ("AWS_LAMBDA_RUNTIME_API", api.address()),
            ("AWS_LAMBDA_FUNCTION_NAME", target.name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", target.name),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "coldstart".into()),
        ])
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", target.program.display()))?;
    let pid = child.id().ok_or("the process is gone at once")?;

    let polled = tokio::select! {
        polled = api.first_poll(INIT_WAIT) => polled.map_err(|e| e.to_string())?,
        status = child.wait() => {
            return Err(format!("exited during init ({}); see {}",
                status.map(|s| s.to_string()).unwrap_or_default(), log.display()));
        }
    };
    let init = polled.saturating_duration_since(started);
    // The process now waits in `next` for the first event, so its CPU time stands still.
    let init_cpu = cpu_time(pid).ok_or("no /proc/<pid>/task/*/schedstat")?;

    let mut times = Vec::with_capacity(warm_calls + 1);
    for n in 0..=warm_calls as u64 {
        let invoked = tokio::select! {
            r = api.invoke(target.event.build(world, n), target.timeout) => {
                r.map_err(|e| format!("call {n}: {e}; see {}", log.display()))?
            }
            status = child.wait() => {
                return Err(format!("exited during call {n} ({}); see {}",
                    status.map(|s| s.to_string()).unwrap_or_default(), log.display()));
            }
        };
        match &invoked.outcome {
            Outcome::Response(body) => target.event.check(body)?,
            Outcome::Error(e) => return Err(format!("call {n} failed: {e}")),
        }
        times.push(invoked.duration());
    }
    // Read while the process waits in `next`: after the kill there is nothing to read.
    let peak_rss_kib = peak_rss_kib(pid).ok_or("no VmHWM in /proc/<pid>/status")?;
    let _ = child.kill().await;
    let first = times.remove(0);
    Ok(ColdStart {
        init,
        init_cpu,
        first,
        warm: times,
        peak_rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_from_proc_status() {
        let status =
            "Name:\tbootstrap\nVmPeak:\t  20000 kB\nVmHWM:\t   10816 kB\nVmRSS:\t 9000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(10816));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        // This very process has one.
        assert!(peak_rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }

    #[test]
    fn cpu_time_sums_the_threads_schedstat() {
        assert_eq!(parse_schedstat("63180 796913 2\n"), Some(63180));
        assert_eq!(parse_schedstat(""), None);
        let before = cpu_time(std::process::id()).unwrap();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {
            std::hint::black_box(0u64);
        }
        assert!(cpu_time(std::process::id()).unwrap() > before);
    }
}
