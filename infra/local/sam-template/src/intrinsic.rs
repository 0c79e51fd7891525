//! CloudFormation's short-form intrinsic tags (`!Ref`, `!GetAtt`, `!Sub`, ...) as the
//! long JSON form, the same way cfn-lint's decoder reads them, so callers need no YAML
//! types and both spellings of a template read alike.

use serde_json::{Map, Number, Value};
use serde_norway::Value as Yaml;

/// The YAML document as JSON: `!Ref X` → `{"Ref": "X"}`, `!GetAtt A.B` →
/// `{"Fn::GetAtt": ["A", "B"]}`, `!Condition C` → `{"Condition": "C"}`, any other `!Name v`
/// → `{"Fn::Name": v}`. Mapping keys must be scalars.
pub fn to_json(yaml: Yaml) -> Result<Value, String> {
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => number(&n)?,
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(seq) => {
            Value::Array(seq.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Yaml::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(key(k)?, to_json(v)?);
            }
            Value::Object(out)
        }
        Yaml::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let value = to_json(t.value)?;
            let (long, value) = match name {
                "Ref" | "Condition" => (name.to_owned(), value),
                // The short form's `A.B.C` splits at the first dot only: attribute names
                // may hold dots (`Endpoint.Address`).
                "GetAtt" => match value {
                    Value::String(s) => match s.split_once('.') {
                        Some((id, attr)) => (
                            "Fn::GetAtt".to_owned(),
                            Value::Array(vec![id.into(), attr.into()]),
                        ),
                        None => {
                            return Err(format!("!GetAtt {s}: expected <LogicalId>.<Attribute>"))
                        }
                    },
                    other => ("Fn::GetAtt".to_owned(), other),
                },
                _ => (format!("Fn::{name}"), value),
            };
            Value::Object(Map::from_iter([(long, value)]))
        }
    })
}

fn number(n: &serde_norway::Number) -> Result<Value, String> {
    if let Some(i) = n.as_i64() {
        Ok(i.into())
    } else if let Some(u) = n.as_u64() {
        Ok(u.into())
    } else {
        n.as_f64()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{n} is not a JSON number"))
    }
}

fn key(k: Yaml) -> Result<String, String> {
    match k {
        Yaml::String(s) => Ok(s),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Number(n) => Ok(n.to_string()),
        other => Err(format!("mapping key {other:?} is not a scalar")),
    }
}

/// `{"Fn::GetAtt": [Id, Attr]}` (or the string form `"Id.Attr"`) → `(Id, Attr)`.
pub fn get_att(v: &Value) -> Option<(&str, &str)> {
    match v.get("Fn::GetAtt")? {
        Value::String(s) => s.split_once('.'),
        Value::Array(a) => Some((a.first()?.as_str()?, a.get(1)?.as_str()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> Value {
        to_json(serde_norway::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn short_forms_become_the_long_ones() {
        let v = read(
            "a: !Ref X\n\
             b: !GetAtt T.StreamArn\n\
             c: !GetAtt [T, Arn]\n\
             d: !Sub '${T}-x'\n\
             e: !If [Cond, !Ref A, !Ref B]\n\
             f: !Condition C\n\
             g: !GetAtt Db.Endpoint.Address\n\
             n: 10\n\
             s: '10'\n",
        );
        assert_eq!(
            v,
            json!({
                "a": {"Ref": "X"},
                "b": {"Fn::GetAtt": ["T", "StreamArn"]},
                "c": {"Fn::GetAtt": ["T", "Arn"]},
                "d": {"Fn::Sub": "${T}-x"},
                "e": {"Fn::If": ["Cond", {"Ref": "A"}, {"Ref": "B"}]},
                "f": {"Condition": "C"},
                "g": {"Fn::GetAtt": ["Db", "Endpoint.Address"]},
                "n": 10,
                "s": "10",
            })
        );
        assert_eq!(get_att(&v["b"]), Some(("T", "StreamArn")));
        assert_eq!(get_att(&json!({"Fn::GetAtt": "T.Arn"})), Some(("T", "Arn")));
        assert_eq!(get_att(&v["a"]), None);
    }

    #[test]
    fn refuses_a_get_att_without_attribute() {
        let e = to_json(serde_norway::from_str("a: !GetAtt T").unwrap()).unwrap_err();
        assert!(e.contains("!GetAtt T"), "{e}");
    }
}
