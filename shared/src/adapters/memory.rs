//! In-memory ports for unit tests, with the same conditional-write semantics as the
//! DynamoDB adapter.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::model::ids::{QueryId, UserId, VerificationId};
use crate::model::phone::PhoneNumber;
use crate::model::profile::UserProfile;
use crate::ports::{
    NotifyError, ProfileStore, SmsSender, StoreError, SubmissionStore, SubmitError,
};
use crate::records::{
    ConsentRecord, IdempotencyRecord, QueryRecord, Submission, SubmitConflict, UserState,
    VerificationRecord,
};

#[derive(Default)]
struct Data {
    profiles: HashMap<UserId, UserProfile>,
    states: HashMap<UserId, UserState>,
    verifications: HashMap<(UserId, VerificationId), VerificationRecord>,
    idempotency: HashMap<(UserId, String), IdempotencyRecord>,
    face_nonces: HashSet<String>,
    queries: HashMap<QueryId, QueryRecord>,
    consents: HashMap<QueryId, ConsentRecord>,
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

    pub fn queries(&self) -> Vec<QueryRecord> {
        self.lock().queries.values().cloned().collect()
    }

    pub fn consents(&self) -> Vec<ConsentRecord> {
        self.lock().consents.values().cloned().collect()
    }

    pub fn state_of(&self, user: &UserId) -> UserState {
        self.lock().states.get(user).cloned().unwrap_or_default()
    }

    /// Replaces a user's state outright (test set-up).
    pub fn set_state(&self, user: &UserId, state: UserState) {
        self.lock().states.insert(user.clone(), state);
    }
}

#[async_trait]
impl ProfileStore for MemoryStore {
    async fn profile(&self, user: &UserId) -> Result<Option<UserProfile>, StoreError> {
        Ok(self.lock().profiles.get(user).cloned())
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

    async fn record_code_failure(
        &self,
        user: &UserId,
        id: &VerificationId,
    ) -> Result<(), StoreError> {
        if let Some(v) = self.lock().verifications.get_mut(&(user.clone(), *id)) {
            if !v.used {
                v.attempts += 1;
            }
        }
        Ok(())
    }

    async fn idempotency(
        &self,
        user: &UserId,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        Ok(self
            .lock()
            .idempotency
            .get(&(user.clone(), key.to_owned()))
            .filter(|r| r.expires_at > now)
            .cloned())
    }

    async fn submit(&self, s: &Submission) -> Result<(), SubmitError> {
        let mut d = self.lock();
        let user = &s.query.user_id;
        let current = d.states.get(user).map_or(0, |st| st.version);
        if current != s.expected_state_version {
            return Err(SubmitConflict::StateChanged.into());
        }
        if d.idempotency
            .contains_key(&(user.clone(), s.idempotency.key.clone()))
        {
            return Err(SubmitConflict::IdempotencyKeyTaken.into());
        }
        let usable = d
            .verifications
            .get(&(user.clone(), s.verification_id))
            .is_some_and(|v| !v.used && v.attempts < s.max_code_attempts);
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
        d.consents.insert(s.query.query_id, s.consent.clone());
        Ok(())
    }
}

/// Keeps every SMS "sent".
#[derive(Default)]
pub struct MemorySms {
    sent: Mutex<Vec<(PhoneNumber, String)>>,
}

impl MemorySms {
    pub fn sent(&self) -> Vec<(PhoneNumber, String)> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl SmsSender for MemorySms {
    async fn send_sms(&self, to: &PhoneNumber, text: &str) -> Result<(), NotifyError> {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((to.clone(), text.to_owned()));
        Ok(())
    }
}
