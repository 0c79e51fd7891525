//! Test subjects: who the inquiries ask about. By default the simulator's seeded
//! customers (the local stack's demo users); a bank passes its own test persons with
//! `--subjects FILE`.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub name: String,
    pub id_number: String,
}

/// The local stack's seeded real-name users (`tests/testkit/src/seed.rs`, n = 1, 3, 4).
pub fn defaults() -> Vec<Subject> {
    [
        "310101195001020001",
        "310101195001040002",
        "310101195001050008",
    ]
    .into_iter()
    .map(|id| Subject {
        name: "张三".into(),
        id_number: id.into(),
    })
    .collect()
}

fn id_number_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 18
        && b[..17].iter().all(u8::is_ascii_digit)
        && (b[17].is_ascii_digit() || b[17] == b'X')
}

/// `[{"name": "...", "id_number": "..."}, ...]`, at least one. Errors give positions,
/// never values.
pub fn parse(json: &str) -> Result<Vec<Subject>, String> {
    let list: Vec<Subject> = serde_json::from_str(json).map_err(|e| {
        format!(
            "subjects: not a JSON array of {{name, id_number}} (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    if list.is_empty() {
        return Err("subjects: the list is empty".into());
    }
    for (i, s) in list.iter().enumerate() {
        if s.name.is_empty() || !id_number_ok(&s.id_number) {
            return Err(format!(
                "subjects: entry {} needs a name and an 18-character ID number",
                i + 1
            ));
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_refuses_bad_entries_without_quoting_them() {
        assert_eq!(defaults().len(), 3);
        assert!(defaults().iter().all(|s| id_number_ok(&s.id_number)));
        let ok = parse(r#"[{"name":"李四","id_number":"11010519491231002X"}]"#).unwrap();
        assert_eq!(ok[0].id_number, "11010519491231002X");
        assert!(parse("[]").is_err());
        assert!(parse(r#"[{"name":"x"}]"#).is_err());
        assert!(parse(r#"[{"name":"x","id_number":"1","age":3}]"#).is_err());
        let e = parse(r#"[{"name":"x","id_number":"99999"}]"#).unwrap_err();
        assert!(!e.contains("99999"), "{e}");
    }
}
