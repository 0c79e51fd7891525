//! Lambda event filtering (the EventBridge pattern language), as Lambda applies an event
//! source mapping's `FilterCriteria` to each DynamoDB stream record.
//!
//! A record is delivered when *any* pattern of the `Filters` list matches (OR). A pattern
//! is a JSON object; every key in it must match (AND):
//! - an object value matches the event's object at that key, recursively;
//! - an array value lists matchers for a leaf value; one matching matcher is enough:
//!   - exact values: strings, numbers (compared as numbers), `true`/`false`, `null`;
//!   - `{"exists": true}` / `{"exists": false}`: the leaf is present / the key is absent;
//!   - `{"prefix": "..."}`, `{"suffix": "..."}`, `{"equals-ignore-case": "..."}`,
//!     `{"wildcard": "a*b"}`: on strings;
//!   - `{"anything-but": v | [v, ...] | {"prefix": ...} | {"suffix": ...} |
//!     {"equals-ignore-case": ...}}`: present and not any of those;
//!   - `{"numeric": [">", 0, "<=", 5]}`: on JSON numbers (a DynamoDB `{"N": "5"}` is a
//!     string, so numeric matching does not apply to it, as in Lambda);
//! - `"$or": [pattern, ...]`: any of the sub-patterns.
//!
//! Arrays in the event are flattened as EventBridge does: a matcher matches an array when
//! it matches any of its elements, and a nested pattern looks into every object of an
//! array. `exists` applies to leaves only (an object is not a leaf), like EventBridge.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid filter pattern: {0}")]
pub struct PatternError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError(msg.into()))
}

/// One validated pattern of a `FilterCriteria.Filters` list.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    root: Map<String, Value>,
    source: String,
}

impl Pattern {
    /// Parses and validates a pattern string (the template's `Pattern: '{...}'`).
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let value: Value =
            serde_json::from_str(text).or_else(|e| err(format!("not JSON ({e}): {text}")))?;
        Self::from_value(value, text)
    }

    fn from_value(value: Value, source: &str) -> Result<Self, PatternError> {
        let Value::Object(root) = value else {
            return err(format!("a pattern is a JSON object: {source}"));
        };
        validate_object(&root, "")?;
        Ok(Self {
            root,
            source: source.to_owned(),
        })
    }

    /// The pattern as written in the template.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The pattern as a JSON object.
    pub fn json(&self) -> Value {
        Value::Object(self.root.clone())
    }

    /// Whether `event` (the record as Lambda sends it) matches this pattern.
    pub fn matches(&self, event: &Value) -> bool {
        match_object(&self.root, &[event])
    }
}

/// The `Filters` list of one event source: OR of its patterns; no filters = everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterCriteria {
    pub patterns: Vec<Pattern>,
}

impl FilterCriteria {
    pub fn matches(&self, event: &Value) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(event))
    }
}

// ---- validation ---------------------------------------------------------------------

fn validate_object(map: &Map<String, Value>, path: &str) -> Result<(), PatternError> {
    if map.is_empty() {
        return err(format!("empty object at {}", display_path(path)));
    }
    for (key, value) in map {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if key == "$or" {
            let Some(alts) = value.as_array().filter(|a| a.len() >= 2) else {
                return err(format!(
                    "{here}: \"$or\" takes an array of at least two patterns"
                ));
            };
            for alt in alts {
                let Value::Object(obj) = alt else {
                    return err(format!("{here}: each \"$or\" alternative is an object"));
                };
                validate_object(obj, path)?;
            }
            continue;
        }
        match value {
            Value::Object(obj) => validate_object(obj, &here)?,
            Value::Array(matchers) => {
                if matchers.is_empty() {
                    return err(format!("{here}: empty array of matchers"));
                }
                for m in matchers {
                    validate_matcher(m, &here)?;
                }
            }
            other => {
                return err(format!(
                    "{here}: leaf values must be arrays of matchers, found {other}"
                ))
            }
        }
    }
    Ok(())
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "the top level"
    } else {
        path
    }
}

fn validate_matcher(m: &Value, here: &str) -> Result<(), PatternError> {
    let Value::Object(obj) = m else {
        return match m {
            Value::Array(_) => err(format!("{here}: nested arrays are not matchers")),
            _ => Ok(()), // exact string, number, bool or null
        };
    };
    if obj.len() != 1 {
        return err(format!(
            "{here}: a matcher object has exactly one operator: {m}"
        ));
    }
    let (op, arg) = obj.iter().next().expect("one entry");
    match op.as_str() {
        "exists" => {
            if !arg.is_boolean() {
                return err(format!("{here}: \"exists\" takes true or false"));
            }
        }
        "prefix" | "suffix" | "equals-ignore-case" | "wildcard" => {
            if !arg.is_string() {
                return err(format!("{here}: \"{op}\" takes a string"));
            }
        }
        "anything-but" => match arg {
            Value::String(_) | Value::Number(_) => {}
            Value::Array(items) => {
                if items.is_empty() || !items.iter().all(|v| v.is_string() || v.is_number()) {
                    return err(format!(
                        "{here}: \"anything-but\" takes a non-empty array of strings or numbers"
                    ));
                }
            }
            Value::Object(inner) => {
                let ok = inner.len() == 1
                    && inner.iter().all(|(k, v)| {
                        matches!(k.as_str(), "prefix" | "suffix" | "equals-ignore-case")
                            && v.is_string()
                    });
                if !ok {
                    return err(format!(
                        "{here}: \"anything-but\" object takes one of prefix, suffix, \
                         equals-ignore-case with a string"
                    ));
                }
            }
            _ => {
                return err(format!(
                    "{here}: unsupported \"anything-but\" operand {arg}"
                ))
            }
        },
        "numeric" => {
            parse_numeric(arg).map_err(|e| PatternError(format!("{here}: {e}")))?;
        }
        other => return err(format!("{here}: unsupported operator \"{other}\"")),
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

fn parse_numeric(arg: &Value) -> Result<Vec<(Cmp, f64)>, String> {
    let items = arg
        .as_array()
        .filter(|a| !a.is_empty() && a.len() % 2 == 0 && a.len() <= 4)
        .ok_or("\"numeric\" takes [op, number] or [op, number, op, number]")?;
    items
        .chunks(2)
        .map(|pair| {
            let op = match pair[0].as_str() {
                Some("=") => Cmp::Eq,
                Some("<") => Cmp::Lt,
                Some("<=") => Cmp::Le,
                Some(">") => Cmp::Gt,
                Some(">=") => Cmp::Ge,
                _ => return Err(format!("\"numeric\": unknown operator {}", pair[0])),
            };
            let n = pair[1]
                .as_f64()
                .ok_or_else(|| format!("\"numeric\": {} is not a number", pair[1]))?;
            Ok((op, n))
        })
        .collect()
}

// ---- matching -----------------------------------------------------------------------

/// The values at `key` of every object in `parents`, with arrays flattened.
fn children<'a>(parents: &[&'a Value], key: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    for parent in parents {
        if let Value::Object(obj) = parent {
            if let Some(v) = obj.get(key) {
                flatten_into(v, &mut out);
            }
        }
    }
    out
}

fn flatten_into<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten_into(i, out)),
        other => out.push(other),
    }
}

/// `present` tells whether the key exists at all (an empty array still counts).
fn present(parents: &[&Value], key: &str) -> bool {
    parents
        .iter()
        .any(|p| p.as_object().is_some_and(|o| o.contains_key(key)))
}

fn match_object(pattern: &Map<String, Value>, events: &[&Value]) -> bool {
    pattern.iter().all(|(key, pv)| {
        if key == "$or" {
            return pv.as_array().is_some_and(|alts| {
                alts.iter()
                    .filter_map(Value::as_object)
                    .any(|alt| match_object(alt, events))
            });
        }
        let values = children(events, key);
        match pv {
            Value::Object(sub) => match_object(sub, &values),
            Value::Array(matchers) => {
                let leaves: Vec<&Value> = values.into_iter().filter(|v| !v.is_object()).collect();
                let key_present = present(events, key);
                matchers.iter().any(|m| match_leaf(m, &leaves, key_present))
            }
            _ => false,
        }
    })
}

fn match_leaf(matcher: &Value, leaves: &[&Value], key_present: bool) -> bool {
    let Value::Object(obj) = matcher else {
        return leaves.iter().any(|v| exact(matcher, v));
    };
    let Some((op, arg)) = obj.iter().next() else {
        return false;
    };
    match op.as_str() {
        "exists" => {
            if arg.as_bool() == Some(true) {
                !leaves.is_empty()
            } else {
                !key_present
            }
        }
        "prefix" => str_any(leaves, |s| arg.as_str().is_some_and(|p| s.starts_with(p))),
        "suffix" => str_any(leaves, |s| arg.as_str().is_some_and(|p| s.ends_with(p))),
        "equals-ignore-case" => str_any(leaves, |s| arg.as_str().is_some_and(|p| eq_ic(s, p))),
        "wildcard" => str_any(leaves, |s| arg.as_str().is_some_and(|p| wildcard(p, s))),
        "anything-but" => leaves.iter().any(|v| !excluded(arg, v)),
        "numeric" => match parse_numeric(arg) {
            Ok(conds) => leaves.iter().any(|v| {
                v.as_f64().is_some_and(|x| {
                    conds.iter().all(|(op, n)| match op {
                        Cmp::Eq => x == *n,
                        Cmp::Lt => x < *n,
                        Cmp::Le => x <= *n,
                        Cmp::Gt => x > *n,
                        Cmp::Ge => x >= *n,
                    })
                })
            }),
            Err(_) => false,
        },
        _ => false,
    }
}

fn str_any(leaves: &[&Value], f: impl Fn(&str) -> bool) -> bool {
    leaves.iter().any(|v| v.as_str().is_some_and(&f))
}

fn eq_ic(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

fn exact(pattern: &Value, value: &Value) -> bool {
    match (pattern, value) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
        (a, b) => a == b,
    }
}

/// Whether `value` is one of what `anything-but` excludes.
fn excluded(arg: &Value, value: &Value) -> bool {
    match arg {
        Value::Array(items) => items.iter().any(|i| exact(i, value)),
        Value::Object(inner) => {
            let Some(s) = value.as_str() else {
                return false;
            };
            inner.iter().any(|(k, v)| {
                let p = v.as_str().unwrap_or_default();
                match k.as_str() {
                    "prefix" => s.starts_with(p),
                    "suffix" => s.ends_with(p),
                    "equals-ignore-case" => eq_ic(s, p),
                    _ => false,
                }
            })
        }
        single => exact(single, value),
    }
}

/// `*` matches any run of characters (EventBridge wildcard; no other metacharacters).
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text.ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    // Both ends are matched prefixes/suffixes, so these are char boundaries.
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(pattern: &str, event: Value) -> bool {
        Pattern::parse(pattern)
            .expect("valid pattern")
            .matches(&event)
    }

    #[test]
    fn exact_strings_numbers_bools_null() {
        assert!(m(r#"{"a": ["x", "y"]}"#, json!({"a": "y"})));
        assert!(!m(r#"{"a": ["x", "y"]}"#, json!({"a": "z"})));
        assert!(!m(r#"{"a": ["x"]}"#, json!({"b": "x"})));
        assert!(m(r#"{"n": [5]}"#, json!({"n": 5.0})));
        assert!(!m(r#"{"n": [5]}"#, json!({"n": "5"})));
        assert!(!m(r#"{"n": ["5"]}"#, json!({"n": 5})));
        assert!(m(r#"{"b": [true]}"#, json!({"b": true})));
        assert!(!m(r#"{"b": [true]}"#, json!({"b": false})));
        assert!(m(r#"{"z": [null]}"#, json!({"z": null})));
        assert!(!m(r#"{"z": [null]}"#, json!({})));
    }

    #[test]
    fn nesting_and_and_semantics() {
        let p = r#"{"a": {"b": {"c": ["x"]}}, "d": ["y"]}"#;
        assert!(m(p, json!({"a": {"b": {"c": "x", "other": 1}}, "d": "y"})));
        assert!(!m(p, json!({"a": {"b": {"c": "x"}}, "d": "n"})));
        assert!(!m(p, json!({"a": {"b": {"c": "n"}}, "d": "y"})));
        assert!(!m(p, json!({"a": {"b": "x"}, "d": "y"})));
        assert!(!m(p, json!({"d": "y"})));
        // A leaf matcher never matches an object.
        assert!(!m(r#"{"a": ["x"]}"#, json!({"a": {"x": 1}})));
    }

    #[test]
    fn arrays_in_the_event() {
        assert!(m(r#"{"tags": ["b"]}"#, json!({"tags": ["a", "b"]})));
        assert!(!m(r#"{"tags": ["c"]}"#, json!({"tags": ["a", "b"]})));
        assert!(m(
            r#"{"items": {"id": ["2"]}}"#,
            json!({"items": [{"id": "1"}, {"id": "2"}]})
        ));
        assert!(m(r#"{"n": [3]}"#, json!({"n": [1, 2, 3]})));
    }

    #[test]
    fn exists() {
        assert!(m(r#"{"a": [{"exists": true}]}"#, json!({"a": "x"})));
        assert!(m(r#"{"a": [{"exists": true}]}"#, json!({"a": null})));
        assert!(!m(r#"{"a": [{"exists": true}]}"#, json!({"b": "x"})));
        assert!(!m(r#"{"a": [{"exists": true}]}"#, json!({"a": {"S": "x"}})));
        assert!(m(
            r#"{"a": {"S": [{"exists": true}]}}"#,
            json!({"a": {"S": "x"}})
        ));
        assert!(m(r#"{"a": [{"exists": false}]}"#, json!({"b": "x"})));
        assert!(!m(r#"{"a": [{"exists": false}]}"#, json!({"a": "x"})));
        assert!(!m(
            r#"{"a": [{"exists": false}]}"#,
            json!({"a": {"S": "x"}})
        ));
        // Nested: absent parent means absent child.
        assert!(m(
            r#"{"dynamodb": {"OldImage": {"phase": [{"exists": false}]}}}"#,
            json!({"dynamodb": {"NewImage": {}}})
        ));
    }

    #[test]
    fn prefix_suffix_ignore_case_wildcard() {
        assert!(m(r#"{"a": [{"prefix": "QU"}]}"#, json!({"a": "QUERY"})));
        assert!(!m(r#"{"a": [{"prefix": "QU"}]}"#, json!({"a": "LEG"})));
        assert!(!m(r#"{"a": [{"prefix": "1"}]}"#, json!({"a": 12})));
        assert!(m(r#"{"a": [{"suffix": "RY"}]}"#, json!({"a": "QUERY"})));
        assert!(m(
            r#"{"a": [{"equals-ignore-case": "query"}]}"#,
            json!({"a": "QuErY"})
        ));
        assert!(m(r#"{"a": [{"wildcard": "Q*Y"}]}"#, json!({"a": "QUERY"})));
        assert!(m(
            r#"{"a": [{"wildcard": "*#LEG#*"}]}"#,
            json!({"a": "Q#LEG#ICBC"})
        ));
        assert!(!m(r#"{"a": [{"wildcard": "Q*Z"}]}"#, json!({"a": "QUERY"})));
        assert!(!m(r#"{"a": [{"wildcard": "a*a"}]}"#, json!({"a": "a"})));
    }

    #[test]
    fn anything_but() {
        let p = r#"{"a": [{"anything-but": ["x", "y"]}]}"#;
        assert!(m(p, json!({"a": "z"})));
        assert!(!m(p, json!({"a": "x"})));
        assert!(!m(p, json!({})), "anything-but needs the field");
        assert!(m(r#"{"a": [{"anything-but": "x"}]}"#, json!({"a": "q"})));
        assert!(!m(r#"{"a": [{"anything-but": 3}]}"#, json!({"a": 3.0})));
        assert!(m(
            r#"{"a": [{"anything-but": {"prefix": "Q"}}]}"#,
            json!({"a": "LEG"})
        ));
        assert!(!m(
            r#"{"a": [{"anything-but": {"prefix": "Q"}}]}"#,
            json!({"a": "QUERY"})
        ));
    }

    #[test]
    fn numeric() {
        let p = r#"{"n": [{"numeric": [">", 0, "<=", 5]}]}"#;
        assert!(m(p, json!({"n": 5})));
        assert!(m(p, json!({"n": 0.5})));
        assert!(!m(p, json!({"n": 0})));
        assert!(!m(p, json!({"n": 6})));
        assert!(
            !m(p, json!({"n": "3"})),
            "numeric applies to JSON numbers only"
        );
        assert!(m(r#"{"n": [{"numeric": ["=", 3]}]}"#, json!({"n": 3})));
        // DynamoDB numbers are strings: {"N": "3"} does not match numerically (as in Lambda).
        assert!(!m(
            r#"{"dynamodb": {"NewImage": {"n": {"N": [{"numeric": ["=", 3]}]}}}}"#,
            json!({"dynamodb": {"NewImage": {"n": {"N": "3"}}}})
        ));
    }

    #[test]
    fn or_operator_and_filter_list() {
        let p = r#"{"$or": [{"a": ["1"]}, {"b": ["2"]}]}"#;
        assert!(m(p, json!({"a": "1"})));
        assert!(m(p, json!({"b": "2"})));
        assert!(!m(p, json!({"a": "2", "b": "1"})));
        let criteria = FilterCriteria {
            patterns: vec![
                Pattern::parse(r#"{"eventName": ["INSERT"]}"#).unwrap(),
                Pattern::parse(r#"{"eventName": ["REMOVE"]}"#).unwrap(),
            ],
        };
        assert!(criteria.matches(&json!({"eventName": "REMOVE"})));
        assert!(!criteria.matches(&json!({"eventName": "MODIFY"})));
        assert!(FilterCriteria::default().matches(&json!({"anything": 1})));
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for bad in [
            "not json",
            "[]",
            "{}",
            r#"{"a": "x"}"#,
            r#"{"a": []}"#,
            r#"{"a": [{"exists": "yes"}]}"#,
            r#"{"a": [{"prefix": 1}]}"#,
            r#"{"a": [{"numeric": [">"]}]}"#,
            r#"{"a": [{"numeric": ["~", 1]}]}"#,
            r#"{"a": [{"cidr": "10.0.0.0/8"}]}"#,
            r#"{"a": [{"prefix": "x", "suffix": "y"}]}"#,
            r#"{"$or": [{"a": ["x"]}]}"#,
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
