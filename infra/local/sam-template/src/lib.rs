//! The one reader of the SAM template (`infra/template.yaml`) for the local stack and
//! the tests: the testkit creates the tables from it, the event pump wires the stream
//! and schedule events from it, and the infra tests check it against the workspace.
//!
//! The template is read once into JSON the way CloudFormation tooling sees it (see
//! [`intrinsic`]: `!GetAtt A.B` is `{"Fn::GetAtt": ["A", "B"]}`), so every caller works
//! on one shape whichever syntax the template uses.

pub mod functions;
pub mod intrinsic;
pub mod queues;
pub mod tables;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use functions::{Event, Function};
pub use intrinsic::get_att;
pub use queues::{QueueSpec, Redrive};
pub use tables::{IndexSpec, KeySpec, TableSpec};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template is not valid YAML: {0}")]
    Yaml(#[from] serde_norway::Error),
    #[error("template: {0}")]
    Shape(String),
    #[error("table {table}: {message}")]
    Table { table: String, message: String },
    #[error("queue {queue}: {message}")]
    Queue { queue: String, message: String },
    #[error("template has no resource {0}")]
    MissingResource(String),
}

/// The parsed template, intrinsic functions in their JSON form.
#[derive(Debug, Clone)]
pub struct Template {
    root: Value,
}

impl Template {
    /// `infra/template.yaml` of this workspace.
    pub fn default_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml")
    }

    pub fn load_default() -> Result<Self, TemplateError> {
        Self::load(&Self::default_path())
    }

    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let yaml: serde_norway::Value = serde_norway::from_str(text)?;
        let root = intrinsic::to_json(yaml).map_err(TemplateError::Shape)?;
        Ok(Self { root })
    }

    /// The whole template as JSON.
    pub fn json(&self) -> &Value {
        &self.root
    }

    /// `Resources` by logical id (empty if the template has none).
    pub fn resource_map(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.root["Resources"]
            .as_object()
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
    }

    /// Resources as (logical id, type, properties).
    pub fn resources(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.resource_map().iter().filter_map(|(id, res)| {
            Some((id.as_str(), res.get("Type")?.as_str()?, &res["Properties"]))
        })
    }

    /// The properties of resource `logical_id`.
    pub fn resource(&self, logical_id: &str) -> Result<&Value, TemplateError> {
        self.resources()
            .find(|(id, _, _)| *id == logical_id)
            .map(|(_, _, props)| props)
            .ok_or_else(|| TemplateError::MissingResource(logical_id.to_owned()))
    }

    /// Every `AWS::DynamoDB::Table` of the template.
    pub fn tables(&self) -> Result<Vec<TableSpec>, TemplateError> {
        self.resources()
            .filter(|(_, ty, _)| *ty == "AWS::DynamoDB::Table")
            .map(|(id, _, props)| TableSpec::from_properties(id, props))
            .collect()
    }

    pub fn table(&self, logical_id: &str) -> Result<TableSpec, TemplateError> {
        TableSpec::from_properties(logical_id, self.resource(logical_id)?)
    }

    /// Every `AWS::SQS::Queue` of the template, by logical id.
    pub fn queues(&self) -> Result<Vec<QueueSpec>, TemplateError> {
        self.resources()
            .filter(|(_, ty, _)| *ty == "AWS::SQS::Queue")
            .map(|(id, _, props)| QueueSpec::from_properties(id, props))
            .collect()
    }

    pub fn queue(&self, logical_id: &str) -> Result<QueueSpec, TemplateError> {
        QueueSpec::from_properties(logical_id, self.resource(logical_id)?)
    }

    /// Every `AWS::Serverless::Function`, with `Globals.Function` applied, by logical id.
    pub fn functions(&self) -> Vec<Function> {
        let globals = &self.root["Globals"]["Function"];
        let mut out: Vec<_> = self
            .resource_map()
            .iter()
            .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
            .map(|(id, r)| Function::new(id, r, globals))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}
