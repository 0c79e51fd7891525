//! `AWS::Serverless::Function` resources with the template's `Globals.Function`
//! applied, as the deployed functions get them.

use serde_json::{Map, Value};

/// One function.
#[derive(Debug, Clone)]
pub struct Function {
    pub id: String,
    /// `Metadata.BuildProperties.Binary`: the crate binary `cargo lambda` builds and
    /// serves it as.
    pub binary: Option<String>,
    /// `Metadata.BuildMethod`.
    pub build_method: Option<String>,
    /// `Properties` after merging `Globals.Function`: the function's own win, except
    /// `Environment.Variables`, which merge by name (SAM's rule).
    pub properties: Value,
}

/// One entry under a function's `Events:`.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub name: &'a str,
    /// `Type`: `DynamoDB`, `Schedule`, `HttpApi`, ...
    pub kind: &'a str,
    pub properties: &'a Value,
}

impl Function {
    pub(crate) fn new(id: &str, resource: &Value, globals: &Value) -> Self {
        let mut props = match globals {
            Value::Object(g) => g.clone(),
            _ => Map::new(),
        };
        for (k, v) in resource["Properties"].as_object().into_iter().flatten() {
            match (k.as_str(), props.get_mut(k)) {
                ("Environment", Some(global_env)) => {
                    let own = v["Variables"].as_object().cloned().unwrap_or_default();
                    match global_env
                        .get_mut("Variables")
                        .and_then(Value::as_object_mut)
                    {
                        Some(vars) => vars.extend(own),
                        None => global_env["Variables"] = Value::Object(own),
                    }
                }
                _ => {
                    props.insert(k.clone(), v.clone());
                }
            }
        }
        let meta = &resource["Metadata"];
        Self {
            id: id.to_owned(),
            binary: meta["BuildProperties"]["Binary"]
                .as_str()
                .map(str::to_owned),
            build_method: meta["BuildMethod"].as_str().map(str::to_owned),
            properties: Value::Object(props),
        }
    }

    /// `Environment.Variables` (values as the template has them: strings or intrinsics).
    pub fn env(&self) -> Map<String, Value> {
        self.properties["Environment"]["Variables"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    /// `Timeout` in seconds (its own, else the Globals').
    pub fn timeout(&self) -> Option<u64> {
        self.properties["Timeout"].as_u64()
    }

    /// The function's events, by name (a fixed order whatever serde_json's map keeps).
    pub fn events(&self) -> Vec<Event<'_>> {
        let mut events: Vec<_> = self.properties["Events"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, e)| Event {
                name,
                kind: e["Type"].as_str().unwrap_or_default(),
                properties: &e["Properties"],
            })
            .collect();
        events.sort_by_key(|e| e.name);
        events
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::Template;

    const TEMPLATE: &str = r#"
Globals:
  Function:
    Timeout: 10
    Environment:
      Variables: { TABLE_NAME: !Ref Table, RUST_LOG: info }
Resources:
  Fanout:
    Type: AWS::Serverless::Function
    Metadata: { BuildMethod: rust-cargolambda, BuildProperties: { Binary: bank-fanout } }
    Properties:
      Timeout: 30
      Environment:
        Variables: { RUST_LOG: debug, EXTRA: x }
      Events:
        Ins: { Type: DynamoDB, Properties: { Stream: !GetAtt Table.StreamArn } }
        Tick: { Type: Schedule, Properties: { Schedule: rate(5 minutes) } }
  Plain:
    Type: AWS::Serverless::Function
    Properties: {}
  Table:
    Type: AWS::DynamoDB::Table
"#;

    #[test]
    fn applies_globals_and_lists_events() {
        let fns = Template::parse(TEMPLATE).unwrap().functions();
        assert_eq!(fns.len(), 2);
        let f = &fns[0];
        assert_eq!(f.id, "Fanout");
        assert_eq!(f.binary.as_deref(), Some("bank-fanout"));
        assert_eq!(f.build_method.as_deref(), Some("rust-cargolambda"));
        assert_eq!(f.timeout(), Some(30));
        assert_eq!(
            serde_json::Value::Object(f.env()),
            json!({"TABLE_NAME": {"Ref": "Table"}, "RUST_LOG": "debug", "EXTRA": "x"})
        );
        let events: Vec<_> = f.events().iter().map(|e| (e.name, e.kind)).collect();
        assert_eq!(events, [("Ins", "DynamoDB"), ("Tick", "Schedule")]);
        let stream = &f.events()[0].properties["Stream"];
        assert_eq!(crate::get_att(stream), Some(("Table", "StreamArn")));
        let plain = &fns[1];
        assert_eq!(plain.binary, None);
        assert_eq!(plain.timeout(), Some(10));
        assert_eq!(plain.env()["TABLE_NAME"], json!({"Ref": "Table"}));
        assert_eq!(plain.events().len(), 0);
    }
}
