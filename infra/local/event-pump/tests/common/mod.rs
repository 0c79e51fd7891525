//! A minimal Lambda invoke API for the pump's tests: records every invocation and
//! answers as the test scripts it.

// Each test binary uses its own part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One recorded invocation.
#[derive(Debug, Clone)]
pub struct Call {
    pub function: String,
    pub payload: Value,
    pub status: u16,
    pub answer: Value,
    /// When the call arrived and when it was answered.
    pub started: Instant,
    pub ended: Instant,
}

pub type Script = dyn Fn(&str, &Value, usize) -> (u16, Value) + Send + Sync;

/// A minimal invoke API: `POST /2015-03-31/functions/{name}/invocations`.
pub struct FakeLambda {
    pub url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Requests that arrived, answered or not.
    arrived: Arc<AtomicUsize>,
}

impl FakeLambda {
    /// `script(function, payload, nth call of that function)` → (status, body).
    pub async fn start(script: Box<Script>) -> Self {
        Self::start_slow(script, Duration::ZERO).await
    }

    /// Like [`FakeLambda::start`], each call taking `hold` before it answers (a function
    /// at work, to see how many are in flight at once).
    pub async fn start_slow(script: Box<Script>, hold: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let script: Arc<Script> = Arc::from(script);
        let c = calls.clone();
        let arrived = Arc::new(AtomicUsize::new(0));
        let a = arrived.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (calls, script, arrived) = (c.clone(), script.clone(), a.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, calls, script, hold, arrived).await;
                });
            }
        });
        Self {
            url,
            calls,
            arrived,
        }
    }

    /// Invocations that arrived so far, answered or still held.
    pub fn arrivals(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn calls_of(&self, function: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.function == function)
            .collect()
    }
}

async fn serve(
    mut sock: TcpStream,
    calls: Arc<Mutex<Vec<Call>>>,
    script: Arc<Script>,
    hold: Duration,
    arrived: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    loop {
        // Headers.
        let mut buf = Vec::new();
        let header_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = buf[header_end..].to_vec();
        while body.len() < len {
            let mut chunk = vec![0u8; len - body.len()];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let started = Instant::now();
        arrived.fetch_add(1, Ordering::SeqCst);
        let function = path
            .strip_prefix("/2015-03-31/functions/")
            .and_then(|p| p.strip_suffix("/invocations"))
            .unwrap_or("")
            .to_owned();
        let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let nth = calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.function == function)
            .count();
        let (status, answer) = script(&function, &payload, nth);
        tokio::time::sleep(hold).await;
        calls.lock().unwrap().push(Call {
            function,
            payload,
            status,
            answer: answer.clone(),
            started,
            ended: Instant::now(),
        });
        let text = answer.to_string();
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        sock.write_all(resp.as_bytes()).await?;
    }
}
