//! `SmsSender`: a text sent is delivered once, as written, to that number (parallel sends
//! too); a text SNS refuses (over its 1,600 characters) is an error that names neither
//! the number nor the text, and nothing is delivered; a publish the channel throttles
//! (past the adapter's retries) is `Throttled`, not a failure, and delivers nothing. The
//! port returns no message id, so there is none to check.

use std::sync::Arc;

use futures::future::BoxFuture;
use shared::adapters::memory::MemorySms;
use shared::adapters::sns::SnsSms;
use shared::model::phone::PhoneNumber;
use shared::ports::{NotifyError, SmsSender};
use testkit::LocalClients;

use super::{at_once, contract};

contract!(
    crate::contracts::sms_sender::SmsWorld, sns;
    a_sent_sms_is_delivered_once_as_written,
    twenty_parallel_sends_are_each_delivered,
    a_text_sns_refuses_is_an_error_naming_no_number_and_sends_nothing,
    a_throttled_publish_is_throttled_not_failed_and_delivers_nothing,
);

/// One case's sender and a way to read what reached a number.
pub struct SmsWorld<S> {
    pub sms: Arc<S>,
    sent: Box<dyn Fn(PhoneNumber) -> BoxFuture<'static, Vec<String>> + Send + Sync>,
    /// Makes the channel answer `Throttling` to a number (true) or stop (false).
    throttle: Box<dyn Fn(PhoneNumber, bool) -> BoxFuture<'static, ()> + Send + Sync>,
}

impl SmsWorld<MemorySms> {
    pub fn memory() -> Self {
        let sms = Arc::new(MemorySms::default());
        let probe = sms.clone();
        let switch = sms.clone();
        Self {
            sms,
            // One switch for the whole double: each case has a sender of its own.
            throttle: Box::new(move |_, on| {
                switch.throttle(on);
                Box::pin(async {})
            }),
            sent: Box::new(move |to| {
                let texts = probe
                    .sent()
                    .into_iter()
                    .filter(|(n, _)| *n == to)
                    .map(|(_, t)| t)
                    .collect();
                Box::pin(async move { texts })
            }),
        }
    }
}

impl SmsWorld<SnsSms> {
    /// The SNS adapter publishing through the stack's throttling proxy to its SNS
    /// emulator, read back through moto's model data.
    pub async fn sns() -> Self {
        let proxy = testkit::sms::throttle_proxy();
        let clients = LocalClients::new(&testkit::Endpoints {
            sns_endpoint: proxy.clone(),
            ..testkit::stack::endpoints().clone()
        });
        let endpoint = testkit::stack::endpoints().sns_endpoint.clone();
        Self {
            sms: Arc::new(SnsSms::new(clients.sns, None)),
            throttle: Box::new(move |to, on| {
                let proxy = proxy.clone();
                Box::pin(async move {
                    testkit::sms::throttle(&proxy, &[to.e164()], if on { 300 } else { 0 })
                        .await
                        .expect("the throttling proxy answers");
                })
            }),
            sent: Box::new(move |to| {
                let endpoint = endpoint.clone();
                Box::pin(async move {
                    testkit::sms::sent_sms_to(&endpoint, to.e164())
                        .await
                        .expect("the emulator's sent SMS")
                        .into_iter()
                        .map(|m| m.message)
                        .collect()
                })
            }),
        }
    }
}

impl<S> SmsWorld<S> {
    /// The texts delivered to `to`, oldest first.
    pub async fn sent_to(&self, to: &PhoneNumber) -> Vec<String> {
        (self.sent)(to.clone()).await
    }

    pub async fn throttle(&self, to: &PhoneNumber, on: bool) {
        (self.throttle)(to.clone(), on).await
    }

    /// Nothing to remove: each case sends to numbers of its own.
    pub async fn cleanup(self) {}
}

/// A number of this case alone (the emulator is shared by every test).
fn new_number() -> PhoneNumber {
    let n = ulid::Ulid::generate().random() % 100_000_000;
    PhoneNumber::parse(&format!("+86139{n:08}")).unwrap()
}

const TEXT: &str = "【云闪付】您的查卡报告已生成，请在App内查看。谨防诈骗，切勿向他人透露验证码。";

async fn a_sent_sms_is_delivered_once_as_written<S: SmsSender>(w: &SmsWorld<S>) {
    let to = new_number();
    w.sms.send_sms(&to, TEXT).await.unwrap();
    assert_eq!(w.sent_to(&to).await, [TEXT]);
    // Nothing reached another number.
    assert!(w.sent_to(&new_number()).await.is_empty());
}

async fn twenty_parallel_sends_are_each_delivered<S: SmsSender>(w: &SmsWorld<S>) {
    let to = new_number();
    let texts: Vec<String> = (0..20).map(|i| format!("验证码 {i:06}")).collect();
    let results = at_once(20, |i| w.sms.send_sms(&to, &texts[i])).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut sent = w.sent_to(&to).await;
    sent.sort();
    assert_eq!(sent, texts);
}

async fn a_text_sns_refuses_is_an_error_naming_no_number_and_sends_nothing<S: SmsSender>(
    w: &SmsWorld<S>,
) {
    let to = new_number();
    // 1,600 characters is the most one publish takes; one more is refused.
    let longest = "码".repeat(1600);
    w.sms.send_sms(&to, &longest).await.unwrap();
    let too_long = format!("code 482916 {}", "x".repeat(1600));
    let err = w.sms.send_sms(&to, &too_long).await.unwrap_err();
    let NotifyError::Failed(said) = err else {
        panic!("a refused text is a failure, not throttling: {err:?}")
    };
    // The error is logged: neither the number nor the text (a code, say) is in it.
    assert!(!said.contains(&to.e164()[3..]), "{said}");
    assert!(!said.contains("482916"), "{said}");
    assert_eq!(w.sent_to(&to).await, [longest]);
}

async fn a_throttled_publish_is_throttled_not_failed_and_delivers_nothing<S: SmsSender>(
    w: &SmsWorld<S>,
) {
    let to = new_number();
    w.throttle(&to, true).await;
    let err = w.sms.send_sms(&to, TEXT).await.unwrap_err();
    assert!(matches!(err, NotifyError::Throttled), "{err:?}");
    assert!(w.sent_to(&to).await.is_empty());
    // Once it clears, the same text goes out, once.
    w.throttle(&to, false).await;
    w.sms.send_sms(&to, TEXT).await.unwrap();
    assert_eq!(w.sent_to(&to).await, [TEXT]);
}
