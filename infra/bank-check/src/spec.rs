//! The bank protocol's schemas, from `functions/bank-protocol.yaml` built into the
//! binary (a bank runs the checker without our repository at hand).

use jsonschema::{Draft, Validator};
use serde_json::Value;

/// The protocol document the checker holds the bank to.
pub const BANK_PROTOCOL: &str = include_str!("../../../functions/bank-protocol.yaml");

pub struct Spec {
    answer: Validator,
    dispute_answer: Validator,
    card_ref: Validator,
}

fn compile(doc: &Value, schema: &str) -> Result<Validator, String> {
    // The whole document is the root, so `#/components/...` references resolve.
    let mut root = doc.as_object().cloned().unwrap_or_default();
    root.insert(
        "$ref".into(),
        Value::from(format!("#/components/schemas/{schema}")),
    );
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(&Value::Object(root))
        .map_err(|e| format!("bank-protocol.yaml: {schema} does not compile: {e}"))
}

impl Spec {
    pub fn load() -> Result<Self, String> {
        let doc: Value = serde_norway::from_str(BANK_PROTOCOL)
            .map_err(|e| format!("bank-protocol.yaml is not valid YAML: {e}"))?;
        Ok(Self {
            answer: compile(&doc, "CardAnswer")?,
            dispute_answer: compile(&doc, "DisputeAnswer")?,
            card_ref: compile(&doc, "CardRef")?,
        })
    }

    /// Where `value` breaks `CardAnswer`: instance path and keyword only, never a value.
    pub fn answer_errors(&self, value: &Value) -> Vec<String> {
        errors(&self.answer, value)
    }

    pub fn dispute_answer_errors(&self, value: &Value) -> Vec<String> {
        errors(&self.dispute_answer, value)
    }

    pub fn card_ref_ok(&self, card_ref: &str) -> bool {
        self.card_ref.is_valid(&Value::from(card_ref))
    }
}

fn errors(v: &Validator, value: &Value) -> Vec<String> {
    v.iter_errors(value)
        .map(|e| {
            let at = e.instance_path().as_str();
            let at = if at.is_empty() { "(root)" } else { at };
            format!("{at}: fails `{}`", e.kind().keyword())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_built_in_document_checks_answers_without_quoting_them() {
        let spec = Spec::load().unwrap();
        let q = "01JDQ8Z6X3M4N5P6Q7R8S9T0VW";
        let ok = json!({"query_id": q, "inquiry_id": q, "status": "FOUND",
            "cards": [{"kind": "DEBIT", "first4": "6222", "last4": "1234", "card_ref": "cr_x"}]});
        assert!(spec.answer_errors(&ok).is_empty());
        let leak = json!({"query_id": q, "inquiry_id": q, "status": "NONE", "cards": [],
            "card_number": "6222021234567891"});
        let errors = spec.answer_errors(&leak);
        assert!(!errors.is_empty());
        assert!(errors.iter().all(|e| !e.contains("6222")), "{errors:?}");
        assert!(spec.card_ref_ok("cr_abc"));
        assert!(!spec.card_ref_ok("cr_6222021234"));
        assert!(spec
            .dispute_answer_errors(
                &json!({"dispute_id": q, "case_id": "C-1", "status": "ACKNOWLEDGED"})
            )
            .is_empty());
    }

    /// Our side parses `card_ref` with a scan (`domain::model::card::CardRef`), the
    /// checker with the document's pattern: the two must agree on every ref.
    #[test]
    fn the_services_card_ref_rule_is_the_documents() {
        use domain::model::card::CardRef;
        let spec = Spec::load().unwrap();
        let mut refs: Vec<String> = vec![String::new()];
        // Every string of up to 7 of these: digit runs of every length up to 7, between
        // letters and separators, and characters outside the set.
        for _ in 0..7 {
            let longer: Vec<String> = refs
                .iter()
                .filter(|r| r.chars().count() == refs.last().unwrap().chars().count())
                .flat_map(|r| ["a", "7", "_", "-", " ", "é"].map(|c| format!("{r}{c}")))
                .collect();
            refs.extend(longer);
        }
        for n in [63, 64, 65] {
            refs.push("x".repeat(n));
            refs.push(format!("{}12345", "x".repeat(n - 5)));
        }
        refs.extend(
            [
                "cr_qzkdmwbtaeyhrnxfcgps",
                "cr-6222-0212-3456-7891-234",
                "cr_622202",
            ]
            .map(String::from),
        );
        for r in &refs {
            assert_eq!(CardRef::parse(r).is_ok(), spec.card_ref_ok(r), "{r:?}");
        }
        assert!(refs.len() > 300_000, "{}", refs.len());
    }
}
