//! A Lambda Runtime API emulator: what the Lambda service offers a function process at
//! `AWS_LAMBDA_RUNTIME_API` (`GET /2018-06-01/runtime/invocation/next`, `POST
//! .../invocation/{id}/response`, `.../invocation/{id}/error`, `POST
//! .../runtime/init/error`), driven from Rust: a caller queues events with
//! [`RuntimeApi::invoke`] and gets each outcome back with the instants the function took
//! the event and answered, which is what the cold-start benchmark measures.
//!
//! One emulator serves one function; start a new one per cold start so that every
//! process begins from an empty queue.

mod protocol;
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

pub use protocol::{MAX_RESPONSE_BYTES, RUNTIME_PREFIX};

/// What a function reported through `.../error` or `/runtime/init/error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    /// `Lambda-Runtime-Function-Error-Type`, when the runtime sent one.
    pub error_type: Option<String>,
    /// The JSON body (`errorMessage`, `errorType`, `stackTrace`), as sent.
    pub body: Vec<u8>,
}

impl std::fmt::Display for FunctionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        match &self.error_type {
            Some(t) => write!(f, "{t}: {body}"),
            None => write!(f, "{body}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Response(Vec<u8>),
    Error(FunctionError),
}

/// One event's round trip through the function.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    /// When `next` handed the event to the function.
    pub delivered_at: Instant,
    /// When the function's response (or error) arrived.
    pub completed_at: Instant,
    pub outcome: Outcome,
}

impl Invocation {
    /// Time inside the function: the event handed over until its answer arrived.
    pub fn duration(&self) -> Duration {
        self.completed_at
            .saturating_duration_since(self.delivered_at)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the function reported an init error: {0}")]
    Init(FunctionError),
    #[error("no {0} within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("the emulator stopped")]
    Stopped,
}

struct Pending {
    n: u64,
    id: String,
    payload: Vec<u8>,
    done: oneshot::Sender<(Instant, Instant, Outcome)>,
}

struct InFlight {
    delivered_at: Instant,
    done: oneshot::Sender<(Instant, Instant, Outcome)>,
}

#[derive(Debug, Clone, Default)]
struct Status {
    first_poll: Option<Instant>,
    init_error: Option<FunctionError>,
}

struct Shared {
    function_arn: String,
    timeout: Duration,
    queue_tx: mpsc::UnboundedSender<Pending>,
    // A tokio mutex: the `next` handler holds it across the wait for an event, so two
    // pollers take events one at a time and a poller that hangs up loses none.
    queue_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>,
    in_flight: Mutex<HashMap<String, InFlight>>,
    status: watch::Sender<Status>,
    next_id: AtomicU64,
}

impl Shared {
    fn record_poll(&self, at: Instant) {
        self.status.send_if_modified(|s| {
            let first = s.first_poll.is_none();
            if first {
                s.first_poll = Some(at);
            }
            first
        });
    }

    fn record_init_error(&self, e: FunctionError) {
        self.status.send_modify(|s| s.init_error = Some(e));
    }

    /// Hands the function's answer to whoever queued the event; false for an id that
    /// is not in flight (unknown, or already answered).
    fn complete(&self, id: &str, outcome: Outcome) -> bool {
        let entry = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        match entry {
            Some(f) => {
                // The caller may have given up waiting; the answer then goes nowhere.
                let _ = f.done.send((f.delivered_at, Instant::now(), outcome));
                true
            }
            None => false,
        }
    }
}

/// A running emulator for one function, on 127.0.0.1 at a free port. Dropping it stops
/// the server.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Starts serving. `timeout` sets each event's `Lambda-Runtime-Deadline-Ms`, as the
    /// function's configured timeout does on Lambda.
    pub async fn start(function_name: &str, timeout: Duration) -> std::io::Result<Self> {
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function_name}"),
            timeout,
            queue_tx,
            queue_rx: tokio::sync::Mutex::new(queue_rx),
            in_flight: Mutex::new(HashMap::new()),
            status: watch::Sender::new(Status::default()),
            next_id: AtomicU64::new(1),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = server::router(shared.clone());
        let server = tokio::spawn(async move {
            // Serving ends only with an accept error on a loopback listener, after
            // which the callers see their waits time out.
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`: `host:port`, no scheme, as Lambda sets it.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Waits for the function's first `next`: the end of its init phase.
    pub async fn first_poll(&self, within: Duration) -> Result<Instant, RuntimeError> {
        let mut rx = self.shared.status.subscribe();
        let wait = rx.wait_for(|s| s.first_poll.is_some() || s.init_error.is_some());
        let status = tokio::time::timeout(within, wait)
            .await
            .map_err(|_| RuntimeError::Timeout("first `next`", within))?
            .map_err(|_| RuntimeError::Stopped)?
            .clone();
        match (status.init_error, status.first_poll) {
            (Some(e), _) => Err(RuntimeError::Init(e)),
            (None, Some(at)) => Ok(at),
            (None, None) => Err(RuntimeError::Stopped),
        }
    }

    /// Queues one event and waits for the function's answer.
    pub async fn invoke(
        &self,
        payload: Vec<u8>,
        within: Duration,
    ) -> Result<Invocation, RuntimeError> {
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let id = protocol::request_id(n);
        let (done, answer) = oneshot::channel();
        self.shared
            .queue_tx
            .send(Pending {
                n,
                id: id.clone(),
                payload,
                done,
            })
            .map_err(|_| RuntimeError::Stopped)?;
        let (delivered_at, completed_at, outcome) = tokio::time::timeout(within, answer)
            .await
            .map_err(|_| RuntimeError::Timeout("answer", within))?
            .map_err(|_| RuntimeError::Stopped)?;
        Ok(Invocation {
            request_id: id,
            delivered_at,
            completed_at,
            outcome,
        })
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[cfg(test)]
mod tests;
