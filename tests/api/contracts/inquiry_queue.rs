//! `InquiryQueue`: attempts come back in the order queued per bank (the message group),
//! each once however often it was queued (the de-duplication id); a paused message
//! holds back its bank's messages until it is visible again, while other banks go on. The real side is the SQS adapter on the stack's moto server (a FIFO queue of the
//! case's own); both are received from as the event source mapping does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use chrono::TimeDelta;
use futures::future::BoxFuture;
use shared::adapters::memory::MemoryQueue;
use shared::adapters::sqs::SqsInquiryQueue;
use shared::clock::ManualClock;
use shared::dispatch::queue::{InquiryQueue, LegAttempt};
use shared::dispatch::sender::Received;
use shared::model::ids::QueryId;

use super::{bank, contract};

contract!(
    crate::contracts::inquiry_queue::QueueWorld, sqs;
    attempts_come_back_in_order_per_bank_and_once,
    a_paused_message_holds_back_its_bank_until_visible_again,
);

type Receive = Box<dyn Fn() -> BoxFuture<'static, Vec<(String, Received)>> + Send + Sync>;
type Delete = Box<dyn Fn(Vec<Received>) -> BoxFuture<'static, ()> + Send + Sync>;
type Wait = Box<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// One case's queue, and the event source mapping's side of it: receive (with each
/// message's group), delete, and let time pass.
pub struct QueueWorld<Q> {
    pub queue: Arc<Q>,
    receive: Receive,
    delete: Delete,
    wait: Wait,
    cleanup: Option<BoxFuture<'static, ()>>,
}

impl QueueWorld<MemoryQueue> {
    pub fn memory() -> Self {
        let clock = Arc::new(ManualClock::new(
            shared::model::timestamp::parse("2026-11-28T02:00:00Z").unwrap(),
        ));
        let queue = Arc::new(MemoryQueue::new(clock.clone()));
        let (r, d) = (queue.clone(), queue.clone());
        Self {
            queue,
            receive: Box::new(move || {
                let got = r
                    .receive(10)
                    .into_iter()
                    .map(|m| {
                        let group = LegAttempt::parse(&m.body).unwrap().bank.to_string();
                        (group, m)
                    })
                    .collect();
                Box::pin(async move { got })
            }),
            delete: Box::new(move |done| {
                d.complete(&done, &[]);
                Box::pin(async {})
            }),
            wait: Box::new(move |t| {
                clock.advance(TimeDelta::from_std(t).unwrap());
                Box::pin(async {})
            }),
            cleanup: None,
        }
    }
}

impl QueueWorld<SqsInquiryQueue> {
    /// A FIFO queue of its own on the stack's moto server (which serves SQS on the port
    /// it serves SNS on).
    pub async fn sqs() -> Self {
        let endpoints = testkit::stack::endpoints();
        let conf = aws_sdk_sqs::config::Builder::from(&testkit::sdk_config())
            .endpoint_url(&endpoints.sns_endpoint)
            .build();
        let client = aws_sdk_sqs::Client::from_conf(conf);
        let url = client
            .create_queue()
            .queue_name(format!("contract-{}.fifo", ulid::Ulid::generate()))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::VisibilityTimeout, "60")
            .send()
            .await
            .expect("a queue")
            .queue_url
            .expect("its url");
        let (rc, ru) = (client.clone(), url.clone());
        let (dc, du) = (client.clone(), url.clone());
        let (cc, cu) = (client.clone(), url.clone());
        Self {
            queue: Arc::new(SqsInquiryQueue::new(client, url)),
            receive: Box::new(move || {
                let (c, u) = (rc.clone(), ru.clone());
                Box::pin(async move {
                    let out = c
                        .receive_message()
                        .queue_url(u)
                        .max_number_of_messages(10)
                        .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                        .wait_time_seconds(1)
                        .send()
                        .await
                        .expect("received");
                    out.messages
                        .unwrap_or_default()
                        .into_iter()
                        .map(|m| {
                            let group = m
                                .attributes
                                .as_ref()
                                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                                .cloned()
                                .unwrap_or_default();
                            let received = Received {
                                message_id: m.message_id.unwrap_or_default(),
                                receipt: m.receipt_handle.unwrap_or_default(),
                                body: m.body.unwrap_or_default(),
                            };
                            (group, received)
                        })
                        .collect()
                })
            }),
            delete: Box::new(move |done| {
                let (c, u) = (dc.clone(), du.clone());
                Box::pin(async move {
                    for m in done {
                        c.delete_message()
                            .queue_url(&u)
                            .receipt_handle(m.receipt)
                            .send()
                            .await
                            .expect("deleted");
                    }
                })
            }),
            wait: Box::new(|t| Box::pin(tokio::time::sleep(t))),
            cleanup: Some(Box::pin(async move {
                let _ = cc.delete_queue().queue_url(cu).send().await;
            })),
        }
    }
}

impl<Q> QueueWorld<Q> {
    pub async fn cleanup(self) {
        if let Some(c) = self.cleanup {
            c.await;
        }
    }

    /// Receives and deletes until a receive comes back empty: each bank's attempts in
    /// the order they came.
    async fn drain(&self) -> BTreeMap<String, Vec<LegAttempt>> {
        let mut out: BTreeMap<String, Vec<LegAttempt>> = BTreeMap::new();
        loop {
            let got = (self.receive)().await;
            if got.is_empty() {
                return out;
            }
            for (group, m) in &got {
                let a = LegAttempt::parse(&m.body).expect("a leg attempt");
                assert_eq!(group, a.bank.as_str(), "grouped by bank");
                out.entry(group.clone()).or_default().push(a);
            }
            (self.delete)(got.into_iter().map(|(_, m)| m).collect()).await;
        }
    }
}

fn attempts(n: usize) -> Vec<LegAttempt> {
    (0..n)
        .map(|i| LegAttempt {
            query_id: QueryId::generate(),
            bank: bank(if i % 2 == 0 { "ICBC" } else { "CMB" }),
            attempt: 1,
        })
        .collect()
}

async fn attempts_come_back_in_order_per_bank_and_once<Q: InquiryQueue>(w: &QueueWorld<Q>) {
    let sent = attempts(25);
    w.queue.enqueue(&sent).await.unwrap();
    // Planned again (a redelivered stream record): nothing is queued twice.
    w.queue.enqueue(&sent).await.unwrap();
    let got = w.drain().await;
    for b in ["ICBC", "CMB"] {
        let want: Vec<LegAttempt> = sent
            .iter()
            .filter(|a| a.bank.as_str() == b)
            .cloned()
            .collect();
        assert_eq!(got.get(b), Some(&want), "{b}");
    }
}

async fn a_paused_message_holds_back_its_bank_until_visible_again<Q: InquiryQueue>(
    w: &QueueWorld<Q>,
) {
    let sent = attempts(4);
    w.queue.enqueue(&sent).await.unwrap();
    let first = (w.receive)().await;
    // The sender paused ICBC's messages of the batch and sent CMB's.
    let (icbc, cmb): (Vec<_>, Vec<_>) = first.into_iter().partition(|(g, _)| g == "ICBC");
    assert!(!icbc.is_empty());
    for (_, m) in &icbc {
        w.queue.pause(&m.receipt, 2).await.unwrap();
    }
    (w.delete)(cmb.into_iter().map(|(_, m)| m).collect()).await;
    let got = w.drain().await;
    assert!(
        !got.contains_key("ICBC"),
        "ICBC came back during its pause: {got:?}"
    );
    (w.wait)(Duration::from_millis(2500)).await;
    let mut got = w.drain().await.remove("ICBC").unwrap_or_default();
    let mut want: Vec<LegAttempt> = sent
        .iter()
        .filter(|a| a.bank.as_str() == "ICBC")
        .cloned()
        .collect();
    // Each once after the pause. Their order then is SQS's promise (a group's messages
    // in order, whatever their visibility), which moto 5 does not keep: it hands back a
    // group's paused messages last first (its receive skips a visible message while a
    // later one of its group is still marked pending). Compared as sets here, so the
    // case checks the port, not the emulator (decision 115).
    let key = |a: &LegAttempt| a.query_id.to_string();
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want, "each once, after the pause");
}
