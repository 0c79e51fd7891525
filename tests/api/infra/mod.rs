//! The production template (`infra/template.yaml`) against the linters and against the
//! rest of the workspace:
//!
//! - `cfn-lint` finds nothing (no error, no warning, no informational finding);
//! - `checkov` fails no check, and every check it skips is skipped inline with a reason;
//! - every crate under `functions/` is exactly one `AWS::Serverless::Function` (by
//!   `Metadata.BuildProperties.Binary`) and vice versa, each built the same way
//!   (rust-cargolambda, arm64, provided.al2023);
//! - every operation of `functions/openapi.yaml` (the outbound bank webhook aside) is a
//!   route of the HTTP API, served by the function the `cargo lambda watch` router names
//!   for it, and vice versa; app routes sit behind the JWT authorizer, exactly the
//!   operations the contract marks `security: []` opt out of it;
//! - least privilege, as far as a template can show it: no `*` action; `*` resources
//!   only for the actions that have no resource ARN; nothing writes the users table;
//!   each function's environment (Globals merged) is exactly what its settings struct
//!   in `shared::settings` reads, and the secrets come from Secrets Manager, each only
//!   where it is needed.
//!
//! The tools are the pinned ones `infra/local/stack.py install` puts into `.local/`
//! (cfn-lint in `.local/venv`, checkov in `.local/venv-checkov`); the template itself is
//! read by the workspace's one reader, the `sam-template` crate;
//! the test runs the install itself, a no-op once done. No AWS account or network is
//! needed. Run with `cargo test -p system-tests --test api infra::`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::{json, Value};
use testkit::openapi::OpenApi;
use testkit::Template;

mod functions;
mod linters;
mod permissions;
mod resilience;
mod routes;

// ---- tools and documents ------------------------------------------------------------

fn root() -> PathBuf {
    testkit::workspace_root()
}

/// `infra/template.yaml`, or the file `INFRA_TEMPLATE` names (to try the checks on a
/// variant of the template).
fn template_path() -> PathBuf {
    std::env::var_os("INFRA_TEMPLATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("infra/template.yaml"))
}

pub(crate) struct Tools {
    pub(crate) cfn_lint: PathBuf,
    pub(crate) checkov: PathBuf,
    /// The property run's (tests/api/property).
    pub(crate) schemathesis: PathBuf,
}

/// The pinned tools, installed (once per test process) by the project's own script.
pub(crate) fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let out = Command::new("python3")
            .arg(root().join("infra/local/stack.py"))
            .arg("install")
            .current_dir(root())
            .output()
            .expect("python3 runs infra/local/stack.py");
        assert!(
            out.status.success(),
            "stack.py install failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let local = root().join(".local");
        let tools = Tools {
            cfn_lint: local.join("venv/bin/cfn-lint"),
            checkov: local.join("venv-checkov/bin/checkov"),
            schemathesis: local.join("venv/bin/schemathesis"),
        };
        for tool in [&tools.cfn_lint, &tools.checkov, &tools.schemathesis] {
            assert!(tool.exists(), "{} is missing after install", tool.display());
        }
        tools
    })
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(root())
        // Tools must not phone home; nothing here needs the network.
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The template as JSON, read by the workspace's one template reader (intrinsic tags
/// in their long form: `!GetAtt A.B` is `{"Fn::GetAtt": ["A", "B"]}`, as CloudFormation
/// tooling reads them).
fn loaded() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        Template::load(&template_path())
            .unwrap_or_else(|e| panic!("the template does not read: {e}"))
    })
}

fn template() -> &'static Value {
    loaded().json()
}

fn resources() -> &'static serde_json::Map<String, Value> {
    template()["Resources"]
        .as_object()
        .expect("the template has Resources")
}

fn of_type(ty: &str) -> Vec<(&'static str, &'static Value)> {
    resources()
        .iter()
        .filter(|(_, r)| r["Type"] == ty)
        .map(|(id, r)| (id.as_str(), r))
        .collect()
}

/// `cargo metadata` of the workspace (packages and `[workspace.metadata]`).
fn cargo_metadata() -> &'static Value {
    static META: OnceLock<Value> = OnceLock::new();
    META.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(root())
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "cargo metadata: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
    })
}

/// One `AWS::Serverless::Function` with the template's Globals applied.
#[derive(Debug)]
struct Function {
    id: &'static str,
    binary: String,
    build_method: String,
    /// Properties after merging `Globals.Function` (the function's own win; environment
    /// variables merge by name).
    props: Value,
}

impl Function {
    fn env(&self) -> BTreeMap<String, Value> {
        self.props["Environment"]["Variables"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// `(METHOD, path)` → event properties, of every `HttpApi` event.
    fn routes(&self) -> BTreeMap<(String, String), &Value> {
        self.props["Events"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, e)| e["Type"] == "HttpApi")
            .map(|(name, e)| {
                let p = &e["Properties"];
                let method = p["Method"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}.{name} has no Method", self.id));
                let path = p["Path"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}.{name} has no Path", self.id));
                ((method.to_ascii_uppercase(), path.to_owned()), p)
            })
            .collect()
    }

    /// The role's inline policy statements (the role this function runs as).
    fn statements(&self) -> Vec<&'static Value> {
        let role = self.props["Role"]["Fn::GetAtt"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{}: Role is not `!GetAtt <Role>.Arn`", self.id));
        let role = &resources()[role];
        assert_eq!(role["Type"], "AWS::IAM::Role", "{}", self.id);
        role["Properties"]["Policies"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| {
                p["PolicyDocument"]["Statement"]
                    .as_array()
                    .into_iter()
                    .flatten()
            })
            .collect()
    }
}

fn functions() -> Vec<Function> {
    static FUNCTIONS: OnceLock<Vec<testkit::template::Function>> = OnceLock::new();
    FUNCTIONS
        .get_or_init(|| loaded().functions())
        .iter()
        .map(|f| Function {
            id: &f.id,
            binary: f
                .binary
                .clone()
                .unwrap_or_else(|| panic!("{} has no Metadata.BuildProperties.Binary", f.id)),
            build_method: f.build_method.clone().unwrap_or_default(),
            props: f.properties.clone(),
        })
        .collect()
}

fn function(binary: &str) -> Function {
    functions()
        .into_iter()
        .find(|f| f.binary == binary)
        .unwrap_or_else(|| panic!("no function for {binary}"))
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// Every logical id a value refers to (`Ref`, `Fn::GetAtt`, `${Id...}` in `Fn::Sub`).
fn referenced_ids(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    match v {
        Value::Object(m) => {
            if let Some(Value::String(id)) = m.get("Ref") {
                out.insert(id.clone());
            }
            if let Some(Value::Array(a)) = m.get("Fn::GetAtt") {
                if let Some(Value::String(id)) = a.first() {
                    out.insert(id.clone());
                }
            }
            if let Some(sub) = m.get("Fn::Sub") {
                let s = match sub {
                    Value::String(s) => s.clone(),
                    Value::Array(a) => a.first().and_then(Value::as_str).unwrap_or("").into(),
                    _ => String::new(),
                };
                for part in s.split("${").skip(1) {
                    let name = part.split(['}', '.']).next().unwrap_or("");
                    out.insert(name.to_owned());
                }
            }
            for v in m.values() {
                out.extend(referenced_ids(v));
            }
        }
        Value::Array(a) => a.iter().for_each(|v| out.extend(referenced_ids(v))),
        _ => {}
    }
    out
}
