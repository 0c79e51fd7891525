//! The submission use cases, on ports only.

use std::collections::BTreeSet;
use std::sync::Arc;

use tracing::{info, warn};

use super::api::{
    BanksResponse, EligibilityResponse, SubmitAccepted, SubmitRequest, VerificationCreated,
    VerificationRequest,
};
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::error::ServiceError;
use crate::model::bank::BankCode;
use crate::model::ids::{IdempotencyKey, QueryId, UserId, VerificationId};
use crate::model::profile::UserProfile;
use crate::model::purpose::Purpose;
use crate::ports::{
    Admit, NotifyError, ProfileStore, SmsAdmission, SmsSender, StoreError, SubmissionStore,
    SubmitError,
};
use crate::records::{
    ConsentRecord, IdempotencyClaim, IdempotencyRecord, PasswordSlot, QueryPhase, QueryRecord,
    Submission, SubmitConflict, UserState, VerificationRecord,
};
use crate::rules::password::{self as password_rule, PasswordPolicy};
use crate::rules::{cooldown, deadline, idempotency, sms_code as code_rule};
use crate::security::face::{FacePass, FaceVerifier};
use crate::security::password;
use crate::security::sms_code::{self, CodeHasher};

/// How often a write that lost a race on the user's state is re-evaluated.
const STATE_RETRIES: usize = 8;

pub struct SubmissionDeps {
    pub config: Arc<ServiceConfig>,
    pub profiles: Arc<dyn ProfileStore>,
    pub store: Arc<dyn SubmissionStore>,
    pub sms: Arc<dyn SmsSender>,
    /// The SMS channel's shared rate, asked before each code SMS.
    pub sms_admission: Arc<dyn SmsAdmission>,
    pub clock: Arc<dyn Clock>,
    pub codes: CodeHasher,
    pub face: Arc<FaceVerifier>,
}

pub struct SubmissionService {
    d: SubmissionDeps,
    /// `GET /v1/banks`, rendered once: the configuration does not change while the
    /// function runs, and at 500 banks rendering it per request is most of the work.
    banks_json: String,
}

/// Why a code request that took the user's SMS slot ends without a code.
enum CodeNotSent {
    /// Certainly not sent: the slot is given back.
    Unsent(ServiceError),
    /// Possibly sent (SNS's answer was an error): the slot stays taken.
    MaybeSent(ServiceError),
}

/// The SMS text of a verification code: zh-CN, no link, an anti-fraud reminder.
pub fn code_sms_text(code: &str, purpose: Purpose, validity_minutes: i64) -> String {
    let action = match purpose {
        Purpose::SubmitQuery => "提交一键查卡申请",
        Purpose::ViewReport => "查看一键查卡报告",
        Purpose::DeleteReport => "删除一键查卡报告",
        Purpose::DisputeCard => "申报一键查卡报告中的非本人银行卡",
    };
    format!(
        "【云闪付】您正在{action}，验证码{code}，{validity_minutes}分钟内有效。\
         验证码仅限本人使用，切勿告知他人；任何索要验证码的都是骗子。"
    )
}

impl SubmissionService {
    pub fn new(deps: SubmissionDeps) -> Self {
        let banks = BanksResponse::from_registry(&deps.config.banks);
        // Strings and lists only: serializing it cannot fail.
        let banks_json = serde_json::to_string(&banks).unwrap_or_else(|_| "{}".into());
        Self {
            d: deps,
            banks_json,
        }
    }

    /// The body of `GET /v1/banks` (JSON), rendered when the service was built.
    pub fn banks_json(&self) -> &str {
        &self.banks_json
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.d.config
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.d.clock.now()
    }

    async fn profile(&self, user: &UserId) -> Result<Option<UserProfile>, ServiceError> {
        Ok(self.d.profiles.profile(user).await?)
    }

    /// The profile of a real-name user in a pilot region.
    async fn eligible_profile(&self, user: &UserId) -> Result<UserProfile, ServiceError> {
        let profile = self
            .profile(user)
            .await?
            .filter(|p| p.real_name_verified)
            .ok_or(ServiceError::NotRealNameVerified)?;
        if !self.d.config.in_pilot(&profile.region) {
            return Err(ServiceError::RegionNotInPilot);
        }
        Ok(profile)
    }

    pub async fn eligibility(&self, user: &UserId) -> Result<EligibilityResponse, ServiceError> {
        let now = self.now();
        let profile = self.profile(user).await?;
        let state = self.d.store.user_state(user).await?;
        let real_name_verified = profile.as_ref().is_some_and(|p| p.real_name_verified);
        let in_pilot_region = profile
            .as_ref()
            .is_some_and(|p| self.d.config.in_pilot(&p.region));
        let next_allowed_at = cooldown::running_until(&state, now);
        Ok(EligibilityResponse {
            real_name_verified,
            in_pilot_region,
            active_query_id: state.active_query_id.map(|q| q.to_string()),
            next_allowed_at,
            eligible: real_name_verified
                && in_pilot_region
                && cooldown::check_can_submit(&state, now).is_ok(),
            agreement_version: self.d.config.agreement_version.clone(),
        })
    }

    /// Sends a 6-digit code to the registered phone (at most one a minute, a daily cap).
    pub async fn create_verification(
        &self,
        user: &UserId,
        req: VerificationRequest,
    ) -> Result<VerificationCreated, ServiceError> {
        let profile = match req.purpose {
            Purpose::SubmitQuery => self.eligible_profile(user).await?,
            // Viewing, deleting or disputing in a report only needs the person to be who they are.
            Purpose::ViewReport | Purpose::DeleteReport | Purpose::DisputeCard => self
                .profile(user)
                .await?
                .filter(|p| p.real_name_verified)
                .ok_or(ServiceError::NotRealNameVerified)?,
        };
        let (now, before) = self.take_sms_slot(user).await?;
        match self.send_code(user, &profile, req.purpose, now).await {
            Ok(created) => Ok(created),
            Err(CodeNotSent::Unsent(refusal)) => {
                self.give_back_sms_slot(user, &before, now).await;
                Err(refusal)
            }
            Err(CodeNotSent::MaybeSent(e)) => Err(e),
        }
    }

    /// Reserves the user's SMS slot (one a minute, the daily cap) with a conditional
    /// write, before the channel is asked: a user over their limits never uses up the
    /// channel's national rate. Returns the reservation's instant and the state it
    /// was taken from.
    async fn take_sms_slot(
        &self,
        user: &UserId,
    ) -> Result<(chrono::DateTime<chrono::Utc>, UserState), ServiceError> {
        let rules = &self.d.config.rules;
        let mut attempt = 0;
        loop {
            let now = self.now();
            let state = self.d.store.user_state(user).await?;
            let next = code_rule::take_sms_slot(&state, now, rules)?;
            match self
                .d
                .store
                .put_user_state(user, &next, state.version)
                .await
            {
                Ok(()) => return Ok((now, state)),
                Err(StoreError::Conflict) if attempt < STATE_RETRIES => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The SMS of a slot taken at `taken_at` was not sent: the slot goes back (a
    /// conditional write on the state as it is now). Should that fail, the user waits
    /// out the minute as if it had been sent; logged, not refused twice.
    async fn give_back_sms_slot(
        &self,
        user: &UserId,
        before: &UserState,
        taken_at: chrono::DateTime<chrono::Utc>,
    ) {
        for _ in 0..=STATE_RETRIES {
            let current = match self.d.store.user_state(user).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(user_id = %user, error = %e, "unsent SMS slot not given back");
                    return;
                }
            };
            let back = code_rule::give_back_sms_slot(&current, before, taken_at);
            match self
                .d
                .store
                .put_user_state(user, &back, current.version)
                .await
            {
                Ok(()) => return,
                Err(StoreError::Conflict) => continue,
                Err(e) => {
                    warn!(user_id = %user, error = %e, "unsent SMS slot not given back");
                    return;
                }
            }
        }
        warn!(user_id = %user, "unsent SMS slot not given back: state contention");
    }

    /// Admission through the channel's rate, then the code's record, then the SMS.
    async fn send_code(
        &self,
        user: &UserId,
        profile: &UserProfile,
        purpose: Purpose,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<VerificationCreated, CodeNotSent> {
        let rules = &self.d.config.rules;
        match self.d.sms_admission.admit(now).await {
            Ok(Admit::Go) => {}
            Ok(Admit::RetryAt(at)) => {
                info!(user_id = %user, "code SMS refused: channel rate used up");
                return Err(CodeNotSent::Unsent(code_rule::channel_unavailable(now, at)));
            }
            Err(e) => return Err(CodeNotSent::Unsent(e.into())),
        }
        let id = VerificationId::generate();
        let code = sms_code::generate_code();
        let record = VerificationRecord {
            verification_id: id,
            user_id: user.clone(),
            purpose,
            code_hash: self.d.codes.hash(user, &id, purpose, &code),
            expires_at: code_rule::code_expires_at(now, rules),
            attempts: 0,
            used: false,
        };
        self.d
            .store
            .put_verification(&record)
            .await
            .map_err(|e| CodeNotSent::Unsent(e.into()))?;
        let text = code_sms_text(&code, purpose, code_rule::validity_minutes(rules));
        match self.d.sms.send_sms(&profile.phone, &text).await {
            Ok(()) => {}
            Err(NotifyError::Throttled) => {
                info!(user_id = %user, "code SMS refused: channel throttled");
                let retry_at = now + code_rule::THROTTLED_RETRY_AFTER;
                return Err(CodeNotSent::Unsent(code_rule::channel_unavailable(
                    now, retry_at,
                )));
            }
            // SNS may have sent it (a lost answer looks the same): it stays counted.
            Err(e @ NotifyError::Failed(_)) => {
                return Err(CodeNotSent::MaybeSent(ServiceError::Unavailable(
                    e.to_string(),
                )))
            }
        }
        info!(user_id = %user, verification_id = %id, purpose = purpose.as_str(), "verification code sent");
        Ok(VerificationCreated {
            verification_id: id.to_string(),
            masked_phone: profile.phone.masked(),
            expires_at: record.expires_at,
        })
    }

    /// Checks an SMS code without consuming it; a wrong code counts against it.
    pub async fn check_code(
        &self,
        user: &UserId,
        purpose: Purpose,
        verification_id: &str,
        code: &str,
    ) -> Result<VerificationId, ServiceError> {
        crate::verification::check_code(
            self.d.store.as_ref(),
            &self.d.codes,
            self.d.config.rules.sms_code_max_attempts,
            self.now(),
            user,
            purpose,
            verification_id,
            code,
        )
        .await
    }

    fn parse_banks(&self, codes: &[String]) -> Result<Vec<BankCode>, ServiceError> {
        if codes.is_empty() {
            return Err(ServiceError::InvalidBanks(
                "choose at least one bank".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut banks = Vec::with_capacity(codes.len());
        for code in codes {
            let bank = self.d.config.banks.parse(code).ok_or_else(|| {
                ServiceError::InvalidBanks(format!(
                    "{} is not a participating bank",
                    code.chars().take(16).collect::<String>()
                ))
            })?;
            if !seen.insert(bank.clone()) {
                return Err(ServiceError::InvalidBanks(format!(
                    "{bank} is listed twice"
                )));
            }
            banks.push(bank);
        }
        Ok(banks)
    }

    fn replay(
        &self,
        record: &IdempotencyRecord,
        fingerprint: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(u16, serde_json::Value), ServiceError> {
        let (status, body) = idempotency::idempotent_answer(record, fingerprint, now)?;
        let body = serde_json::from_str(&body).map_err(ServiceError::internal)?;
        Ok((status, body))
    }

    /// Submits a card query. `body` is the request's JSON (for the idempotency
    /// fingerprint); `req` the same, parsed.
    ///
    /// The key is claimed before anything else is looked at, so twins under one key
    /// wait for the first (409 IDEMPOTENCY_IN_PROGRESS) and then get its answer; a
    /// refusal releases the claim, so a corrected request may use the key again.
    pub async fn submit(
        &self,
        user: &UserId,
        idempotency_key: Option<&str>,
        body: &serde_json::Value,
        req: SubmitRequest,
        source_ip: Option<String>,
    ) -> Result<(u16, serde_json::Value), ServiceError> {
        let key = idempotency_key.ok_or(ServiceError::IdempotencyKeyRequired)?;
        let key = IdempotencyKey::parse(key).map_err(|_| ServiceError::IdempotencyKeyRequired)?;
        let fingerprint = self
            .d
            .codes
            .fingerprint(&serde_json::to_vec(body).map_err(ServiceError::internal)?);
        let now = self.now();
        let rules = &self.d.config.rules;
        let claim = IdempotencyRecord {
            user_id: user.clone(),
            key: key.as_str().to_owned(),
            request_fingerprint: fingerprint.clone(),
            status: 0,
            response_body: String::new(),
            expires_at: idempotency::expires_at(now, rules),
            in_progress: true,
            owner: Some(ulid::Ulid::generate().to_string()),
            lease_until: Some(idempotency::lease_until(now, rules)),
        };
        match self.d.store.claim_idempotency(&claim, now).await? {
            IdempotencyClaim::Taken(record) => return self.replay(&record, &fingerprint, now),
            IdempotencyClaim::Claimed => {}
        }
        let outcome = self.submit_claimed(user, &claim, req, source_ip).await;
        if outcome.is_err() {
            let owner = claim.owner.as_deref().unwrap_or_default();
            if let Err(e) = self
                .d
                .store
                .release_idempotency(user, key.as_str(), owner)
                .await
            {
                // The lease lets a retry take the key over in any case.
                warn!(user_id = %user, error = %e, "idempotency claim not released");
            }
        }
        outcome
    }

    async fn submit_claimed(
        &self,
        user: &UserId,
        claim: &IdempotencyRecord,
        req: SubmitRequest,
        source_ip: Option<String>,
    ) -> Result<(u16, serde_json::Value), ServiceError> {
        let start = self.now();
        let profile = self.eligible_profile(user).await?;
        let banks = self.parse_banks(&req.banks)?;
        if !req.consent.accepted || req.consent.agreement_version != self.d.config.agreement_version
        {
            return Err(ServiceError::ConsentRequired);
        }
        let state = self.d.store.user_state(user).await?;
        cooldown::check_can_submit(&state, start)?;
        password_rule::check_password_lock(&state, start)?;

        // The face token is checked first: it is a signature, not an attempt-limited
        // secret, and a bad one should not cost the user a code attempt.
        let face = self
            .d
            .face
            .verify(&req.face_token, user, Purpose::SubmitQuery, start)?;
        if self.d.store.face_nonce_used(&face.nonce).await? {
            return Err(ServiceError::FaceVerificationFailed);
        }
        let verification_id = match self
            .check_code(
                user,
                Purpose::SubmitQuery,
                &req.verification.verification_id,
                &req.verification.sms_code,
            )
            .await
        {
            Ok(id) => id,
            Err(e) => return Err(self.overtaken_or(user, e).await),
        };
        let holder = claim.owner.as_deref().unwrap_or_default();
        let state = self
            .check_password(user, holder, &req.payment_password, &profile)
            .await?;
        let (outcome, committed) = self
            .commit(
                user,
                claim,
                holder,
                state,
                &banks,
                &req,
                source_ip,
                verification_id,
                &face,
            )
            .await;
        if !committed {
            // The password matched but nothing was written: its slot is given back here
            // (the commit would have done it), and a lock it held is lifted.
            if let Err(e) = self
                .d
                .store
                .password_matched(user, holder, self.now())
                .await
            {
                warn!(user_id = %user, error = %e, "password slot not given back");
            }
        }
        outcome
    }

    /// Writes the submission (the query with its banks, the active-query lock, the completed
    /// idempotency record, the used code and nonce, and the password count cleared) in
    /// one transaction; `true` with it if it was written.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        user: &UserId,
        claim: &IdempotencyRecord,
        holder: &str,
        mut state: UserState,
        banks: &[BankCode],
        req: &SubmitRequest,
        source_ip: Option<String>,
        verification_id: VerificationId,
        face: &FacePass,
    ) -> (Result<(u16, serde_json::Value), ServiceError>, bool) {
        let config = &self.d.config;
        let mut attempt = 0;
        loop {
            let now = self.now();
            if let Err(e) = cooldown::check_can_submit(&state, now) {
                return (Err(e), false);
            }
            let query_id = QueryId::generate();
            let deadlines = deadline::for_submission(now, &config.rules);
            let accepted = SubmitAccepted {
                query_id: query_id.to_string(),
                status: "PENDING".into(),
                submitted_at: now,
                report_due_by: deadlines.report_due_by,
                banks: banks.iter().map(ToString::to_string).collect(),
            };
            let response = match serde_json::to_value(&accepted) {
                Ok(r) => r,
                Err(e) => return (Err(ServiceError::internal(e)), false),
            };
            let submission = Submission {
                query: QueryRecord {
                    query_id,
                    user_id: user.clone(),
                    phase: QueryPhase::Collecting,
                    submitted_at: now,
                    report_due_by: deadlines.report_due_by,
                    collect_until: deadlines.collect_until,
                    banks: banks.to_vec(),
                    report_generated_at: None,
                    report_expires_at: None,
                    last_viewed_at: None,
                    report_deleted_at: None,
                    views: Vec::new(),
                    views_total: 0,
                    notified_at: None,
                },
                consent: ConsentRecord {
                    query_id,
                    user_id: user.clone(),
                    agreement_version: req.consent.agreement_version.clone(),
                    accepted_at: now,
                    source_ip: source_ip.clone(),
                },
                idempotency: IdempotencyRecord {
                    status: 202,
                    response_body: response.to_string(),
                    in_progress: false,
                    lease_until: None,
                    ..claim.clone()
                },
                state: UserState {
                    version: state.version + 1,
                    active_query_id: Some(query_id),
                    ..state.clone()
                },
                expected_state_version: state.version,
                verification_id,
                max_code_attempts: config.rules.sms_code_max_attempts,
                face_nonce: face.nonce.clone(),
                face_nonce_expires_at: face.issued_at + config.rules.face_token_max_age,
            };
            let refusal = match self.d.store.submit(&submission).await {
                Ok(()) => {
                    info!(user_id = %user, query_id = %query_id, banks = banks.len(), "card query submitted");
                    return (Ok((202, response)), true);
                }
                Err(SubmitError::Conflict(SubmitConflict::StateChanged))
                    if attempt < STATE_RETRIES =>
                {
                    attempt += 1;
                    match self.d.store.user_state(user).await {
                        Ok(fresh) => {
                            state = password_rule::after_password_match(&fresh, holder, now)
                                .unwrap_or(fresh);
                            continue;
                        }
                        Err(e) => e.into(),
                    }
                }
                Err(SubmitError::Conflict(SubmitConflict::StateChanged)) => {
                    ServiceError::Unavailable("user state contention".into())
                }
                Err(SubmitError::Conflict(SubmitConflict::IdempotencyKeyTaken)) => {
                    // The claim's lease ran out and a retry took the key over.
                    let taken = self.d.store.idempotency(user, &claim.key, now).await;
                    return match taken {
                        Ok(Some(taken)) => {
                            (self.replay(&taken, &claim.request_fingerprint, now), false)
                        }
                        Ok(None) => (
                            Err(ServiceError::internal("idempotency record vanished")),
                            false,
                        ),
                        Err(e) => (Err(e.into()), false),
                    };
                }
                Err(SubmitError::Conflict(SubmitConflict::VerificationUsed)) => {
                    self.overtaken_or(user, ServiceError::VerificationFailed)
                        .await
                }
                Err(SubmitError::Conflict(SubmitConflict::FaceNonceUsed)) => {
                    ServiceError::FaceVerificationFailed
                }
                Err(SubmitError::Store(e)) => e.into(),
            };
            return (Err(refusal), false);
        }
    }

    /// Compares the payment password in a slot reserved first (at most
    /// `password_max_failures` comparisons per lock window, whatever the concurrency).
    /// On a match: the user's state as the submission is to write it (the count cleared,
    /// this request's own lock lifted), with the version the reservation left.
    async fn check_password(
        &self,
        user: &UserId,
        holder: &str,
        password: &str,
        profile: &UserProfile,
    ) -> Result<UserState, ServiceError> {
        let policy = PasswordPolicy::from_rules(&self.d.config.rules);
        let store = &self.d.store;
        let (slot, state) = store
            .reserve_password_slot(user, holder, self.now(), &policy)
            .await?;
        match slot {
            PasswordSlot::Locked { until } => {
                return Err(ServiceError::PaymentPasswordLocked { until })
            }
            // Too many comparisons at once: the last slot's outcome decides.
            PasswordSlot::Busy => {
                return Err(ServiceError::TooManyRequests {
                    retry_after_secs: 1,
                })
            }
            PasswordSlot::Ordinary | PasswordSlot::Last => {}
        }
        if password::verify(password, &profile.payment_password_hash) {
            // Another request's lock (set while this comparison ran) is left as it is.
            let now = self.now();
            return Ok(password_rule::after_password_match(&state, holder, now).unwrap_or(state));
        }
        if slot == PasswordSlot::Last {
            let until = store
                .password_failed_last(user, holder, self.now(), &policy)
                .await?;
            warn!(user_id = %user, "payment password locked after repeated failures");
            return Err(ServiceError::PaymentPasswordLocked { until });
        }
        Err(ServiceError::PaymentPasswordInvalid)
    }

    /// A concurrent submission that won the race consumes the shared SMS code; the loser
    /// must hear "query in progress", not "verification failed".
    async fn overtaken_or(&self, user: &UserId, refusal: ServiceError) -> ServiceError {
        match self.d.store.user_state(user).await {
            Ok(state) => cooldown::check_can_submit(&state, self.now())
                .err()
                .unwrap_or(refusal),
            Err(e) => e.into(),
        }
    }
}
