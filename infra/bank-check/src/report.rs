//! The pass/fail report: one line per rule, the failures under it.

use std::collections::BTreeMap;
use std::fmt;

use crate::rules::Rule;

/// At most this many failure lines are printed per rule (the count says the rest).
const MAX_LINES: usize = 5;

#[derive(Debug, Default, Clone)]
struct Outcome {
    checks: usize,
    failures: Vec<String>,
    skipped: Option<String>,
}

/// What the run found, rule by rule.
#[derive(Debug, Clone)]
pub struct Report {
    pub bank: String,
    pub endpoint: String,
    pub subjects: usize,
    outcomes: BTreeMap<Rule, Outcome>,
}

impl Report {
    pub fn new(bank: &str, endpoint: &str, subjects: usize) -> Self {
        Self {
            bank: bank.to_owned(),
            endpoint: endpoint.to_owned(),
            subjects,
            outcomes: Rule::ALL.iter().map(|r| (*r, Outcome::default())).collect(),
        }
    }

    fn outcome(&mut self, rule: Rule) -> &mut Outcome {
        self.outcomes.entry(rule).or_default()
    }

    /// One observation that satisfied the rule.
    pub fn pass(&mut self, rule: Rule) {
        self.outcome(rule).checks += 1;
    }

    /// One observation that broke it; `why` names what, never quotes data.
    pub fn fail(&mut self, rule: Rule, why: impl Into<String>) {
        let o = self.outcome(rule);
        o.checks += 1;
        o.failures.push(why.into());
    }

    /// `ok` passes, otherwise fails with `why`.
    pub fn check(&mut self, rule: Rule, ok: bool, why: impl FnOnce() -> String) {
        if ok {
            self.pass(rule)
        } else {
            self.fail(rule, why())
        }
    }

    /// The rule could not be observed (e.g. no card_ref in any answer).
    pub fn skip(&mut self, rule: Rule, why: &str) {
        let o = self.outcome(rule);
        if o.checks == 0 {
            o.skipped = Some(why.to_owned());
        }
    }

    pub fn failed(&self, rule: Rule) -> bool {
        self.outcomes
            .get(&rule)
            .is_some_and(|o| !o.failures.is_empty())
    }

    pub fn failed_rules(&self) -> Vec<Rule> {
        Rule::ALL.into_iter().filter(|r| self.failed(*r)).collect()
    }

    /// The failure lines of one rule.
    pub fn failures(&self, rule: Rule) -> &[String] {
        self.outcomes
            .get(&rule)
            .map(|o| o.failures.as_slice())
            .unwrap_or_default()
    }

    pub fn passed(&self) -> bool {
        self.failed_rules().is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bank-check: {} at {} ({} test subject{})",
            self.bank,
            self.endpoint,
            self.subjects,
            if self.subjects == 1 { "" } else { "s" }
        )?;
        let (mut passed, mut failed, mut skipped) = (0, 0, 0);
        for rule in Rule::ALL {
            let o = &self.outcomes[&rule];
            let verdict = if !o.failures.is_empty() {
                failed += 1;
                "FAIL"
            } else if o.checks == 0 {
                skipped += 1;
                "SKIP"
            } else {
                passed += 1;
                "PASS"
            };
            let checks = if o.failures.is_empty() {
                format!("{} check{}", o.checks, if o.checks == 1 { "" } else { "s" })
            } else {
                format!("{} of {} checks failed", o.failures.len(), o.checks)
            };
            writeln!(
                f,
                "{verdict}  {:<24} {checks:<20} {}",
                rule.name(),
                rule.summary()
            )?;
            if let Some(why) = &o.skipped {
                if o.checks == 0 {
                    writeln!(f, "      - skipped: {why}")?;
                }
            }
            for line in o.failures.iter().take(MAX_LINES) {
                writeln!(f, "      - {line}")?;
            }
            if o.failures.len() > MAX_LINES {
                writeln!(f, "      - ... and {} more", o.failures.len() - MAX_LINES)?;
            }
        }
        write!(
            f,
            "{passed} passed, {failed} failed, {skipped} skipped: {}",
            if failed == 0 {
                "CONFORMS"
            } else {
                "DOES NOT CONFORM"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_fails_its_rule_only() {
        let mut r = Report::new("ICBC", "http://x", 2);
        r.pass(Rule::CardData);
        r.fail(
            Rule::AnswerIds,
            "subject 1: query_id differs from the inquiry's",
        );
        r.skip(Rule::Dispute, "no card_ref in any answer");
        assert!(!r.passed());
        assert_eq!(r.failed_rules(), [Rule::AnswerIds]);
        let text = r.to_string();
        assert!(text.contains("PASS  card-data"), "{text}");
        assert!(text.contains("FAIL  answer-ids"), "{text}");
        assert!(text.contains("SKIP  dispute"), "{text}");
        assert!(text.ends_with("DOES NOT CONFORM"), "{text}");
    }
}
