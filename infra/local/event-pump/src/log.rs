//! One JSON object per line on stderr.

use std::io::Write as _;

use chrono::SecondsFormat;
use serde_json::{Map, Value};

/// Writes `fields` (a JSON object) as one line on stderr, with a `ts` field added.
pub fn emit(fields: Value) {
    let mut line = Map::new();
    let ts = chrono::Utc::now().to_rfc3339_opts(SecondsFormat::AutoSi, true);
    line.insert("ts".into(), Value::String(ts));
    if let Value::Object(map) = fields {
        line.extend(map);
    }
    let mut text = Value::Object(line).to_string();
    text.push('\n');
    // A closed stderr must not stop the pump.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// An informational line: `{"ts", "level", "msg", ...fields}`.
pub fn info(msg: &str, fields: Value) {
    line("info", msg, fields)
}

pub fn warn(msg: &str, fields: Value) {
    line("warn", msg, fields)
}

fn line(level: &str, msg: &str, fields: Value) {
    let mut map = Map::new();
    map.insert("level".into(), Value::String(level.into()));
    map.insert("msg".into(), Value::String(msg.into()));
    if let Value::Object(f) = fields {
        map.extend(f);
    }
    emit(Value::Object(map))
}
