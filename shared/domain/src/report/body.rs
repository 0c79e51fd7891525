//! The report as the app receives it (HTTP contract v1), and how it gets there: each
//! bank's answer is sealed when its leg settles ([`seal_answer`]), the aggregator seals
//! the outcomes and those envelopes together ([`content`]) without reading a card, and
//! view-report opens both and renders the report ([`render`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::crypto::{Binding, CryptoError, ReportOpener, ReportSealer};
use crate::model::bank::{BankCode, BankRegistry};
use crate::model::card::{AnsweredCard, CardKind};
use crate::model::sealed::Sealed;
use crate::model::timestamp::rfc3339;
use crate::records::{LegRecord, LegState, QueryRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BankStatus {
    Responded,
    NoResponse,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankSummary {
    pub bank_code: String,
    pub bank_name: String,
    pub status: BankStatus,
    pub debit_cards: u32,
    pub credit_cards: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub total_cards: u32,
    pub debit_cards: u32,
    pub credit_cards: u32,
    pub banks: Vec<BankSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportCard {
    pub bank_code: String,
    pub bank_name: String,
    pub kind: CardKind,
    /// `6222 **** **** 1234`
    pub masked_number: String,
    /// The card's id in this report (`rules::dispute::card_id`): what a dispute names.
    pub card_id: String,
    /// Whether the card can be disputed (its bank gave a `card_ref` for it).
    pub disputable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub query_id: String,
    #[serde(with = "rfc3339")]
    pub generated_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
    pub summary: Summary,
    pub cards: Vec<ReportCard>,
    pub notices: Vec<String>,
}

/// The notices every report carries (design brief, section 1).
pub const NOTICES: [&str; 5] = [
    "报告内容来源于各银行的记录，请以银行记录为准。",
    "未在银行预留手机号、身份证件已过期或未开通无卡支付功能的银行卡可能未被查询到。",
    "如有不认识的银行卡，请及时联系发卡银行核实处理。",
    "请勿向任何人透露短信验证码，请勿分享本报告。",
    "本次查询不影响您的个人征信记录。",
];

/// Added when some bank did not answer or failed.
pub const PARTIAL_NOTICE: &str =
    "部分银行未在规定时间内反馈或查询失败，本报告可能不完整，可联系相关银行核实。";

/// A bank's answer as sealed when its leg settles (the plaintext of its envelope): its
/// cards with their `card_ref`s, which only this envelope keeps (the report the app
/// receives shows the masked cards alone). Envelopes sealed before refs were accepted
/// simply have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerContent {
    pub cards: Vec<AnsweredCard>,
}

/// One bank's place in a report: its outcome and, if it answered, its sealed answer.
/// Only the outcome (RESPONDED / NO_RESPONSE / FAILED) is known to the aggregator; it is
/// no card data (the query record's progress shows it to the user anyway), and even it
/// travels inside the report's envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedBank {
    pub bank_code: BankCode,
    pub status: BankStatus,
    pub inquiry_id: String,
    #[serde(default)]
    pub answer: Option<Sealed>,
}

/// The plaintext of a report's envelope: banks in the order the user chose. The
/// aggregator builds it without reading any card; view-report renders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportContent {
    pub banks: Vec<ReportedBank>,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("sealed content is not what was sealed: {0}")]
    Content(String),
}

fn answer_binding<'a>(
    query: &'a QueryRecord,
    bank: &'a BankCode,
    inquiry_id: &'a str,
) -> Binding<'a> {
    Binding::Answer {
        query: &query.query_id,
        user: &query.user_id,
        bank,
        inquiry_id,
        report_due_by: query.report_due_by,
    }
}

/// Seals one bank's answer to the report key, bound to its leg (fan-out, callbacks).
pub fn seal_answer(
    sealer: &ReportSealer,
    query: &QueryRecord,
    bank: &BankCode,
    inquiry_id: &str,
    cards: &[AnsweredCard],
) -> Result<Sealed, SealError> {
    let plain = serde_json::to_vec(&AnswerContent {
        cards: cards.to_vec(),
    })
    .map_err(|e| SealError::Content(e.to_string()))?;
    Ok(sealer.seal(&answer_binding(query, bank, inquiry_id), &plain)?)
}

/// Opens one bank's answer of `query` (view-report).
pub fn open_answer(
    opener: &ReportOpener,
    query: &QueryRecord,
    bank: &ReportedBank,
    sealed: &Sealed,
) -> Result<Vec<AnsweredCard>, SealError> {
    let plain = opener.open(
        &answer_binding(query, &bank.bank_code, &bank.inquiry_id),
        sealed,
    )?;
    let content: AnswerContent =
        serde_json::from_slice(&plain).map_err(|e| SealError::Content(e.to_string()))?;
    Ok(content.cards)
}

/// What the aggregator seals: each chosen bank's outcome and sealed answer, from the
/// legs, without opening any answer.
pub fn content(query: &QueryRecord, legs: &[LegRecord]) -> ReportContent {
    let banks = query
        .banks
        .iter()
        .map(|code| {
            let leg = legs.iter().find(|l| &l.bank == code);
            let status = match leg.map(|l| l.state) {
                Some(LegState::Answered) => BankStatus::Responded,
                Some(LegState::Failed) => BankStatus::Failed,
                _ => BankStatus::NoResponse,
            };
            ReportedBank {
                bank_code: code.clone(),
                status,
                inquiry_id: leg.map(|l| l.inquiry_id.clone()).unwrap_or_default(),
                answer: leg
                    .filter(|_| status == BankStatus::Responded)
                    .and_then(|l| l.cards.first().cloned()),
            }
        })
        .collect();
    ReportContent { banks }
}

/// A responding bank's cards in the report's order (masked card, then ref), each with
/// its card id: the order and the ids are the same every time the report is opened.
pub fn ordered_cards(bank: &BankCode, mut cards: Vec<AnsweredCard>) -> Vec<(String, AnsweredCard)> {
    cards.sort();
    cards
        .into_iter()
        .enumerate()
        .map(|(i, c)| (crate::rules::dispute::card_id(bank.as_str(), i + 1), c))
        .collect()
}

/// The card `card_id` names in the report, with its bank's place in the report; only
/// that bank's answer is opened. `None` when the report has no such card.
pub fn find_card<'a, E>(
    content: &'a ReportContent,
    card_id: &str,
    mut cards_of: impl FnMut(&ReportedBank, &Sealed) -> Result<Vec<AnsweredCard>, E>,
) -> Result<Option<(&'a ReportedBank, AnsweredCard)>, E> {
    let Some((code, _)) = card_id.split_once('-') else {
        return Ok(None);
    };
    let Some(bank) = content
        .banks
        .iter()
        .find(|b| b.bank_code.as_str() == code && b.status == BankStatus::Responded)
    else {
        return Ok(None);
    };
    let Some(sealed) = &bank.answer else {
        return Ok(None);
    };
    let card = ordered_cards(&bank.bank_code, cards_of(bank, sealed)?)
        .into_iter()
        .find(|(id, _)| id == card_id)
        .map(|(_, c)| (bank, c));
    Ok(card)
}

/// The report as the app receives it, from the opened content: `cards_of` opens a
/// responding bank's answer.
pub fn render<E>(
    query_id: &str,
    generated_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    content: &ReportContent,
    banks: &BankRegistry,
    mut cards_of: impl FnMut(&ReportedBank, &Sealed) -> Result<Vec<AnsweredCard>, E>,
) -> Result<Report, E> {
    let mut summary = Summary {
        total_cards: 0,
        debit_cards: 0,
        credit_cards: 0,
        banks: Vec::new(),
    };
    let mut cards = Vec::new();
    for bank in &content.banks {
        let code = &bank.bank_code;
        let name = banks.name(code).to_owned();
        let mut row = BankSummary {
            bank_code: code.to_string(),
            bank_name: name.clone(),
            status: bank.status,
            debit_cards: 0,
            credit_cards: 0,
        };
        if let (BankStatus::Responded, Some(sealed)) = (bank.status, &bank.answer) {
            // The app contract has no `card_ref`: only the masked card leaves.
            for (card_id, card) in ordered_cards(code, cards_of(bank, sealed)?) {
                match card.kind {
                    CardKind::Debit => row.debit_cards += 1,
                    CardKind::Credit => row.credit_cards += 1,
                }
                cards.push(ReportCard {
                    bank_code: code.to_string(),
                    bank_name: name.clone(),
                    kind: card.kind,
                    masked_number: card.masked().masked_number(),
                    card_id,
                    disputable: card.card_ref.is_some(),
                });
            }
        }
        summary.debit_cards += row.debit_cards;
        summary.credit_cards += row.credit_cards;
        summary.banks.push(row);
    }
    summary.total_cards = summary.debit_cards + summary.credit_cards;
    let mut notices: Vec<String> = NOTICES.iter().map(|s| (*s).to_owned()).collect();
    if summary
        .banks
        .iter()
        .any(|b| b.status != BankStatus::Responded)
    {
        notices.push(PARTIAL_NOTICE.to_owned());
    }
    Ok(Report {
        query_id: query_id.to_owned(),
        generated_at,
        expires_at,
        summary,
        cards,
        notices,
    })
}
