//! In-memory ports for unit tests, with the same conditional-write semantics as the
//! DynamoDB adapter.
#![cfg(any(test, feature = "test-util"))]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::dispatch::gate::{self, Admission, Gate, Health, Hold, Lane, LanePolicy, Permit};
use crate::dispatch::queue::{DisputeSend, InquiryQueue, LegAttempt, QueueError, QueueMessage};
use crate::dispatch::sender::Received;
use crate::model::bank::BankCode;
use crate::model::ids::{QueryId, UserId, VerificationId};
use crate::model::phone::PhoneNumber;
use crate::model::profile::UserProfile;
use crate::model::purpose::Purpose;
use crate::ports::{
    BankNonce, DisputeCreated, DisputeStore, Metric, Metrics, NotifyError, ProfileStore,
    QueryStore, ReportStore, SettleOutcome, Settlement, SmsSender, StoreError, SubmissionStore,
    SubmitError,
};
use crate::records::{
    ConsentRecord, DisputeEnd, DisputeRecord, DisputeStatus, DueWork, IdempotencyClaim,
    IdempotencyRecord, LegRecord, LegState, PasswordSlot, Publication, PublishOutcome, QueryPhase,
    QueryRecord, ReportView, StoredReport, Submission, SubmitConflict, UserState,
    VerificationRecord,
};
use crate::rules::password::{self, PasswordPolicy};
use crate::rules::{admission, deadline, idempotency, retention, sms_code};

#[derive(Default)]
struct Data {
    profiles: HashMap<UserId, UserProfile>,
    /// Users whose profile item exists but does not parse.
    corrupt_profiles: HashSet<UserId>,
    states: HashMap<UserId, UserState>,
    verifications: HashMap<(UserId, VerificationId), VerificationRecord>,
    idempotency: HashMap<(UserId, String), IdempotencyRecord>,
    face_nonces: HashSet<String>,
    queries: HashMap<QueryId, QueryRecord>,
    consents: HashMap<QueryId, ConsentRecord>,
    legs: HashMap<(QueryId, BankCode), LegRecord>,
    unsettled: HashMap<QueryId, usize>,
    bank_nonces: HashSet<(BankCode, String)>,
    reports: HashMap<QueryId, StoredReport>,
    notice_claims: HashMap<QueryId, DateTime<Utc>>,
    disputes: HashMap<(QueryId, String), DisputeRecord>,
    /// Test knob: `ensure_legs` creates this many more legs, then fails once.
    fail_leg_creation_after: Option<usize>,
}

/// A state written by an atomic update: the version moves, so optimistic writers that
/// read the state before it fail their check (as in DynamoDB, where every update of the
/// state item adds one to `version`).
fn bumped(state: UserState) -> UserState {
    UserState {
        version: state.version + 1,
        ..state
    }
}

#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<Data>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert_profile(&self, profile: UserProfile) {
        self.lock()
            .profiles
            .insert(profile.user_id.clone(), profile);
    }

    /// Makes `user`'s profile an item that does not parse (a users table written by
    /// someone else can hold one): reading it fails as the DynamoDB adapter's read does.
    pub fn corrupt_profile(&self, user: &UserId) {
        self.lock().corrupt_profiles.insert(user.clone());
    }

    /// Ends [`Self::corrupt_profile`]: a fault that passes.
    pub fn repair_profile(&self, user: &UserId) {
        self.lock().corrupt_profiles.remove(user);
    }

    pub fn queries(&self) -> Vec<QueryRecord> {
        self.lock().queries.values().cloned().collect()
    }

    pub fn consents(&self) -> Vec<ConsentRecord> {
        self.lock().consents.values().cloned().collect()
    }

    /// Legs of the query not yet settled, as the store counts them.
    pub fn unsettled(&self, id: &QueryId) -> Option<usize> {
        self.lock().unsettled.get(id).copied()
    }

    pub fn state_of(&self, user: &UserId) -> UserState {
        self.lock().states.get(user).cloned().unwrap_or_default()
    }

    /// Replaces a user's state outright (test set-up).
    /// Rewrites a stored report and its query record, as someone able to write the table
    /// could (tests of the sealed report's integrity).
    pub fn tamper_report(
        &self,
        id: &QueryId,
        edit: impl FnOnce(&mut StoredReport, &mut QueryRecord),
    ) {
        let mut d = self.lock();
        let (Some(mut report), Some(mut query)) =
            (d.reports.get(id).cloned(), d.queries.get(id).cloned())
        else {
            return;
        };
        edit(&mut report, &mut query);
        d.reports.insert(*id, report);
        d.queries.insert(*id, query);
    }

    /// Stores legs as `ensure_legs` would have created them (test set-up with chosen
    /// inquiry ids); an existing leg is kept.
    pub fn insert_legs(&self, legs: Vec<LegRecord>) {
        let mut d = self.lock();
        for leg in legs {
            d.legs
                .entry((leg.query_id, leg.bank.clone()))
                .or_insert(leg);
        }
    }

    /// The next `ensure_legs` calls create `n` legs in all, then one fails (as a store
    /// that became unavailable half way through creating a query's legs).
    pub fn fail_leg_creation_after(&self, n: usize) {
        self.lock().fail_leg_creation_after = Some(n);
    }

    pub fn set_state(&self, user: &UserId, state: UserState) {
        self.lock().states.insert(user.clone(), state);
    }
}

#[async_trait]
impl ProfileStore for MemoryStore {
    async fn profile(&self, user: &UserId) -> Result<Option<UserProfile>, StoreError> {
        let d = self.lock();
        if d.corrupt_profiles.contains(user) {
            return Err(StoreError::Corrupt(
                "the profile item does not parse".into(),
            ));
        }
        Ok(d.profiles.get(user).cloned())
    }
}

#[async_trait]
impl SubmissionStore for MemoryStore {
    async fn user_state(&self, user: &UserId) -> Result<UserState, StoreError> {
        Ok(self.state_of(user))
    }

    async fn put_user_state(
        &self,
        user: &UserId,
        state: &UserState,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        let mut d = self.lock();
        let current = d.states.get(user).map_or(0, |s| s.version);
        if current != expected_version {
            return Err(StoreError::Conflict);
        }
        d.states.insert(
            user.clone(),
            UserState {
                version: expected_version + 1,
                ..state.clone()
            },
        );
        Ok(())
    }

    async fn put_verification(&self, record: &VerificationRecord) -> Result<(), StoreError> {
        self.lock().verifications.insert(
            (record.user_id.clone(), record.verification_id),
            record.clone(),
        );
        Ok(())
    }

    async fn verification(
        &self,
        user: &UserId,
        id: &VerificationId,
    ) -> Result<Option<VerificationRecord>, StoreError> {
        Ok(self.lock().verifications.get(&(user.clone(), *id)).cloned())
    }

    async fn reserve_code_attempt(
        &self,
        user: &UserId,
        id: &VerificationId,
        purpose: Purpose,
        now: DateTime<Utc>,
        max_attempts: u32,
    ) -> Result<Option<VerificationRecord>, StoreError> {
        match self.lock().verifications.get_mut(&(user.clone(), *id)) {
            Some(v) if sms_code::may_compare(v, purpose, now, max_attempts) => {
                v.attempts += 1;
                Ok(Some(v.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn consume_verification(
        &self,
        user: &UserId,
        id: &VerificationId,
        max_attempts: u32,
    ) -> Result<bool, StoreError> {
        match self.lock().verifications.get_mut(&(user.clone(), *id)) {
            Some(v) if sms_code::may_consume(v, max_attempts) => {
                v.used = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn reserve_password_slot(
        &self,
        user: &UserId,
        holder: &str,
        now: DateTime<Utc>,
        policy: &PasswordPolicy,
    ) -> Result<(PasswordSlot, UserState), StoreError> {
        let mut d = self.lock();
        let state = d.states.get(user).cloned().unwrap_or_default();
        let (next, slot) = password::reserve_password_slot(&state, holder, now, policy);
        if matches!(slot, PasswordSlot::Ordinary | PasswordSlot::Last) {
            let next = bumped(next);
            d.states.insert(user.clone(), next.clone());
            return Ok((slot, next));
        }
        Ok((slot, state))
    }

    async fn password_matched(
        &self,
        user: &UserId,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut d = self.lock();
        let state = d.states.get(user).cloned().unwrap_or_default();
        if let Some(next) = password::after_password_match(&state, holder, now) {
            d.states.insert(user.clone(), bumped(next));
        }
        Ok(())
    }

    async fn password_failed_last(
        &self,
        user: &UserId,
        holder: &str,
        now: DateTime<Utc>,
        policy: &PasswordPolicy,
    ) -> Result<DateTime<Utc>, StoreError> {
        let mut d = self.lock();
        let state = d.states.get(user).cloned().unwrap_or_default();
        match password::after_last_slot_failure(&state, holder, now, policy) {
            Some(next) => {
                let until = next.password_locked_until.unwrap_or(policy.lock_until(now));
                d.states.insert(user.clone(), bumped(next));
                Ok(until)
            }
            // Not the holder any more: the lock it set stands as it is.
            None => Ok(state
                .password_locked_until
                .unwrap_or(policy.lock_until(now))),
        }
    }

    async fn face_nonce_used(&self, nonce: &str) -> Result<bool, StoreError> {
        Ok(self.lock().face_nonces.contains(nonce))
    }

    async fn consume_face_nonce(
        &self,
        nonce: &str,
        _expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.lock().face_nonces.insert(nonce.to_owned()))
    }

    async fn idempotency(
        &self,
        user: &UserId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        Ok(self
            .lock()
            .idempotency
            .get(&(user.clone(), key.to_owned()))
            .filter(|r| idempotency::is_live(r, now))
            .cloned())
    }

    async fn claim_idempotency(
        &self,
        claim: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyClaim, StoreError> {
        let mut d = self.lock();
        let k = (claim.user_id.clone(), claim.key.clone());
        match d.idempotency.get(&k) {
            Some(r) if !idempotency::claimable(r, now) => Ok(IdempotencyClaim::Taken(r.clone())),
            _ => {
                d.idempotency.insert(k, claim.clone());
                Ok(IdempotencyClaim::Claimed)
            }
        }
    }

    async fn release_idempotency(
        &self,
        user: &UserId,
        key: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        let mut d = self.lock();
        let k = (user.clone(), key.to_owned());
        if d.idempotency
            .get(&k)
            .is_some_and(|r| r.in_progress && r.owner.as_deref() == Some(owner))
        {
            d.idempotency.remove(&k);
        }
        Ok(())
    }

    async fn submit(&self, s: &Submission) -> Result<(), SubmitError> {
        let mut d = self.lock();
        let user = &s.query.user_id;
        let current = d.states.get(user).map_or(0, |st| st.version);
        if current != s.expected_state_version {
            return Err(SubmitConflict::StateChanged.into());
        }
        let held = d
            .idempotency
            .get(&(user.clone(), s.idempotency.key.clone()))
            .is_some_and(|r| r.in_progress && r.owner == s.idempotency.owner);
        if !held {
            return Err(SubmitConflict::IdempotencyKeyTaken.into());
        }
        let usable = d
            .verifications
            .get(&(user.clone(), s.verification_id))
            .is_some_and(|v| sms_code::may_consume(v, s.max_code_attempts));
        if !usable {
            return Err(SubmitConflict::VerificationUsed.into());
        }
        if d.face_nonces.contains(&s.face_nonce) {
            return Err(SubmitConflict::FaceNonceUsed.into());
        }
        d.states.insert(
            user.clone(),
            UserState {
                version: s.expected_state_version + 1,
                ..s.state.clone()
            },
        );
        d.idempotency.insert(
            (user.clone(), s.idempotency.key.clone()),
            s.idempotency.clone(),
        );
        if let Some(v) = d.verifications.get_mut(&(user.clone(), s.verification_id)) {
            v.used = true;
        }
        d.face_nonces.insert(s.face_nonce.clone());
        d.queries.insert(s.query.query_id, s.query.clone());
        d.unsettled.insert(s.query.query_id, s.query.banks.len());
        d.consents.insert(s.query.query_id, s.consent.clone());
        Ok(())
    }
}

#[async_trait]
impl QueryStore for MemoryStore {
    async fn query(&self, id: &QueryId) -> Result<Option<QueryRecord>, StoreError> {
        Ok(self.lock().queries.get(id).cloned())
    }

    async fn legs(&self, id: &QueryId) -> Result<Vec<LegRecord>, StoreError> {
        let mut legs: Vec<LegRecord> = self
            .lock()
            .legs
            .values()
            .filter(|l| &l.query_id == id)
            .cloned()
            .collect();
        legs.sort_by(|a, b| a.bank.cmp(&b.bank));
        Ok(legs)
    }

    async fn leg(&self, id: &QueryId, bank: &BankCode) -> Result<Option<LegRecord>, StoreError> {
        Ok(self.lock().legs.get(&(*id, bank.clone())).cloned())
    }

    async fn ensure_legs(&self, query: &QueryRecord) -> Result<usize, StoreError> {
        let mut created = 0;
        for bank in &query.banks {
            let mut d = self.lock();
            if d.fail_leg_creation_after == Some(0) {
                d.fail_leg_creation_after = None;
                return Err(StoreError::Unavailable("leg creation failed (test)".into()));
            }
            let key = (query.query_id, bank.clone());
            if d.legs.contains_key(&key) {
                continue;
            }
            d.legs
                .insert(key, LegRecord::pending(query.query_id, bank.clone()));
            created += 1;
            if let Some(n) = d.fail_leg_creation_after.as_mut() {
                *n -= 1;
            }
        }
        Ok(created)
    }

    async fn claim_attempt(
        &self,
        id: &QueryId,
        bank: &BankCode,
        seen_attempts: u32,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut d = self.lock();
        match d.legs.get_mut(&(*id, bank.clone())) {
            Some(l) if l.state == LegState::Pending && l.attempts == seen_attempts => {
                l.attempts += 1;
                l.next_attempt_at = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn schedule_retry(
        &self,
        id: &QueryId,
        bank: &BankCode,
        attempt: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if let Some(l) = self.lock().legs.get_mut(&(*id, bank.clone())) {
            if l.state == LegState::Pending && l.attempts == attempt {
                l.next_attempt_at = Some(at);
            }
        }
        Ok(())
    }

    async fn mark_accepted(
        &self,
        id: &QueryId,
        bank: &BankCode,
        attempt: u32,
    ) -> Result<(), StoreError> {
        if let Some(l) = self.lock().legs.get_mut(&(*id, bank.clone())) {
            if l.state == LegState::Pending && l.attempts == attempt {
                l.state = LegState::Accepted;
            }
        }
        Ok(())
    }

    async fn settle(
        &self,
        id: &QueryId,
        bank: &BankCode,
        st: &Settlement,
        nonce: Option<&BankNonce>,
    ) -> Result<SettleOutcome, StoreError> {
        let mut d = self.lock();
        let Some(leg) = d.legs.get(&(*id, bank.clone())).cloned() else {
            return Ok(SettleOutcome::NoSuchLeg);
        };
        if leg.state.is_settled() {
            return Ok(SettleOutcome::AlreadySettled(leg));
        }
        if let Some(n) = nonce {
            if !d.bank_nonces.insert((bank.clone(), n.nonce.clone())) {
                return Ok(SettleOutcome::NonceReused);
            }
        }
        if let Some(l) = d.legs.get_mut(&(*id, bank.clone())) {
            l.state = st.state;
            l.failure = st.failure.clone();
            l.cards = st.sealed.iter().cloned().collect();
            l.answer_digest = st.answer_digest.clone();
            l.settled_at = Some(st.at);
            l.next_attempt_at = None;
        }
        if let Some(u) = d.unsettled.get_mut(id) {
            *u = u.saturating_sub(1);
        }
        Ok(SettleOutcome::Settled)
    }
}

#[async_trait]
impl ReportStore for MemoryStore {
    async fn publish(&self, p: &Publication) -> Result<PublishOutcome, StoreError> {
        let mut d = self.lock();
        let id = p.report.query_id;
        let open = d
            .queries
            .get(&id)
            .is_some_and(|q| matches!(q.phase, QueryPhase::Collecting | QueryPhase::Aggregating));
        if !open || d.reports.contains_key(&id) {
            return Ok(PublishOutcome::AlreadyClosed);
        }
        let user = &p.report.user_id;
        if d.states.get(user).map_or(0, |s| s.version) != p.expected_state_version {
            return Ok(PublishOutcome::StateChanged);
        }
        d.states.insert(
            user.clone(),
            UserState {
                version: p.expected_state_version + 1,
                ..p.state.clone()
            },
        );
        d.reports.insert(id, p.report.clone());
        if let Some(q) = d.queries.get_mut(&id) {
            q.phase = QueryPhase::Reported;
            q.report_generated_at = Some(p.report.generated_at);
            q.report_expires_at = Some(p.report.expires_at);
        }
        Ok(PublishOutcome::Published)
    }

    async fn clear_answers(&self, id: &QueryId, banks: &[BankCode]) -> Result<(), StoreError> {
        let mut d = self.lock();
        for bank in banks {
            if let Some(l) = d.legs.get_mut(&(*id, bank.clone())) {
                l.cards.clear();
                l.answer_digest = None;
            }
        }
        Ok(())
    }

    async fn report(&self, id: &QueryId) -> Result<Option<StoredReport>, StoreError> {
        Ok(self.lock().reports.get(id).cloned())
    }

    async fn claim_notice(
        &self,
        id: &QueryId,
        now: DateTime<Utc>,
        lease: chrono::TimeDelta,
    ) -> Result<bool, StoreError> {
        let mut d = self.lock();
        let ready = d
            .queries
            .get(id)
            .is_some_and(|q| q.phase == QueryPhase::Reported && q.notified_at.is_none());
        let free = d.notice_claims.get(id).is_none_or(|t| *t < now - lease);
        if ready && free {
            d.notice_claims.insert(*id, now);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn notice_sent(&self, id: &QueryId, at: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some(q) = self.lock().queries.get_mut(id) {
            q.notified_at = Some(at);
        }
        Ok(())
    }

    async fn release_notice(
        &self,
        id: &QueryId,
        claimed_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut d = self.lock();
        let unsent = d.queries.get(id).is_some_and(|q| q.notified_at.is_none());
        if unsent && d.notice_claims.get(id) == Some(&claimed_at) {
            d.notice_claims.remove(id);
        }
        Ok(())
    }

    async fn record_view(&self, id: &QueryId, view: &ReportView) -> Result<(), StoreError> {
        if let Some(q) = self.lock().queries.get_mut(id) {
            q.views = crate::rules::view_log::with_view(&q.views, view.clone());
            q.views_total += 1;
            q.last_viewed_at = Some(view.at);
        }
        Ok(())
    }

    async fn user_queries(&self, user: &UserId) -> Result<Vec<QueryRecord>, StoreError> {
        let mut out: Vec<QueryRecord> = self
            .lock()
            .queries
            .values()
            .filter(|q| &q.user_id == user)
            .cloned()
            .collect();
        out.sort_by_key(|q| std::cmp::Reverse(q.query_id));
        Ok(out)
    }

    async fn expire(&self, id: &QueryId) -> Result<(), StoreError> {
        let mut d = self.lock();
        if d.queries
            .get(id)
            .is_some_and(|q| q.phase == QueryPhase::Deleted)
        {
            return Ok(());
        }
        d.reports.remove(id);
        if let Some(q) = d.queries.get_mut(id) {
            q.phase = QueryPhase::Expired;
        }
        Ok(())
    }

    async fn delete_report(&self, id: &QueryId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut d = self.lock();
        let Some(q) = d
            .queries
            .get_mut(id)
            .filter(|q| q.phase == QueryPhase::Reported)
        else {
            return Ok(false);
        };
        q.phase = QueryPhase::Deleted;
        q.report_deleted_at = Some(at);
        d.reports.remove(id);
        d.legs.retain(|(q, _), _| q != id);
        Ok(true)
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<DueWork>, StoreError> {
        let d = self.lock();
        let mut out = Vec::new();
        let mut deadlines: Vec<_> = d
            .queries
            .values()
            .filter(|q| {
                q.phase == QueryPhase::Collecting && !deadline::collecting(q.collect_until, now)
            })
            .map(|q| DueWork::Deadline(q.query_id))
            .take(limit)
            .collect();
        out.append(&mut deadlines);
        let mut retries: Vec<_> = d
            .legs
            .values()
            .filter(|l| l.state == LegState::Pending && l.next_attempt_at.is_some_and(|t| t <= now))
            .map(|l| DueWork::Retry(l.query_id, l.bank.clone()))
            .take(limit)
            .collect();
        out.append(&mut retries);
        let mut expiries: Vec<_> = d
            .reports
            .values()
            .filter(|r| retention::report_expired(r.expires_at, now))
            .map(|r| DueWork::Expiry(r.query_id))
            .take(limit)
            .collect();
        out.append(&mut expiries);
        let mut notices: Vec<_> = d
            .queries
            .values()
            .filter(|q| q.phase == QueryPhase::Reported && q.notified_at.is_none())
            .map(|q| DueWork::Notify(q.query_id))
            .take(limit)
            .collect();
        out.append(&mut notices);
        let mut disputes: Vec<_> = d
            .disputes
            .values()
            .filter(|r| {
                r.status == DisputeStatus::Sent && r.next_attempt_at.is_some_and(|t| t <= now)
            })
            .map(|r| DueWork::Dispute(r.query_id, r.card_id.clone()))
            .take(limit)
            .collect();
        out.append(&mut disputes);
        Ok(out)
    }
}

#[async_trait]
impl DisputeStore for MemoryStore {
    async fn create_dispute(&self, record: &DisputeRecord) -> Result<DisputeCreated, StoreError> {
        let mut d = self.lock();
        let key = (record.query_id, record.card_id.clone());
        if let Some(existing) = d.disputes.get(&key) {
            return Ok(DisputeCreated::Exists(Box::new(existing.clone())));
        }
        d.disputes.insert(key, record.clone());
        Ok(DisputeCreated::Created)
    }

    async fn dispute(
        &self,
        query: &QueryId,
        card_id: &str,
    ) -> Result<Option<DisputeRecord>, StoreError> {
        Ok(self
            .lock()
            .disputes
            .get(&(*query, card_id.to_owned()))
            .cloned())
    }

    async fn disputes(&self, query: &QueryId) -> Result<Vec<DisputeRecord>, StoreError> {
        let mut out: Vec<_> = self
            .lock()
            .disputes
            .values()
            .filter(|r| &r.query_id == query)
            .cloned()
            .collect();
        out.sort_by(|a, b| a.card_id.cmp(&b.card_id));
        Ok(out)
    }

    async fn claim_dispute_send(
        &self,
        query: &QueryId,
        card_id: &str,
        seen_attempts: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut d = self.lock();
        let Some(r) = d
            .disputes
            .get_mut(&(*query, card_id.to_owned()))
            .filter(|r| r.status == DisputeStatus::Sent && r.attempts == seen_attempts)
        else {
            return Ok(false);
        };
        r.attempts += 1;
        r.next_attempt_at = Some(lease_until);
        Ok(true)
    }

    async fn end_dispute_send(
        &self,
        query: &QueryId,
        card_id: &str,
        attempt: u32,
        end: &DisputeEnd,
    ) -> Result<bool, StoreError> {
        let mut d = self.lock();
        let Some(r) = d
            .disputes
            .get_mut(&(*query, card_id.to_owned()))
            .filter(|r| r.status == DisputeStatus::Sent && r.attempts == attempt)
        else {
            return Ok(false);
        };
        *r = r.ended(end);
        Ok(true)
    }
}

/// Keeps every metric emitted.
#[derive(Default)]
pub struct RecordingMetrics {
    emitted: Mutex<Vec<(Metric, DateTime<Utc>)>>,
}

impl RecordingMetrics {
    pub fn emitted(&self) -> Vec<(Metric, DateTime<Utc>)> {
        self.emitted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Metrics for RecordingMetrics {
    fn emit(&self, metric: Metric, at: DateTime<Utc>) {
        self.emitted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((metric, at));
    }
}

/// The most characters SNS takes in one SMS publish; it refuses longer texts.
pub const SMS_MAX_CHARS: usize = 1600;

/// Keeps every SMS "sent"; refuses what SNS refuses (a text over [`SMS_MAX_CHARS`]), so
/// code tested on it cannot count on a send SNS would fail. While throttled (see
/// [`MemorySms::throttle`]) it answers as the SNS adapter does once its retries are
/// spent: [`NotifyError::Throttled`], nothing sent.
#[derive(Default)]
pub struct MemorySms {
    sent: Mutex<Vec<(PhoneNumber, String)>>,
    throttled: AtomicBool,
    refused: AtomicUsize,
}

impl MemorySms {
    pub fn sent(&self) -> Vec<(PhoneNumber, String)> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Turns the channel's throttling on or off.
    pub fn throttle(&self, on: bool) {
        self.throttled.store(on, Ordering::SeqCst);
    }

    /// How many sends throttling refused.
    pub fn throttled_sends(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SmsSender for MemorySms {
    async fn send_sms(&self, to: &PhoneNumber, text: &str) -> Result<(), NotifyError> {
        if self.throttled.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(NotifyError::Throttled);
        }
        if text.chars().count() > SMS_MAX_CHARS {
            // Worded like the SNS adapter's refusal: by its kind, naming no number.
            return Err(NotifyError::Failed("service error InvalidParameter".into()));
        }
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((to.clone(), text.to_owned()));
        Ok(())
    }
}

/// The SMS channel's rate as the functions run it (`gate::SmsLane`), on an in-memory
/// gate of its own.
pub fn sms_lane(rate_per_second: u32) -> gate::SmsLane {
    gate::SmsLane {
        gate: std::sync::Arc::new(MemoryGate::default()),
        rate_per_second,
    }
}

/// One lane's permits, slots and circuit.
#[derive(Default)]
struct LaneState {
    /// Each rate permit's holder (a bank send's, until it ends) and end.
    rate: Vec<Option<(Option<String>, DateTime<Utc>)>>,
    /// Each in-flight slot's holder and lease end.
    flight: Vec<Option<(String, DateTime<Utc>)>>,
    circuit: admission::Circuit,
}

/// Index of the first free entry among the first `n`, growing the list to `n`; else the
/// earliest end among them.
fn free_slot<T>(
    list: &mut Vec<Option<T>>,
    n: u32,
    end: impl Fn(&T) -> DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, DateTime<Utc>> {
    let n = n as usize;
    if list.len() < n {
        list.resize_with(n, || None);
    }
    let mut earliest: Option<DateTime<Utc>> = None;
    for (i, e) in list[..n].iter().enumerate() {
        match e.as_ref().map(&end) {
            Some(t) if !admission::is_free(Some(t), now) => {
                earliest = Some(earliest.map_or(t, |x| x.min(t)));
            }
            _ => return Ok(i),
        }
    }
    Err(earliest.unwrap_or(now))
}

/// The gate in memory: the same admissions as the DynamoDB one, each decided under one
/// lock (DynamoDB decides each by a conditional write).
#[derive(Default)]
pub struct MemoryGate {
    lanes: Mutex<HashMap<Lane, LaneState>>,
}

impl MemoryGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Lane, LaneState>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lane's circuit as stored (tests).
    pub fn circuit(&self, lane: &Lane) -> admission::Circuit {
        self.lock()
            .get(lane)
            .map(|s| s.circuit.clone())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Gate for MemoryGate {
    async fn admit(
        &self,
        lane: &Lane,
        policy: &LanePolicy,
        now: DateTime<Utc>,
    ) -> Result<Admission, StoreError> {
        let mut lanes = self.lock();
        let st = lanes.entry(lane.clone()).or_default();
        let probe = match admission::circuit_gate(&st.circuit, now) {
            admission::CircuitGate::Pass => false,
            admission::CircuitGate::Probe => true,
            admission::CircuitGate::Wait(until, hold) => {
                return Ok(Admission::Wait { until, hold })
            }
        };
        let flight = match free_slot(&mut st.flight, policy.limits.max_in_flight, |e| e.1, now) {
            Ok(i) => i,
            Err(until) => {
                return Ok(Admission::Wait {
                    until,
                    hold: Hold::InFlight,
                })
            }
        };
        let rate = match free_slot(&mut st.rate, policy.limits.rate_per_second, |e| e.1, now) {
            Ok(i) => i,
            Err(until) => {
                return Ok(Admission::Wait {
                    until,
                    hold: Hold::Rate,
                })
            }
        };
        let holder = gate::new_holder();
        let lease = admission::flight_lease_until(now, policy.call_timeout);
        st.rate[rate] = Some((
            Some(holder.clone()),
            admission::rate_lease_until(now, policy.call_timeout),
        ));
        st.flight[flight] = Some((holder.clone(), lease));
        if probe {
            st.circuit.probe = Some(admission::Probe {
                holder: holder.clone(),
                until: lease,
            });
        }
        Ok(Admission::Go(Permit {
            lane: lane.clone(),
            holder,
            flight_slot: Some(flight as u32),
            rate_slot: Some(rate as u32),
            probe,
            failures_seen: st.circuit.failures,
        }))
    }

    async fn admit_rate(
        &self,
        lane: &Lane,
        rate_per_second: u32,
        now: DateTime<Utc>,
    ) -> Result<Admission, StoreError> {
        let mut lanes = self.lock();
        let st = lanes.entry(lane.clone()).or_default();
        match free_slot(&mut st.rate, rate_per_second, |e| e.1, now) {
            Ok(i) => {
                st.rate[i] = Some((None, admission::rate_permit_until(now)));
                Ok(Admission::Go(Permit {
                    lane: lane.clone(),
                    holder: gate::new_holder(),
                    flight_slot: None,
                    rate_slot: None,
                    probe: false,
                    failures_seen: 0,
                }))
            }
            Err(until) => Ok(Admission::Wait {
                until,
                hold: Hold::Rate,
            }),
        }
    }

    async fn finish(
        &self,
        permit: &Permit,
        health: Health,
        policy: &LanePolicy,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut lanes = self.lock();
        let Some(st) = lanes.get_mut(&permit.lane) else {
            return Ok(());
        };
        // Still this send's (not taken by another after its lease ran out).
        if let Some((holder, until)) = permit
            .rate_slot
            .and_then(|i| st.rate.get_mut(i as usize))
            .and_then(|e| e.as_mut())
        {
            if holder.as_deref() == Some(permit.holder.as_str()) {
                *holder = None;
                *until = admission::rate_permit_until(now);
            }
        }
        let Some(slot) = permit.flight_slot.map(|s| s as usize) else {
            return Ok(());
        };
        // Freeing the slot is what makes a finish count once.
        match st.flight.get_mut(slot) {
            Some(held) if held.as_ref().is_some_and(|h| h.0 == permit.holder) => *held = None,
            _ => return Ok(()),
        }
        let probe = permit.probe.then_some(permit.holder.as_str());
        st.circuit = admission::after(&st.circuit, health, probe, &policy.breaker, now);
        Ok(())
    }

    async fn open_circuits(&self, lanes: &[Lane]) -> Result<Vec<Lane>, StoreError> {
        let state = self.lock();
        Ok(lanes
            .iter()
            .filter(|l| state.get(l).is_some_and(|s| admission::is_open(&s.circuit)))
            .cloned()
            .collect())
    }
}

/// One queued message.
#[derive(Debug, Clone)]
struct Queued {
    attempt: QueueMessage,
    receipt: String,
    visible_at: DateTime<Utc>,
    received: u32,
}

/// The inquiry queue in memory, with FIFO groups as SQS keeps them: a group's messages
/// are delivered in order, and none of a group while an earlier one of it is out
/// (received and neither deleted nor visible again). Time is the given clock's.
pub struct MemoryQueue {
    clock: std::sync::Arc<dyn Clock>,
    messages: Mutex<Vec<Queued>>,
    dedup: Mutex<HashSet<String>>,
    /// Numbers the receipt handles.
    next: std::sync::atomic::AtomicU64,
}

/// How long a received message stays hidden unless deleted or paused (SQS's visibility
/// timeout, as the template sets it).
pub const MEMORY_VISIBILITY: chrono::TimeDelta = chrono::TimeDelta::minutes(6);

impl MemoryQueue {
    pub fn new(clock: std::sync::Arc<dyn Clock>) -> Self {
        Self {
            clock,
            messages: Mutex::new(Vec::new()),
            dedup: Mutex::new(HashSet::new()),
            next: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.messages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every message still queued (received or not), in order.
    pub fn queued(&self) -> Vec<LegAttempt> {
        self.lock()
            .iter()
            .filter_map(|q| match &q.attempt {
                QueueMessage::Leg(a) => Some(a.clone()),
                QueueMessage::Dispute(_) => None,
            })
            .collect()
    }

    /// Every dispute send still queued, in order.
    pub fn queued_disputes(&self) -> Vec<DisputeSend> {
        self.lock()
            .iter()
            .filter_map(|q| match &q.attempt {
                QueueMessage::Dispute(d) => Some(d.clone()),
                QueueMessage::Leg(_) => None,
            })
            .collect()
    }

    fn push(&self, messages: impl IntoIterator<Item = QueueMessage>) {
        let now = self.clock.now();
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        let mut queued = self.lock();
        for m in messages {
            if dedup.insert(m.dedup_id()) {
                queued.push(Queued {
                    attempt: m,
                    receipt: String::new(),
                    visible_at: now,
                    received: 0,
                });
            }
        }
    }

    /// Receives up to `max` messages, as the event source mapping does: each group's
    /// first visible messages, unless a message of that group is out.
    pub fn receive(&self, max: usize) -> Vec<Received> {
        let now = self.clock.now();
        let mut messages = self.lock();
        let mut blocked: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for q in messages.iter_mut() {
            let group = q.attempt.group().to_owned();
            if blocked.contains(&group) {
                continue;
            }
            if q.visible_at > now {
                blocked.insert(group);
                continue;
            }
            if out.len() == max {
                break;
            }
            let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            q.receipt = format!("r-{n}");
            q.visible_at = now + MEMORY_VISIBILITY;
            q.received += 1;
            out.push(Received {
                message_id: q.attempt.dedup_id(),
                receipt: q.receipt.clone(),
                body: q.attempt.body(),
            });
        }
        out
    }

    /// Deletes the received messages not among `failed` (the event source mapping's
    /// handling of a batch response).
    pub fn complete(&self, received: &[Received], failed: &[String]) {
        let done: HashSet<&str> = received
            .iter()
            .filter(|r| !failed.contains(&r.message_id))
            .map(|r| r.receipt.as_str())
            .collect();
        self.lock().retain(|q| !done.contains(q.receipt.as_str()));
    }

    /// Makes every received message visible again, as after a crashed invocation's
    /// visibility timeout.
    pub fn expire_visibility(&self) {
        let now = self.clock.now();
        for q in self.lock().iter_mut() {
            q.visible_at = q.visible_at.min(now);
        }
    }
}

#[async_trait]
impl InquiryQueue for MemoryQueue {
    async fn enqueue(&self, attempts: &[LegAttempt]) -> Result<(), QueueError> {
        self.push(attempts.iter().cloned().map(QueueMessage::Leg));
        Ok(())
    }

    async fn enqueue_disputes(&self, sends: &[DisputeSend]) -> Result<(), QueueError> {
        self.push(sends.iter().cloned().map(QueueMessage::Dispute));
        Ok(())
    }

    async fn pause(&self, receipt: &str, secs: i32) -> Result<(), QueueError> {
        let now = self.clock.now();
        if let Some(q) = self.lock().iter_mut().find(|q| q.receipt == receipt) {
            q.visible_at = now + chrono::TimeDelta::seconds(secs.into());
        }
        Ok(())
    }
}
