//! Checking what a caller proved: an SMS code (without consuming it; every comparison,
//! right or wrong, takes one of the code's attempts first), shared by submission and
//! report viewing.

use chrono::{DateTime, Utc};

use crate::error::ServiceError;
use crate::model::ids::{UserId, VerificationId};
use crate::model::purpose::Purpose;
use crate::ports::SubmissionStore;
use crate::security::sms_code::{self, CodeHasher};

/// The verification id if `code` is right for it, its purpose and this user, it is
/// unused, not burnt and not expired at `now`. Takes one attempt whatever the outcome.
#[allow(clippy::too_many_arguments)]
pub async fn check_code(
    store: &dyn SubmissionStore,
    codes: &CodeHasher,
    max_attempts: u32,
    now: DateTime<Utc>,
    user: &UserId,
    purpose: Purpose,
    verification_id: &str,
    code: &str,
) -> Result<VerificationId, ServiceError> {
    let id =
        VerificationId::parse(verification_id).map_err(|_| ServiceError::VerificationFailed)?;
    if !sms_code::is_well_formed(code) {
        return Err(ServiceError::VerificationFailed);
    }
    // The attempt is counted before the comparison, so parallel guesses cannot
    // outnumber the attempts a code allows.
    let record = store
        .reserve_code_attempt(user, &id, purpose, now, max_attempts)
        .await?
        .ok_or(ServiceError::VerificationFailed)?;
    if !codes.matches(&record.code_hash, user, &id, purpose, code) {
        return Err(ServiceError::VerificationFailed);
    }
    Ok(id)
}
