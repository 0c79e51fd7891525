//! The report in pages: a national report can hold 100,000 cards (9.4 MB rendered,
//! decision 123), past Lambda's 6 MB response limit, so `cards` is served in pages of
//! at most [`MAX_PAGE_CARDS`], each with the whole summary and the notices. The first
//! page takes a fresh step-up; the next ones take the cursor the previous page gave,
//! which works only for the same user and report and only until the view's
//! authorization ends ([`CURSOR_LIFETIME`] after the step-up, never past the report's
//! expiry) — no second SMS code, no longer access than the code gave.

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::body::Report;
use crate::error::ServiceError;
use crate::model::ids::{QueryId, UserId};
use crate::model::timestamp::{self, rfc3339};

/// The most cards one response carries: about 95 KB of cards beside a 500-bank summary
/// of about 60 KB, far under the 6 MB limit whatever the report holds.
pub const MAX_PAGE_CARDS: u32 = 1000;

/// How long after the step-up the pages that follow stay readable: long enough to page
/// through the largest report on a slow phone, short enough that a cursor left in a
/// log or a screenshot is soon worthless.
pub const CURSOR_LIFETIME: TimeDelta = TimeDelta::minutes(15);

/// Keeps a cursor's MAC key apart from any other key derived from the report key.
pub const CURSOR_KEY_LABEL: &[u8] = b"report cursor";

/// A cursor is a few dozen characters; anything much longer is not one.
const MAX_CURSOR_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not a cursor this service issued for this user's report (altered, another
    /// query's, made up, or the report key was rotated since).
    #[error("the cursor is not valid for this report")]
    Invalid,
    /// The view's authorization it carries has ended: step up again.
    #[error("the cursor has expired; verify again to view the report")]
    Expired,
}

impl From<CursorError> for ServiceError {
    fn from(e: CursorError) -> Self {
        match e {
            CursorError::Invalid => ServiceError::InvalidCursor,
            CursorError::Expired => ServiceError::CursorExpired,
        }
    }
}

/// Where a page starts and until when the pages of this view may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: u32,
    pub valid_until: DateTime<Utc>,
}

/// What a cursor is bound to: the same user and the same report (a report is never
/// regenerated, but its generation time makes that explicit).
#[derive(Debug, Clone, Copy)]
pub struct CursorScope<'a> {
    pub user: &'a UserId,
    pub query: &'a QueryId,
    pub generated_at: DateTime<Utc>,
}

/// Issues and checks cursors with a MAC key only view-report holds.
pub struct CursorKey {
    key: [u8; 32],
}

impl CursorKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn tag(&self, scope: &CursorScope<'_>, offset: u32, valid_until: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        // A JSON array: unambiguous whatever the fields hold.
        let fields = serde_json::json!([
            "report-cursor v1",
            scope.user.as_str(),
            scope.query.to_string(),
            timestamp::format(scope.generated_at),
            offset,
            valid_until,
        ]);
        mac.update(fields.to_string().as_bytes());
        mac
    }

    /// `<offset>.<valid until, unix seconds>.<tag>`: opaque to the app.
    pub fn issue(&self, scope: &CursorScope<'_>, at: Position) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use base64::Engine;
        let until = at.valid_until.timestamp();
        let tag = self.tag(scope, at.offset, until).finalize().into_bytes();
        format!("{}.{until}.{}", at.offset, B64.encode(tag))
    }

    /// The position a cursor names, if it is this scope's and still valid at `now`.
    pub fn check(
        &self,
        scope: &CursorScope<'_>,
        cursor: &str,
        now: DateTime<Utc>,
    ) -> Result<Position, CursorError> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use base64::Engine;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(CursorError::Invalid);
        }
        let mut parts = cursor.split('.');
        let (Some(offset), Some(until), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CursorError::Invalid);
        };
        if !digits(offset) || !digits(until) {
            return Err(CursorError::Invalid);
        }
        let offset: u32 = offset.parse().map_err(|_| CursorError::Invalid)?;
        let until: i64 = until.parse().map_err(|_| CursorError::Invalid)?;
        let tag = B64.decode(tag).map_err(|_| CursorError::Invalid)?;
        self.tag(scope, offset, until)
            .verify_slice(&tag)
            .map_err(|_| CursorError::Invalid)?;
        let valid_until = DateTime::from_timestamp(until, 0).ok_or(CursorError::Invalid)?;
        // Checked after the tag: an altered time is "invalid", not "expired".
        if now >= valid_until {
            return Err(CursorError::Expired);
        }
        Ok(Position {
            offset,
            valid_until,
        })
    }
}

/// The cards per page the app asked for (1 to [`MAX_PAGE_CARDS`]; the most if unsaid).
pub fn page_size(asked: Option<u32>) -> Result<u32, ServiceError> {
    match asked {
        None => Ok(MAX_PAGE_CARDS),
        Some(n) if (1..=MAX_PAGE_CARDS).contains(&n) => Ok(n),
        Some(_) => Err(ServiceError::Malformed(format!(
            "page_size must be 1 to {MAX_PAGE_CARDS}"
        ))),
    }
}

/// One response of the report: the whole report but for `cards`, which holds the page.
#[derive(Debug, Serialize)]
pub struct ReportPage {
    #[serde(flatten)]
    pub report: Report,
    /// The cursor of the next page; `None` on the last.
    pub next_cursor: Option<String>,
    /// Until when `next_cursor` (and every cursor of this view) works.
    #[serde(with = "rfc3339::option")]
    pub cursor_expires_at: Option<DateTime<Utc>>,
}

/// Cuts `report` to the page at `at`; the cursor of the following page, if any, is
/// made by `next` from its position.
pub fn page(
    mut report: Report,
    at: Position,
    size: u32,
    next: impl FnOnce(Position) -> String,
) -> ReportPage {
    let total = report.cards.len();
    let start = (at.offset as usize).min(total);
    let end = start.saturating_add(size as usize).min(total);
    report.cards.truncate(end);
    report.cards.drain(..start);
    let next_cursor = (end < total).then(|| {
        next(Position {
            offset: u32::try_from(end).unwrap_or(u32::MAX),
            valid_until: at.valid_until,
        })
    });
    ReportPage {
        report,
        cursor_expires_at: next_cursor.as_ref().map(|_| at.valid_until),
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::at;

    const T: DateTime<Utc> = at(2026, 11, 28, 10, 0, 0);

    fn key() -> CursorKey {
        CursorKey::new([7; 32])
    }

    struct Ids {
        u1: UserId,
        u2: UserId,
        q1: QueryId,
        q2: QueryId,
    }

    fn ids() -> Ids {
        Ids {
            u1: UserId::parse("u1").unwrap(),
            u2: UserId::parse("u2").unwrap(),
            q1: QueryId::generate(),
            q2: QueryId::generate(),
        }
    }

    fn scope<'a>(u: &'a UserId, q: &'a QueryId) -> CursorScope<'a> {
        CursorScope {
            user: u,
            query: q,
            generated_at: T,
        }
    }

    #[test]
    fn a_cursor_reads_back_for_its_user_and_report_until_it_expires() {
        let i = ids();
        let s = scope(&i.u1, &i.q1);
        let at = Position {
            offset: 1000,
            valid_until: T + CURSOR_LIFETIME,
        };
        let c = key().issue(&s, at);
        assert_eq!(key().check(&s, &c, T), Ok(at));
        assert_eq!(
            key().check(&s, &c, T + CURSOR_LIFETIME - TimeDelta::seconds(1)),
            Ok(at)
        );
        assert_eq!(
            key().check(&s, &c, T + CURSOR_LIFETIME),
            Err(CursorError::Expired)
        );
    }

    #[test]
    fn a_cursor_is_refused_for_another_user_report_key_or_when_altered() {
        let i = ids();
        let s = scope(&i.u1, &i.q1);
        let at = Position {
            offset: 2,
            valid_until: T + CURSOR_LIFETIME,
        };
        let c = key().issue(&s, at);
        let later_report = CursorScope {
            generated_at: T + TimeDelta::seconds(1),
            ..s
        };
        let (offset, rest) = c.split_once('.').unwrap();
        let (until, tag) = rest.split_once('.').unwrap();
        let longer = (T + TimeDelta::days(1)).timestamp();
        let mut flipped = tag.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let cases: Vec<(CursorScope<'_>, String, &str)> = vec![
            (scope(&i.u2, &i.q1), c.clone(), "another user"),
            (scope(&i.u1, &i.q2), c.clone(), "another query"),
            (later_report, c.clone(), "another generation"),
            (s, format!("3.{until}.{tag}"), "another offset"),
            (s, format!("{offset}.{longer}.{tag}"), "a longer life"),
            (s, format!("{offset}.{until}.{flipped}"), "a changed tag"),
            (s, format!("{offset}.{until}"), "no tag"),
            (s, format!("{c}.1"), "a fourth part"),
            (s, format!("+{offset}.{until}.{tag}"), "a sign"),
            (s, format!("{offset}.-{until}.{tag}"), "a negative time"),
            (
                s,
                format!("99999999999.{until}.{tag}"),
                "an offset past u32",
            ),
            (s, format!("{offset}.{until}.{tag}!"), "not base64"),
            (s, String::new(), "empty"),
            (s, "x".repeat(200), "too long"),
        ];
        for (scope, cursor, why) in cases {
            assert_eq!(
                key().check(&scope, &cursor, T),
                Err(CursorError::Invalid),
                "{why}: {cursor}"
            );
        }
        let other_key = CursorKey::new([8; 32]);
        assert_eq!(other_key.check(&s, &c, T), Err(CursorError::Invalid));
        // An expired cursor whose time was pushed forward is invalid, not valid.
        let old = key().issue(
            &s,
            Position {
                offset: 2,
                valid_until: T - TimeDelta::seconds(1),
            },
        );
        assert_eq!(key().check(&s, &old, T), Err(CursorError::Expired));
        let (o, rest) = old.split_once('.').unwrap();
        let (_, t) = rest.split_once('.').unwrap();
        let pushed = format!("{o}.{}.{t}", (T + CURSOR_LIFETIME).timestamp());
        assert_eq!(key().check(&s, &pushed, T), Err(CursorError::Invalid));
    }

    #[test]
    fn page_sizes_outside_one_to_the_most_are_refused() {
        assert_eq!(page_size(None).unwrap(), MAX_PAGE_CARDS);
        assert_eq!(page_size(Some(1)).unwrap(), 1);
        assert_eq!(page_size(Some(MAX_PAGE_CARDS)).unwrap(), MAX_PAGE_CARDS);
        for bad in [0, MAX_PAGE_CARDS + 1, u32::MAX] {
            assert!(
                matches!(page_size(Some(bad)), Err(ServiceError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
