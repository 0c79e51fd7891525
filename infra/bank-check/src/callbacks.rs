//! The callback listener: stands in for our `POST /v1/bank-callbacks/{bank_code}`,
//! keeps every delivery with its arrival time and signature verdict, and answers as we
//! do (204 when the signature holds, 401 otherwise).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, TimeDelta, Utc};
use domain::bank::signing::{BankSecret, SignatureHeaders};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::client::verify_signed;

/// One callback as received.
#[derive(Clone)]
pub struct Delivery {
    pub at: DateTime<Utc>,
    /// `Ok` when signed by the bank over (POST, the path, the body).
    pub signature: Result<(), String>,
    pub body: Vec<u8>,
}

struct Inbox {
    bank: String,
    secret: BankSecret,
    deliveries: Mutex<Vec<Delivery>>,
    arrived: Notify,
}

pub struct Listener {
    /// `http://ADDR`, the base of the inquiries' `callback_url`.
    pub base: String,
    inbox: Arc<Inbox>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn signature(headers: &HeaderMap) -> Option<SignatureHeaders> {
    SignatureHeaders::read(|n| headers.get(n)?.to_str().ok().map(str::to_owned))
}

async fn receive(
    State(inbox): State<Arc<Inbox>>,
    Path(bank): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let verdict = if bank != inbox.bank {
        Err("the callback path names another bank".to_owned())
    } else {
        verify_signed(
            &inbox.secret,
            &inbox.bank,
            signature(&headers).as_ref(),
            uri.path(),
            &body,
        )
    };
    let status = if verdict.is_ok() {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    };
    inbox
        .deliveries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Delivery {
            at: Utc::now(),
            signature: verdict,
            body: body.to_vec(),
        });
    inbox.arrived.notify_waiters();
    status
}

/// A malformed body may still carry the id as text.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

impl Listener {
    pub async fn start(addr: SocketAddr, bank: &str, secret: BankSecret) -> Result<Self, String> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen for callbacks on {addr}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let inbox = Arc::new(Inbox {
            bank: bank.to_owned(),
            secret,
            deliveries: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let app = Router::new()
            .route("/v1/bank-callbacks/{bank_code}", post(receive))
            .with_state(inbox.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base: format!("http://{addr}"),
            inbox,
            task,
        })
    }

    /// The deliveries whose body names this inquiry, in arrival order.
    pub fn for_inquiry(&self, inquiry_id: &str) -> Vec<Delivery> {
        self.inbox
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|d| contains(&d.body, inquiry_id.as_bytes()))
            .cloned()
            .collect()
    }

    /// Waits until `count` deliveries name the inquiry, or `until` passes.
    pub async fn wait_for(
        &self,
        inquiry_id: &str,
        count: usize,
        until: DateTime<Utc>,
    ) -> Vec<Delivery> {
        loop {
            let notified = self.inbox.arrived.notified();
            let got = self.for_inquiry(inquiry_id);
            let left = until - Utc::now();
            if got.len() >= count || left <= TimeDelta::zero() {
                return got;
            }
            let left = left.to_std().unwrap_or_default();
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}
