//! Checks HTTP requests and responses against an OpenAPI 3.1 document: the v1 contract
//! `functions/openapi.yaml` ([`OpenApi::shared`]), the bank protocol
//! `functions/bank-protocol.yaml` ([`OpenApi::bank_protocol`]), or any other file
//! ([`OpenApi::load`]).
//!
//! ```no_run
//! use testkit::openapi::OpenApi;
//! let spec = OpenApi::shared();
//! let body = serde_json::json!({"banks": []});
//! spec.check_response("GET", "/v1/banks", 200, Some(&body)).unwrap();
//! ```
//!
//! A concrete path (`/v1/card-queries/01J...`) is matched to its template
//! (`/v1/card-queries/{query_id}`); the status must be documented for the operation
//! exactly (`default` does not count); a documented JSON body is validated with
//! `jsonschema` (draft 2020-12, formats asserted) and a response documented without
//! content must have no body.
//!
//! `$ref`s resolve because every schema is compiled inside a copy of the whole OpenAPI
//! document: the document becomes the root schema, the schema to check is placed under
//! `$defs` and referenced from the root, so `#/components/...` pointers resolve against
//! the document itself. Compiled validators are cached per schema location.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::{Draft, Validator};
use serde_json::{Map, Value};

/// The HTTP methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Where, inside the root schema built for one check, the checked schema is placed.
const TARGET_DEF: &str = "__openapi_check_target";

const JSON: &str = "application/json";

/// Bodies quoted in error messages are cut to this many characters.
const MAX_QUOTED_BODY: usize = 4000;

#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the OpenAPI document is not valid YAML: {0}")]
    Yaml(#[from] serde_norway::Error),
    /// The document itself is unusable at the given place (bad `$ref`, schema that does
    /// not compile, missing section, ...).
    #[error("the OpenAPI document is unusable: {0}")]
    Document(String),
    #[error("no path of the OpenAPI document matches {path}")]
    UnknownPath { path: String },
    #[error("{method} {template} is not documented (documented methods: {documented})")]
    UnknownOperation {
        method: String,
        template: String,
        documented: String,
    },
    #[error("{method} {template}: status {status} is not documented (documented: {documented})")]
    UndocumentedStatus {
        method: String,
        template: String,
        status: u16,
        documented: String,
    },
    #[error("{method} {template} {status}: the contract documents a JSON body, but there is none")]
    MissingBody {
        method: String,
        template: String,
        status: u16,
    },
    #[error(
        "{method} {template} {status}: the contract documents no body, but there is one: {body}"
    )]
    UnexpectedBody {
        method: String,
        template: String,
        status: u16,
        body: String,
    },
    /// The body does not match its schema; `errors` holds one line per validation error,
    /// each with its instance path.
    #[error(
        "{context}: the body does not match {schema} ({} error{}):\n{}\nbody: {body}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        errors.join("\n")
    )]
    Invalid {
        /// `METHOD /template STATUS`, `METHOD /template request body` or `schema NAME`.
        context: String,
        /// JSON pointer of the schema in the document.
        schema: String,
        errors: Vec<String>,
        body: String,
    },
}

/// The loaded contract, with a cache of compiled validators.
pub struct OpenApi {
    doc: Value,
    validators: Mutex<HashMap<String, Arc<Validator>>>,
}

impl std::fmt::Debug for OpenApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenApi")
            .field("openapi", &self.doc.get("openapi"))
            .field("paths", &self.templates())
            .finish_non_exhaustive()
    }
}

/// A concrete request resolved to its documented operation.
struct Operation<'a> {
    method: String,
    template: &'a str,
    /// JSON pointer of the operation object.
    pointer: String,
    object: &'a Map<String, Value>,
}

impl OpenApi {
    /// Path of the contract in the workspace: `functions/openapi.yaml`.
    pub fn default_path() -> PathBuf {
        crate::workspace_root().join("functions/openapi.yaml")
    }

    /// Path of the bank protocol in the workspace: `functions/bank-protocol.yaml`. Its
    /// bank-side paths (`/card-inquiries`, `/card-disputes`) are relative to a bank's
    /// endpoint: check them with that prefix removed.
    pub fn bank_protocol_path() -> PathBuf {
        crate::workspace_root().join("functions/bank-protocol.yaml")
    }

    /// Loads `functions/openapi.yaml` from the workspace root.
    pub fn load_default() -> Result<Self, OpenApiError> {
        Self::load(&Self::default_path())
    }

    /// Loads an OpenAPI 3.1 document (YAML or JSON) from a file.
    pub fn load(path: &Path) -> Result<Self, OpenApiError> {
        let text = std::fs::read_to_string(path).map_err(|source| OpenApiError::Read {
            path: path.to_owned(),
            source,
        })?;
        let doc: Value = serde_norway::from_str(&text)?;
        Self::from_value(doc)
    }

    /// Wraps an already parsed document.
    pub fn from_value(doc: Value) -> Result<Self, OpenApiError> {
        let version = doc
            .get("openapi")
            .and_then(Value::as_str)
            .ok_or_else(|| OpenApiError::Document("no `openapi` version string".into()))?;
        if !version.starts_with("3.1.") {
            return Err(OpenApiError::Document(format!(
                "OpenAPI {version} is not 3.1.x (schemas are checked as JSON Schema 2020-12)"
            )));
        }
        if !doc.get("paths").is_some_and(Value::is_object) {
            return Err(OpenApiError::Document("no `paths` object".into()));
        }
        if doc.get("$defs").is_some() {
            return Err(OpenApiError::Document(
                "a root `$defs` would clash with how schemas are compiled".into(),
            ));
        }
        Ok(Self {
            doc,
            validators: Mutex::new(HashMap::new()),
        })
    }

    /// The default document, loaded once per process. Panics if it does not load: a
    /// broken contract should fail every test that relies on it, loudly.
    pub fn shared() -> &'static OpenApi {
        static SHARED: OnceLock<OpenApi> = OnceLock::new();
        SHARED.get_or_init(|| {
            Self::load_default().unwrap_or_else(|e| panic!("functions/openapi.yaml: {e}"))
        })
    }

    /// The contract as a stack serving this service configuration states it: `BankCode`
    /// lists that configuration's banks, in its order (the shipped document lists the
    /// shipped configuration's, which `the_rules_that_are_not_state_are_in_the_schema`
    /// keeps in step). Kept for the rest of the process, like [`OpenApi::shared`]: one
    /// per stack a test starts with a configuration of its own.
    pub fn for_configuration(config: &str) -> Result<&'static OpenApi, OpenApiError> {
        let parsed = shared::config::ServiceConfig::parse(config)
            .map_err(|e| OpenApiError::Document(format!("service configuration: {e}")))?;
        let mut doc = Self::shared().doc.clone();
        let codes: Vec<Value> = parsed
            .banks
            .all()
            .iter()
            .map(|b| Value::String(b.code.to_string()))
            .collect();
        *doc.pointer_mut("/components/schemas/BankCode/enum")
            .ok_or_else(|| OpenApiError::Document("no BankCode enum".into()))? =
            Value::Array(codes);
        Ok(Box::leak(Box::new(Self::from_value(doc)?)))
    }

    /// The bank protocol, loaded once per process; panics like [`OpenApi::shared`].
    pub fn bank_protocol() -> &'static OpenApi {
        static BANK: OnceLock<OpenApi> = OnceLock::new();
        BANK.get_or_init(|| {
            Self::load(&Self::bank_protocol_path())
                .unwrap_or_else(|e| panic!("functions/bank-protocol.yaml: {e}"))
        })
    }

    /// The parsed document.
    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// The documented path templates, in document order.
    pub fn templates(&self) -> Vec<&str> {
        self.paths().keys().map(String::as_str).collect()
    }

    /// Every documented operation as `(METHOD, template)`, e.g.
    /// `("GET", "/v1/card-queries/{query_id}")`.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (template, item) in self.paths() {
            for method in METHODS {
                if item.get(method).is_some() {
                    out.push((method.to_ascii_uppercase(), template.clone()));
                }
            }
        }
        out
    }

    /// The statuses documented for an operation (concrete or template path), sorted.
    pub fn documented_statuses(&self, method: &str, path: &str) -> Result<Vec<u16>, OpenApiError> {
        let op = self.operation(method, path)?;
        let responses = self.responses_of(&op)?;
        let mut statuses: Vec<u16> = responses.keys().filter_map(|k| k.parse().ok()).collect();
        statuses.sort_unstable();
        Ok(statuses)
    }

    /// Checks a response against the contract.
    ///
    /// `path` is the concrete request path (a query string is ignored). The status must
    /// be documented for the operation (exactly; a `default` response does not count). If
    /// the documented response has `application/json` content, `body` must be present and
    /// valid against its schema; if it has no content (204), `body` must be `None`.
    ///
    /// A documented path called with an undocumented method may only answer 405, checked
    /// against `components.responses.MethodNotAllowed`. Unknown paths always fail.
    pub fn check_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: Option<&Value>,
    ) -> Result<(), OpenApiError> {
        let (template, item) = self.match_path(path)?;
        let lower = method.to_ascii_lowercase();
        let (context_method, response_pointer) = match item.get(&lower) {
            Some(Value::Object(_)) => {
                let op = self.operation(method, path)?;
                let responses = self.responses_of(&op)?;
                let key = status.to_string();
                if !responses.contains_key(&key) {
                    return Err(OpenApiError::UndocumentedStatus {
                        method: op.method,
                        template: template.to_owned(),
                        status,
                        documented: join_keys(responses.keys().filter(|k| *k != "default")),
                    });
                }
                (
                    op.method.clone(),
                    format!("{}/responses/{}", op.pointer, escape(&key)),
                )
            }
            Some(_) => {
                return Err(OpenApiError::Document(format!(
                    "{lower} of {template} is not an operation object"
                )))
            }
            None if status == 405 => (
                method.to_ascii_uppercase(),
                "/components/responses/MethodNotAllowed".to_owned(),
            ),
            None => {
                return Err(OpenApiError::UnknownOperation {
                    method: method.to_ascii_uppercase(),
                    template: template.to_owned(),
                    documented: join_keys(METHODS.iter().filter(|m| item.contains_key(**m))),
                })
            }
        };
        let (response_pointer, response) = self.follow_ref(&response_pointer)?;
        let context = format!("{context_method} {template} {status}");
        match json_schema_pointer(&response_pointer, response)? {
            Some(schema_pointer) => match body {
                Some(body) => self.validate(&context, &schema_pointer, body),
                None => Err(OpenApiError::MissingBody {
                    method: context_method,
                    template: template.to_owned(),
                    status,
                }),
            },
            None => match body {
                None => Ok(()),
                Some(body) => Err(OpenApiError::UnexpectedBody {
                    method: context_method,
                    template: template.to_owned(),
                    status,
                    body: quote(body),
                }),
            },
        }
    }

    /// Whether the operation documents a request body (false for unknown operations).
    pub fn documents_request_body(&self, method: &str, path: &str) -> bool {
        self.operation(method, path)
            .is_ok_and(|op| op.object.get("requestBody").is_some())
    }

    /// Checks a request body against the operation's `requestBody` schema (useful to keep
    /// test fixtures and the bank simulator honest).
    pub fn check_request_body(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<(), OpenApiError> {
        let op = self.operation(method, path)?;
        let context = format!("{} {} request body", op.method, op.template);
        let pointer = format!("{}/requestBody", op.pointer);
        if op.object.get("requestBody").is_none() {
            return Err(OpenApiError::Document(format!(
                "{context}: none is documented"
            )));
        }
        let (pointer, request_body) = self.follow_ref(&pointer)?;
        let schema_pointer = json_schema_pointer(&pointer, request_body)?.ok_or_else(|| {
            OpenApiError::Document(format!("{context}: no {JSON} content is documented"))
        })?;
        self.validate(&context, &schema_pointer, body)
    }

    /// Checks a value against `#/components/schemas/{name}` (e.g. `BankInquiry`,
    /// `BankAnswer`, `Error`).
    pub fn check_schema(&self, name: &str, value: &Value) -> Result<(), OpenApiError> {
        let pointer = format!("/components/schemas/{}", escape(name));
        if self.doc.pointer(&pointer).is_none() {
            return Err(OpenApiError::Document(format!("no schema {pointer}")));
        }
        self.validate(&format!("schema {name}"), &pointer, value)
    }

    // ---- internals --------------------------------------------------------------

    fn paths(&self) -> &Map<String, Value> {
        // `from_value` guarantees the object.
        self.doc["paths"].as_object().expect("paths is an object")
    }

    /// Finds the template matching a concrete path (`{param}` segments non-empty). A
    /// literal segment wins over a templated one (OpenAPI: concrete paths before
    /// templated ones), as `matchit` ranks them.
    fn match_path(&self, path: &str) -> Result<(&str, &Map<String, Value>), OpenApiError> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let mut router = matchit::Router::new();
        for (template, item) in self.paths() {
            let item = item.as_object().ok_or_else(|| {
                OpenApiError::Document(format!("path item {template} is not an object"))
            })?;
            router
                .insert(template.as_str(), (template.as_str(), item))
                .map_err(|e| OpenApiError::Document(format!("path {template}: {e}")))?;
        }
        router
            .at(path)
            .map(|m| *m.value)
            .map_err(|_| OpenApiError::UnknownPath {
                path: path.to_owned(),
            })
    }

    fn operation(&self, method: &str, path: &str) -> Result<Operation<'_>, OpenApiError> {
        let (template, item) = self.match_path(path)?;
        let lower = method.to_ascii_lowercase();
        let object = match item.get(&lower) {
            Some(Value::Object(object)) if METHODS.contains(&lower.as_str()) => object,
            _ => {
                return Err(OpenApiError::UnknownOperation {
                    method: method.to_ascii_uppercase(),
                    template: template.to_owned(),
                    documented: join_keys(METHODS.iter().filter(|m| item.contains_key(**m))),
                })
            }
        };
        Ok(Operation {
            method: lower.to_ascii_uppercase(),
            template,
            pointer: format!("/paths/{}/{}", escape(template), lower),
            object,
        })
    }

    fn responses_of<'a>(&self, op: &Operation<'a>) -> Result<&'a Map<String, Value>, OpenApiError> {
        op.object
            .get("responses")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                OpenApiError::Document(format!("{} {} has no responses", op.method, op.template))
            })
    }

    /// Follows a chain of `{"$ref": "#/..."}` objects (responses, request bodies) from a
    /// pointer; returns the final pointer and object.
    fn follow_ref(&self, pointer: &str) -> Result<(String, &Value), OpenApiError> {
        let mut pointer = pointer.to_owned();
        for _ in 0..16 {
            let value = self
                .doc
                .pointer(&pointer)
                .ok_or_else(|| OpenApiError::Document(format!("nothing at #{pointer}")))?;
            match value.get("$ref") {
                Some(Value::String(target)) => {
                    pointer = local_ref_pointer(target)?;
                }
                Some(_) => {
                    return Err(OpenApiError::Document(format!(
                        "#{pointer}: $ref is not a string"
                    )))
                }
                None => return Ok((pointer, value)),
            }
        }
        Err(OpenApiError::Document(format!(
            "#{pointer}: $ref chain too long"
        )))
    }

    /// The compiled validator for the schema at `pointer`, from the cache or compiled now.
    fn validator(&self, pointer: &str) -> Result<Arc<Validator>, OpenApiError> {
        if let Some(v) = self.cache().get(pointer) {
            return Ok(Arc::clone(v));
        }
        let schema = self
            .doc
            .pointer(pointer)
            .ok_or_else(|| OpenApiError::Document(format!("no schema at #{pointer}")))?;
        let mut root = self.doc.as_object().cloned().unwrap_or_default();
        root.insert(
            "$schema".into(),
            Value::from("https://json-schema.org/draft/2020-12/schema"),
        );
        let mut defs = Map::new();
        defs.insert(TARGET_DEF.into(), schema.clone());
        root.insert("$defs".into(), Value::Object(defs));
        root.insert("$ref".into(), Value::from(format!("#/$defs/{TARGET_DEF}")));
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .should_ignore_unknown_formats(false)
            .build(&Value::Object(root))
            .map_err(|e| {
                OpenApiError::Document(format!("the schema at #{pointer} does not compile: {e}"))
            })?;
        let validator = Arc::new(validator);
        self.cache()
            .insert(pointer.to_owned(), Arc::clone(&validator));
        Ok(validator)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Validator>>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.validators
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn validate(&self, context: &str, pointer: &str, body: &Value) -> Result<(), OpenApiError> {
        let validator = self.validator(pointer)?;
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|error| {
                let at = error.instance_path().as_str();
                let at = if at.is_empty() { "(root)" } else { at };
                let mut line = format!("  at {at}: {error}");
                let _ = write!(
                    line,
                    " [schema {}]",
                    schema_location(error.schema_path().as_str(), pointer)
                );
                line
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(OpenApiError::Invalid {
                context: context.to_owned(),
                schema: format!("#{pointer}"),
                errors,
                body: quote(body),
            })
        }
    }
}

/// The pointer of the `application/json` schema of a response or request body object,
/// or `None` if it has no content at all.
fn json_schema_pointer(pointer: &str, object: &Value) -> Result<Option<String>, OpenApiError> {
    let Some(content) = object.get("content") else {
        return Ok(None);
    };
    let content = content
        .as_object()
        .ok_or_else(|| OpenApiError::Document(format!("#{pointer}/content is not an object")))?;
    if content.is_empty() {
        return Ok(None);
    }
    let media = content.get(JSON).ok_or_else(|| {
        OpenApiError::Document(format!(
            "#{pointer}/content documents {} but not {JSON}",
            join_keys(content.keys())
        ))
    })?;
    if media.get("schema").is_none() {
        return Err(OpenApiError::Document(format!(
            "#{pointer}/content/{JSON} has no schema"
        )));
    }
    Ok(Some(format!("{pointer}/content/{}/schema", escape(JSON))))
}

/// `#/a/b` → `/a/b`, refusing anything that is not a local JSON pointer.
fn local_ref_pointer(reference: &str) -> Result<String, OpenApiError> {
    let pointer = reference
        .strip_prefix('#')
        .filter(|p| p.is_empty() || p.starts_with('/'))
        .ok_or_else(|| {
            OpenApiError::Document(format!("$ref {reference} is not a local JSON pointer"))
        })?;
    Ok(percent_decode(pointer))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Escapes one JSON pointer token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The document location of the keyword behind an error: the checked schema sits under
/// `$defs` of the compiled root, everything it references is at its own place.
fn schema_location(schema_path: &str, target_pointer: &str) -> String {
    let placed = format!("/$defs/{TARGET_DEF}");
    match schema_path.strip_prefix(&placed) {
        Some(rest) => format!("#{target_pointer}{rest}"),
        None => format!("#{schema_path}"),
    }
}

fn join_keys<'a>(keys: impl Iterator<Item = impl AsRef<str> + 'a>) -> String {
    let keys: Vec<String> = keys.map(|k| k.as_ref().to_ascii_uppercase()).collect();
    if keys.is_empty() {
        "none".to_owned()
    } else {
        keys.join(", ")
    }
}

fn quote(body: &Value) -> String {
    let text = body.to_string();
    if text.chars().count() <= MAX_QUOTED_BODY {
        text
    } else {
        let cut: String = text.chars().take(MAX_QUOTED_BODY).collect();
        format!("{cut}... ({} characters in all)", text.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const QID: &str = "01JDQ8Z6X3M4N5P6Q7R8S9T0VW";
    const QID2: &str = "01JDQ8Z6X3M4N5P6Q7R8S9T0VX";
    const VID: &str = "01JDQ8Z6X3M4N5P6Q7R8S9T0VY";
    const IID: &str = "01JDQ8Z6X3M4N5P6Q7R8S9T0VZ";

    fn spec() -> &'static OpenApi {
        OpenApi::shared()
    }

    #[track_caller]
    fn ok(method: &str, path: &str, status: u16, body: Option<Value>) {
        if let Err(e) = spec().check_response(method, path, status, body.as_ref()) {
            panic!("expected {method} {path} {status} to pass:\n{e}");
        }
    }

    #[track_caller]
    fn invalid(method: &str, path: &str, status: u16, body: Value) -> Vec<String> {
        match spec().check_response(method, path, status, Some(&body)) {
            Err(OpenApiError::Invalid { errors, .. }) => errors,
            other => {
                panic!("expected a schema violation for {method} {path} {status}, got {other:?}")
            }
        }
    }

    fn record(report_status: &str) -> Value {
        let (status, generated, expires) = match report_status {
            "PENDING" => ("PENDING", Value::Null, Value::Null),
            "FAILED" => ("FAILED", Value::Null, Value::Null),
            _ => (
                "READY",
                json!("2026-11-28T13:20:25Z"),
                json!("2026-12-05T13:20:25Z"),
            ),
        };
        json!({
            "query_id": QID,
            "status": status,
            "report_status": report_status,
            "submitted_at": "2026-11-28T13:20:21Z",
            "report_due_by": "2026-11-29T13:20:21Z",
            "banks": ["ICBC", "CMB"],
            "report_generated_at": generated,
            "report_expires_at": expires,
            "last_viewed_at": null,
            "report_deleted_at": null,
            "views": [],
            "view_count": 0
        })
    }

    fn report() -> Value {
        json!({
            "query_id": QID,
            "generated_at": "2026-11-28T13:20:25Z",
            "expires_at": "2026-12-05T13:20:25Z",
            "summary": {
                "total_cards": 3, "debit_cards": 2, "credit_cards": 1,
                "banks": [
                    {"bank_code": "ICBC", "bank_name": "工商银行", "status": "RESPONDED",
                     "debit_cards": 2, "credit_cards": 1},
                    {"bank_code": "CMB", "bank_name": "招商银行", "status": "NO_RESPONSE",
                     "debit_cards": 0, "credit_cards": 0}
                ]
            },
            "cards": [
                {"bank_code": "ICBC", "bank_name": "工商银行", "kind": "DEBIT",
                 "masked_number": "6222 **** **** 1234", "card_id": "ICBC-2", "disputable": true},
                {"bank_code": "ICBC", "bank_name": "工商银行", "kind": "DEBIT",
                 "masked_number": "6212 **** **** 0001", "card_id": "ICBC-1", "disputable": true},
                {"bank_code": "ICBC", "bank_name": "工商银行", "kind": "CREDIT",
                 "masked_number": "6258 **** **** 9876", "card_id": "ICBC-3", "disputable": false}
            ],
            "notices": ["报告内容以银行记录为准。"],
            "next_cursor": null,
            "cursor_expires_at": null
        })
    }

    fn error(code: &str) -> Value {
        json!({"error": {"code": code, "message": "explanation"}})
    }

    #[test]
    fn document_loads_and_is_3_1() {
        let spec = OpenApi::load_default().expect("functions/openapi.yaml loads");
        assert_eq!(spec.document()["openapi"], "3.1.0");
        let ops = spec.operations();
        for (m, p) in [
            ("GET", "/v1/banks"),
            ("GET", "/v1/eligibility"),
            ("POST", "/v1/verifications"),
            ("POST", "/v1/card-queries"),
            ("GET", "/v1/card-queries"),
            ("GET", "/v1/card-queries/{query_id}"),
            ("POST", "/v1/card-queries/{query_id}/report"),
            ("DELETE", "/v1/card-queries/{query_id}/report"),
            ("POST", "/v1/card-queries/{query_id}/disputes"),
            ("GET", "/v1/card-queries/{query_id}/disputes"),
            ("POST", "/v1/bank-callbacks/{bank_code}"),
        ] {
            assert!(
                ops.contains(&(m.to_owned(), p.to_owned())),
                "{m} {p} is documented"
            );
        }
        assert_eq!(ops.len(), 11, "{ops:?}");
    }

    /// The bank protocol loads like the contract, every schema in it compiles, and its
    /// `CardRef` pattern holds what the protocol says (no run of 6 digits).
    #[test]
    fn the_bank_protocol_loads_and_its_card_ref_pattern_holds() {
        let spec = OpenApi::load(&OpenApi::bank_protocol_path()).expect("bank-protocol.yaml loads");
        let mut ops = spec.operations();
        ops.sort();
        assert_eq!(
            ops,
            [
                ("POST".to_owned(), "/card-disputes".to_owned()),
                ("POST".to_owned(), "/card-inquiries".to_owned()),
                (
                    "POST".to_owned(),
                    "/v1/bank-callbacks/{bank_code}".to_owned()
                ),
            ]
        );
        let mut pointers = Vec::new();
        collect_schema_pointers(spec.document(), String::new(), &mut pointers);
        assert!(pointers.len() > 20, "found {} schemas", pointers.len());
        for pointer in &pointers {
            spec.validator(pointer)
                .unwrap_or_else(|e| panic!("{pointer}: {e}"));
        }
        let mut refs = Vec::new();
        collect_refs(spec.document(), &mut refs);
        for r in refs {
            let pointer = local_ref_pointer(&r).unwrap();
            assert!(
                spec.document().pointer(&pointer).is_some(),
                "dangling $ref {r}"
            );
        }
        for good in [
            "cr_abc",
            "a",
            "12345",
            "x12345y12345",
            "-_-",
            "ref-2026-11",
            &"a".repeat(64),
        ] {
            spec.check_schema("CardRef", &json!(good))
                .unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "",
            "123456",
            "cr_6222021234567891234",
            "a123456b",
            "has space",
            "é",
            "cr.1",
            &"a".repeat(65),
        ] {
            assert!(
                spec.check_schema("CardRef", &json!(bad)).is_err(),
                "{bad:?}"
            );
        }
        let card = json!({"kind": "DEBIT", "first4": "6222", "last4": "1234", "card_ref": "cr_x"});
        let answer = |status: &str, cards: Value| json!({"query_id": QID, "inquiry_id": IID, "status": status, "cards": cards});
        spec.check_schema("CardAnswer", &answer("FOUND", json!([card])))
            .unwrap();
        spec.check_schema("CardAnswer", &answer("NONE", json!([])))
            .unwrap();
        assert!(spec
            .check_schema("CardAnswer", &answer("FOUND", json!([])))
            .is_err());
        assert!(spec
            .check_schema("CardAnswer", &answer("NONE", json!([card])))
            .is_err());
        spec.check_response(
            "POST",
            "/card-disputes",
            200,
            Some(&json!({"dispute_id": QID, "case_id": "ICBC-CASE-000001", "status": "ACKNOWLEDGED"})),
        )
        .unwrap();
        spec.check_response(
            "POST",
            "/card-inquiries",
            401,
            Some(&json!({"error": "nonce already used"})),
        )
        .unwrap();
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shareable_between_threads() {
        assert_send_sync::<OpenApi>();
    }

    /// Every schema the document uses (responses, request bodies, webhooks, components)
    /// compiles, which also proves every `$ref` in them resolves.
    #[test]
    fn every_schema_compiles_and_every_ref_resolves() {
        let spec = spec();
        let mut pointers = Vec::new();
        collect_schema_pointers(spec.document(), String::new(), &mut pointers);
        assert!(pointers.len() > 40, "found {} schemas", pointers.len());
        for pointer in &pointers {
            spec.validator(pointer)
                .unwrap_or_else(|e| panic!("{pointer}: {e}"));
        }
        let mut refs = Vec::new();
        collect_refs(spec.document(), &mut refs);
        for r in refs {
            let pointer = local_ref_pointer(&r).unwrap();
            assert!(
                spec.document().pointer(&pointer).is_some(),
                "dangling $ref {r}"
            );
        }
    }

    fn collect_schema_pointers(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let here = format!("{at}/{}", escape(k));
                    if k == "schema" && v.is_object() {
                        out.push(here.clone());
                    } else if at == "/components/schemas" {
                        out.push(here.clone());
                        continue;
                    }
                    if k != "schema" {
                        collect_schema_pointers(v, here, out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    collect_schema_pointers(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    fn collect_refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(s)) => out.push(s.clone()),
                        _ => collect_refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    /// Every object schema we produce or accept is closed, and uses only known keywords.
    #[test]
    fn object_schemas_are_closed_and_keywords_known() {
        const KNOWN: &[&str] = &[
            "$ref",
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "enum",
            "const",
            "pattern",
            "format",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "uniqueItems",
            "minimum",
            "maximum",
            "allOf",
            "oneOf",
            "anyOf",
            "not",
            "if",
            "then",
            "else",
            "description",
            "examples",
            "title",
        ];
        fn walk(schema: &Value, at: &str) {
            let Some(map) = schema.as_object() else {
                return;
            };
            for k in map.keys() {
                assert!(KNOWN.contains(&k.as_str()), "{at}: unknown keyword {k}");
            }
            if map.get("type") == Some(&json!("object")) {
                assert_eq!(
                    map.get("additionalProperties"),
                    Some(&json!(false)),
                    "{at}: object schema is not closed"
                );
            }
            if let Some(Value::Object(props)) = map.get("properties") {
                for (k, v) in props {
                    walk(v, &format!("{at}/properties/{k}"));
                }
            }
            for key in ["items", "not", "if", "then", "else"] {
                if let Some(v) = map.get(key) {
                    walk(v, &format!("{at}/{key}"));
                }
            }
            for key in ["allOf", "oneOf", "anyOf"] {
                if let Some(Value::Array(vs)) = map.get(key) {
                    for (i, v) in vs.iter().enumerate() {
                        walk(v, &format!("{at}/{key}/{i}"));
                    }
                }
            }
        }
        let mut pointers = Vec::new();
        collect_schema_pointers(spec().document(), String::new(), &mut pointers);
        for p in pointers {
            walk(spec().document().pointer(&p).unwrap(), &p);
        }
    }

    #[test]
    fn every_error_code_is_documented_in_the_enum() {
        let codes = spec().document()["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(codes, 32);
    }

    #[test]
    fn valid_success_bodies_pass() {
        ok(
            "GET",
            "/v1/banks",
            200,
            Some(json!({"banks": [{"code": "ICBC", "name": "工商银行",
                "name_en": "Industrial and Commercial Bank of China", "service_phone": "95588"}]})),
        );
        ok(
            "GET",
            "/v1/eligibility",
            200,
            Some(json!({"real_name_verified": true, "in_pilot_region": true,
                "active_query_id": null, "next_allowed_at": null, "eligible": true,
                "agreement_version": "2026-11"})),
        );
        ok(
            "GET",
            "/v1/eligibility",
            200,
            Some(json!({"real_name_verified": true, "in_pilot_region": true,
                "active_query_id": QID, "next_allowed_at": "2026-12-05T13:20:25.123Z",
                "eligible": false, "agreement_version": "2026-11"})),
        );
        ok(
            "POST",
            "/v1/verifications",
            201,
            Some(
                json!({"verification_id": VID, "masked_phone": "138****8000",
                "expires_at": "2026-11-28T13:25:21Z"}),
            ),
        );
        ok(
            "POST",
            "/v1/card-queries",
            202,
            Some(json!({"query_id": QID, "status": "PENDING",
                "submitted_at": "2026-11-28T13:20:21Z", "report_due_by": "2026-11-29T13:20:21Z",
                "banks": ["ICBC", "CMB"]})),
        );
        ok(
            "GET",
            "/v1/card-queries",
            200,
            Some(json!({"queries": [record("PENDING"), record("READY"), record("EXPIRED")]})),
        );
        ok("GET", "/v1/card-queries", 200, Some(json!({"queries": []})));
        let mut detail = record("READY");
        detail["progress"] = json!([
            {"bank_code": "ICBC", "bank_name": "工商银行", "status": "RESPONDED"},
            {"bank_code": "CMB", "bank_name": "招商银行", "status": "NO_RESPONSE"}
        ]);
        ok("GET", &format!("/v1/card-queries/{QID}"), 200, Some(detail));
        ok(
            "POST",
            &format!("/v1/card-queries/{QID}/report"),
            200,
            Some(report()),
        );
        ok("POST", "/v1/bank-callbacks/ICBC", 204, None);
        // a query string is ignored when matching
        ok(
            "GET",
            "/v1/card-queries?x=1",
            200,
            Some(json!({"queries": []})),
        );
    }

    #[test]
    fn valid_error_bodies_pass() {
        let qpath = format!("/v1/card-queries/{QID}");
        let rpath = format!("/v1/card-queries/{QID}/report");
        ok("GET", "/v1/banks", 401, Some(error("UNAUTHENTICATED")));
        ok("GET", &qpath, 404, Some(error("NOT_FOUND")));
        ok(
            "POST",
            "/v1/verifications",
            403,
            Some(error("REGION_NOT_IN_PILOT")),
        );
        ok(
            "POST",
            "/v1/verifications",
            429,
            Some(
                json!({"error": {"code": "TOO_MANY_REQUESTS", "message": "wait",
                "retry_after_seconds": 42}}),
            ),
        );
        ok(
            "POST",
            "/v1/card-queries",
            400,
            Some(error("IDEMPOTENCY_KEY_REQUIRED")),
        );
        ok(
            "POST",
            "/v1/card-queries",
            409,
            Some(error("QUERY_IN_PROGRESS")),
        );
        ok(
            "POST",
            "/v1/card-queries",
            422,
            Some(error("IDEMPOTENCY_KEY_REUSED")),
        );
        ok(
            "POST",
            "/v1/card-queries",
            423,
            Some(
                json!({"error": {"code": "PAYMENT_PASSWORD_LOCKED", "message": "locked",
                "locked_until": "2026-11-29T13:20:25Z"}}),
            ),
        );
        ok(
            "POST",
            "/v1/card-queries",
            429,
            Some(
                json!({"error": {"code": "COOLDOWN_ACTIVE", "message": "later",
                "next_allowed_at": "2026-12-05T13:20:25Z"}}),
            ),
        );
        ok("POST", &rpath, 409, Some(error("REPORT_NOT_READY")));
        let mut page = report();
        page["next_cursor"] = json!("3.1796000000.abc");
        page["cursor_expires_at"] = json!("2026-11-28T13:35:25Z");
        ok("POST", &rpath, 200, Some(page));
        ok("POST", &rpath, 400, Some(error("INVALID_CURSOR")));
        ok("POST", &rpath, 403, Some(error("CURSOR_EXPIRED")));
        ok(
            "POST",
            &rpath,
            410,
            Some(
                json!({"error": {"code": "REPORT_EXPIRED", "message": "gone"},
                "query": record("EXPIRED")}),
            ),
        );
        ok("POST", &rpath, 422, Some(error("FACE_VERIFICATION_FAILED")));
        ok(
            "POST",
            "/v1/bank-callbacks/ICBC",
            401,
            Some(error("UNAUTHENTICATED")),
        );
        ok(
            "POST",
            "/v1/bank-callbacks/ICBC",
            409,
            Some(error("ALREADY_ANSWERED")),
        );
        ok(
            "POST",
            "/v1/bank-callbacks/ICBC",
            422,
            Some(error("CARD_NUMBER_REJECTED")),
        );
        ok(
            "POST",
            "/v1/bank-callbacks/ICBC",
            413,
            Some(error("PAYLOAD_TOO_LARGE")),
        );
        ok(
            "GET",
            "/v1/eligibility",
            503,
            Some(error("SERVICE_UNAVAILABLE")),
        );
        ok(
            "POST",
            "/v1/verifications",
            503,
            Some(
                json!({"error": {"code": "SMS_UNAVAILABLE", "message": "wait",
                "retry_after_seconds": 2}}),
            ),
        );
        ok(
            "POST",
            "/v1/verifications",
            503,
            Some(error("SERVICE_UNAVAILABLE")),
        );
        ok("GET", "/v1/card-queries", 500, Some(error("INTERNAL")));
        // undocumented method on a documented path: 405 only
        ok(
            "DELETE",
            "/v1/banks",
            405,
            Some(error("METHOD_NOT_ALLOWED")),
        );
    }

    #[test]
    fn extra_field_fails() {
        let mut body = report();
        body["summary"]["banks"][0]["extra"] = json!(1);
        let errors = invalid("POST", &format!("/v1/card-queries/{QID}/report"), 200, body);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("/summary/banks/0") && e.contains("extra")),
            "{errors:?}"
        );
        let mut body = error("NOT_FOUND");
        body["error"]["detail"] = json!("x");
        invalid("GET", &format!("/v1/card-queries/{QID}"), 404, body);
        let mut detail = record("READY");
        detail["progress"] = json!([]);
        detail["secret"] = json!(true);
        invalid("GET", &format!("/v1/card-queries/{QID}"), 200, detail);
    }

    #[test]
    fn wrong_enum_fails() {
        // through two levels of $ref: Report -> ReportSummary -> ReportBankSummary -> ReportBankStatus
        let mut body = report();
        body["summary"]["banks"][1]["status"] = json!("PENDING");
        let errors = invalid("POST", &format!("/v1/card-queries/{QID}/report"), 200, body);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("  at /summary/banks/1/status:")),
            "{errors:?}"
        );
        let mut body = report();
        body["cards"][0]["kind"] = json!("PREPAID");
        invalid("POST", &format!("/v1/card-queries/{QID}/report"), 200, body);
        // an error code from the shared enum, but not one this status may carry
        invalid("POST", "/v1/card-queries", 409, error("REPORT_NOT_READY"));
        // a page always says whether another follows
        let mut page = report();
        page.as_object_mut().unwrap().remove("next_cursor");
        invalid("POST", &format!("/v1/card-queries/{QID}/report"), 200, page);
        invalid(
            "POST",
            &format!("/v1/card-queries/{QID}/report"),
            403,
            error("NOT_REAL_NAME_VERIFIED"),
        );
        // not in the enum at all
        invalid("GET", "/v1/banks", 401, error("UNAUTHORIZED"));
        // the SMS channel's 503 says how long to wait, and only code requests give it
        invalid("POST", "/v1/verifications", 503, error("SMS_UNAVAILABLE"));
        invalid(
            "POST",
            "/v1/card-queries",
            503,
            json!({"error": {"code": "SMS_UNAVAILABLE", "message": "wait",
                "retry_after_seconds": 2}}),
        );
    }

    #[test]
    fn missing_required_field_fails() {
        let mut body = record("READY");
        body.as_object_mut().unwrap().remove("last_viewed_at");
        let errors = invalid("GET", "/v1/card-queries", 200, json!({"queries": [body]}));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("/queries/0") && e.contains("last_viewed_at")),
            "{errors:?}"
        );
        // COOLDOWN_ACTIVE needs next_allowed_at
        invalid("POST", "/v1/card-queries", 429, error("COOLDOWN_ACTIVE"));
        // 410 needs the query record
        invalid(
            "POST",
            &format!("/v1/card-queries/{QID}/report"),
            410,
            error("REPORT_EXPIRED"),
        );
    }

    #[test]
    fn formats_and_patterns_are_enforced() {
        let base = json!({"verification_id": VID, "masked_phone": "138****8000",
            "expires_at": "2026-11-28T13:25:21Z"});
        for (field, bad) in [
            ("expires_at", json!("2026-13-45T13:25:21Z")), // not a date-time
            ("expires_at", json!("2026-11-28T21:25:21+08:00")), // not UTC
            ("verification_id", json!("01jdq8z6x3m4n5p6q7r8s9t0vy")), // lower case
            ("verification_id", json!("01JDQ8Z6X3M4N5P6Q7R8S9T0VU")), // U is not Crockford
            ("masked_phone", json!("13800138000")),
        ] {
            let mut body = base.clone();
            body[field] = bad;
            invalid("POST", "/v1/verifications", 201, body);
        }
        let mut body = report();
        body["cards"][0]["masked_number"] = json!("6222 1234 5678 1234");
        invalid("POST", &format!("/v1/card-queries/{QID}/report"), 200, body);
        // next_allowed_at is only for COOLDOWN_ACTIVE
        invalid(
            "GET",
            "/v1/banks",
            401,
            json!({"error": {"code": "UNAUTHENTICATED", "message": "x",
                "next_allowed_at": "2026-12-05T13:20:25Z"}}),
        );
    }

    #[test]
    fn undocumented_status_fails() {
        let err = spec()
            .check_response("GET", "/v1/banks", 404, Some(&error("NOT_FOUND")))
            .unwrap_err();
        assert!(
            matches!(err, OpenApiError::UndocumentedStatus { status: 404, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("200"), "{err}");
        let err = spec()
            .check_response("POST", "/v1/card-queries", 200, Some(&record("PENDING")))
            .unwrap_err();
        assert!(
            matches!(err, OpenApiError::UndocumentedStatus { .. }),
            "{err}"
        );
        // an undocumented method answering anything but 405
        let err = spec()
            .check_response("DELETE", "/v1/banks", 200, None)
            .unwrap_err();
        assert!(
            matches!(err, OpenApiError::UnknownOperation { .. }),
            "{err}"
        );
    }

    #[test]
    fn unknown_path_fails() {
        for path in [
            "/v1/nope",
            "/v1/card-queries/",
            &format!("/v1/card-queries/{QID}/report/extra"),
            "/v2/banks",
            "v1/banks",
        ] {
            let err = spec()
                .check_response("GET", path, 404, Some(&error("NOT_FOUND")))
                .unwrap_err();
            assert!(
                matches!(err, OpenApiError::UnknownPath { .. }),
                "{path}: {err}"
            );
        }
    }

    #[test]
    fn body_presence_must_match_the_contract() {
        let err = spec()
            .check_response("POST", "/v1/bank-callbacks/ICBC", 204, Some(&json!({})))
            .unwrap_err();
        assert!(matches!(err, OpenApiError::UnexpectedBody { .. }), "{err}");
        let err = spec()
            .check_response("GET", "/v1/banks", 200, None)
            .unwrap_err();
        assert!(matches!(err, OpenApiError::MissingBody { .. }), "{err}");
    }

    #[test]
    fn error_message_lists_every_error_with_its_path() {
        let mut body = report();
        body["cards"][0]["kind"] = json!("PREPAID");
        body["summary"]["total_cards"] = json!(-1);
        body.as_object_mut().unwrap().remove("notices");
        let err = spec()
            .check_response(
                "POST",
                &format!("/v1/card-queries/{QID}/report"),
                200,
                Some(&body),
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("at /cards/0/kind"), "{text}");
        assert!(text.contains("at /summary/total_cards"), "{text}");
        assert!(
            text.contains("at (root)") && text.contains("notices"),
            "{text}"
        );
        assert!(text.contains("3 errors"), "{text}");
        assert!(
            text.contains("[schema #/components/schemas/CardKind/enum]"),
            "{text}"
        );
        // inline schemas are located in the document too
        let err = spec()
            .check_response("POST", "/v1/card-queries", 409, Some(&error("NOT_FOUND")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[schema #/paths/~1v1~1card-queries/post/responses/409/content/application~1json/schema/allOf/1/"),
            "{err}"
        );
    }

    #[test]
    fn templates_and_statuses() {
        assert_eq!(
            spec()
                .documented_statuses("POST", &format!("/v1/card-queries/{QID2}/report"))
                .unwrap(),
            vec![200, 400, 401, 403, 404, 409, 410, 413, 415, 422, 500, 503]
        );
        assert!(spec()
            .templates()
            .contains(&"/v1/bank-callbacks/{bank_code}"));
    }

    #[test]
    fn request_bodies_and_components() {
        let spec = spec();
        spec.check_request_body(
            "POST",
            "/v1/card-queries",
            &json!({"banks": ["ICBC"], "consent": {"agreement_version": "2026-11", "accepted": true},
                "verification": {"verification_id": VID, "sms_code": "123456"},
                "face_token": "tok", "payment_password": "147258"}),
        )
        .unwrap();
        assert!(spec
            .check_request_body(
                "POST",
                "/v1/card-queries",
                &json!({"banks": ["ICBC", "ICBC"], "consent": {"agreement_version": "2026-11", "accepted": true},
                    "verification": {"verification_id": VID, "sms_code": "123456"},
                    "face_token": "tok", "payment_password": "147258"}),
            )
            .is_err());
        let report_path = format!("/v1/card-queries/{QID}/report");
        spec.check_request_body("POST", &report_path, &json!({"face_token": "t"}))
            .unwrap();
        spec.check_request_body(
            "POST",
            &report_path,
            &json!({"verification": {"verification_id": VID, "sms_code": "000000"}}),
        )
        .unwrap();
        assert!(spec
            .check_request_body(
                "POST",
                &report_path,
                &json!({"face_token": "t",
                    "verification": {"verification_id": VID, "sms_code": "000000"}}),
            )
            .is_err());
        spec.check_request_body(
            "POST",
            "/v1/bank-callbacks/CMB",
            &json!({"query_id": QID, "inquiry_id": IID, "status": "FOUND",
                "cards": [{"kind": "CREDIT", "first4": "6225", "last4": "0042"}]}),
        )
        .unwrap();
        spec.check_schema(
            "BankInquiry",
            &json!({"query_id": QID, "inquiry_id": IID,
                "subject": {"name": "张三", "id_number": "11010519491231002X"},
                "callback_url": "http://127.0.0.1:9000/v1/bank-callbacks/ICBC",
                "respond_by": "2026-11-29T13:20:21Z"}),
        )
        .unwrap();
        assert!(spec
            .check_schema(
                "BankAnswerCard",
                &json!({"kind": "DEBIT", "first4": "6222", "last4": "1234", "number": "6222000011112222"})
            )
            .is_err());
        assert!(spec
            .check_request_body("GET", "/v1/banks", &json!({}))
            .is_err());
    }

    /// Issue 15: what the server refuses for reasons that are not state (the configured
    /// banks, the current agreement, consent given, a FOUND answer with cards and the
    /// others without) the schema refuses too, so valid by the schema means not refused
    /// by these rules; and its lists are the configuration's.
    #[test]
    fn the_rules_that_are_not_state_are_in_the_schema() {
        let spec = spec();
        let config = shared::config::ServiceConfig::parse(shared::config::DEFAULT_CONFIG)
            .expect("the shipped configuration parses");
        let configured: Vec<Value> = config
            .banks
            .all()
            .iter()
            .map(|b| json!(b.code.to_string()))
            .collect();
        assert_eq!(
            spec.document()
                .pointer("/components/schemas/BankCode/enum")
                .and_then(Value::as_array),
            Some(&configured),
            "BankCode lists the configured banks, in their order"
        );
        assert_eq!(
            spec.document()
                .pointer("/components/schemas/Consent/properties/agreement_version/enum"),
            Some(&json!([config.agreement_version])),
            "the consent names the current agreement version"
        );
        let submission = |banks: Value, version: &str, accepted: bool| {
            json!({"banks": banks,
                "consent": {"agreement_version": version, "accepted": accepted},
                "verification": {"verification_id": VID, "sms_code": "123456"},
                "face_token": "tok", "payment_password": "147258"})
        };
        let version = config.agreement_version.as_str();
        spec.check_request_body(
            "POST",
            "/v1/card-queries",
            &submission(json!(configured), version, true),
        )
        .expect("every configured bank at once");
        for (body, why) in [
            (submission(json!(["ZZZZ"]), version, true), "unknown bank"),
            (submission(json!([]), version, true), "no bank"),
            (
                submission(json!(["ICBC"]), version, false),
                "consent not given",
            ),
            (
                submission(json!(["ICBC"]), "2025-01", true),
                "an old agreement",
            ),
        ] {
            assert!(
                spec.check_request_body("POST", "/v1/card-queries", &body)
                    .is_err(),
                "{why}: {body}"
            );
        }
        let answer = |status: &str, cards: Value| json!({"query_id": QID, "inquiry_id": IID, "status": status, "cards": cards});
        let card = json!({"kind": "DEBIT", "first4": "6222", "last4": "1234"});
        let path = "/v1/bank-callbacks/ICBC";
        for (body, valid) in [
            (answer("FOUND", json!([card])), true),
            (answer("NONE", json!([])), true),
            (answer("ERROR", json!([])), true),
            (answer("FOUND", json!([])), false),
            (answer("NONE", json!([card])), false),
            (answer("ERROR", json!([card])), false),
            (
                answer("FOUND", Value::Array(vec![card.clone(); 201])),
                false,
            ),
        ] {
            assert_eq!(
                spec.check_request_body("POST", path, &body).is_ok(),
                valid,
                "{body}"
            );
        }
    }

    #[test]
    fn refs_into_the_components_are_followed_not_ignored() {
        // A $ref that silently failed to resolve would accept anything: prove the
        // referenced schema is applied (QueryList -> QueryRecord -> Ulid).
        let mut rec = record("PENDING");
        rec["query_id"] = json!("not-a-ulid");
        invalid("GET", "/v1/card-queries", 200, json!({"queries": [rec]}));
        invalid("GET", "/v1/card-queries", 200, json!({"queries": [42]}));
    }

    /// A stack with a national configuration is checked against the contract as that
    /// configuration states it: its banks are codes, up to 500 in one query; the shipped
    /// document (16 banks) refuses the same request.
    #[test]
    fn the_contract_for_a_configuration_lists_its_banks() {
        let config = crate::national::config_json(500, "https://banks.invalid");
        let national = OpenApi::for_configuration(&config).unwrap();
        let codes: Vec<String> = (0..484).map(crate::national::bank_code).collect();
        let submission = |banks: &[String]| {
            json!({"banks": banks,
                "consent": {"agreement_version": national.document()
                    .pointer("/components/schemas/Consent/properties/agreement_version/enum/0")
                    .unwrap(), "accepted": true},
                "verification": {"verification_id": VID, "sms_code": "123456"},
                "face_token": "tok", "payment_password": "147258"})
        };
        let all: Vec<String> = ["ICBC"]
            .iter()
            .map(|b| (*b).to_owned())
            .chain(codes)
            .collect();
        national
            .check_request_body("POST", "/v1/card-queries", &submission(&all[..485]))
            .unwrap();
        assert!(spec()
            .check_request_body("POST", "/v1/card-queries", &submission(&all[..17]))
            .is_err());
        let unknown = vec!["ZZZZ".to_owned()];
        assert!(national
            .check_request_body("POST", "/v1/card-queries", &submission(&unknown))
            .is_err());
        assert!(OpenApi::for_configuration("{}").is_err());
    }
}
