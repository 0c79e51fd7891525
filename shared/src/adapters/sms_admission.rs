//! The SMS channel's shared rate (`ports::SmsAdmission`) for the running functions.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ports::{Admit, SmsAdmission, StoreError};

/// Admits every message: until the merge below, SNS's own throttling (retried by the
/// SNS adapter, then answered 503 / deferred to the sweeper) is the only limit.
// wired to dispatch::gate at merge (issue 17, piece B): the gate's rate-only admission
// for lane "SMS" at `sms_channel.rate_per_second` replaces this.
pub struct UngatedSms;

#[async_trait]
impl SmsAdmission for UngatedSms {
    async fn admit(&self, _now: DateTime<Utc>) -> Result<Admit, StoreError> {
        Ok(Admit::Go)
    }
}
