//! The rules a bank's endpoint is checked against, one per protocol requirement that
//! can be observed from outside. Their names are stable: reports and tests use them.

/// One rule of the bank protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    AnswerSignature,
    AnswerSchema,
    AnswerIds,
    CardData,
    CardRef,
    CallbackSignature,
    CallbackTiming,
    RefusesBadSignature,
    RefusesReplayedNonce,
    RefusesStaleTimestamp,
    IdempotentRepeat,
    Dispute,
}

impl Rule {
    pub const ALL: [Rule; 12] = [
        Rule::AnswerSignature,
        Rule::AnswerSchema,
        Rule::AnswerIds,
        Rule::CardData,
        Rule::CardRef,
        Rule::CallbackSignature,
        Rule::CallbackTiming,
        Rule::RefusesBadSignature,
        Rule::RefusesReplayedNonce,
        Rule::RefusesStaleTimestamp,
        Rule::IdempotentRepeat,
        Rule::Dispute,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::AnswerSignature => "answer-signature",
            Rule::AnswerSchema => "answer-schema",
            Rule::AnswerIds => "answer-ids",
            Rule::CardData => "card-data",
            Rule::CardRef => "card-ref",
            Rule::CallbackSignature => "callback-signature",
            Rule::CallbackTiming => "callback-timing",
            Rule::RefusesBadSignature => "refuses-bad-signature",
            Rule::RefusesReplayedNonce => "refuses-replayed-nonce",
            Rule::RefusesStaleTimestamp => "refuses-stale-timestamp",
            Rule::IdempotentRepeat => "idempotent-repeat",
            Rule::Dispute => "dispute",
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Rule::AnswerSignature => "200 answers are signed by the bank over the inquiry's method and path and the body",
            Rule::AnswerSchema => "a valid inquiry gets 200 or 202; answers are JSON CardAnswer",
            Rule::AnswerIds => "answers echo the inquiry's query_id and inquiry_id",
            Rule::CardData => "cards are kind + first 4 + last 4 digits; nothing looks like a card number",
            Rule::CardRef => "card_ref is opaque: 1-64 of [A-Za-z0-9_-], no card digits, one per card",
            Rule::CallbackSignature => "callbacks are signed over POST, the callback path and the body",
            Rule::CallbackTiming => "an accepted inquiry (202) is answered by callback before respond_by",
            Rule::RefusesBadSignature => "inquiries with a wrong or missing signature are refused with 401",
            Rule::RefusesReplayedNonce => "an inquiry repeating a used nonce is refused with 401",
            Rule::RefusesStaleTimestamp => "inquiries more than 300 s off the bank's clock are refused with 401",
            Rule::IdempotentRepeat => "the same inquiry_id again gets the same answer (status, cards, card_refs)",
            Rule::Dispute => "disputes: signed 200 {dispute_id, case_id, ACKNOWLEDGED}, same case on repeat, 401 if badly signed",
        }
    }

    pub fn parse(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_round_trip() {
        let mut names: Vec<&str> = Rule::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Rule::ALL.len());
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.name()), Some(r));
        }
        assert_eq!(Rule::parse("nope"), None);
    }
}
