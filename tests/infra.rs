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
//!   each function gets the environment its start-up reads, and the secrets come from
//!   Secrets Manager, each only where it is needed.
//!
//! The tools are the pinned ones `infra/local/stack.py install` puts into `.local/`
//! (cfn-lint in `.local/venv`, checkov in `.local/venv-checkov`); the template itself is
//! read by the workspace's one reader, the `sam-template` crate;
//! the test runs the install itself, a no-op once done. No AWS account or network is
//! needed. Run with `cargo test -p system-tests --test infra`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::{json, Value};
use testkit::openapi::OpenApi;
use testkit::Template;

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

struct Tools {
    cfn_lint: PathBuf,
    checkov: PathBuf,
}

/// The pinned tools, installed (once per test process) by the project's own script.
fn tools() -> &'static Tools {
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
        };
        for tool in [&tools.cfn_lint, &tools.checkov] {
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

// ---- the linters --------------------------------------------------------------------

#[test]
fn cfn_lint_finds_nothing() {
    let path = template_path();
    let out = run(
        &tools().cfn_lint,
        &["--format", "parseable", path.to_str().unwrap()],
    );
    // cfn-lint's exit code is a bit field: 2 errors, 4 warnings, 8 informational.
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "cfn-lint (exit {:?}):\n{}{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn checkov_fails_no_check_and_every_skip_has_a_reason() {
    let path = template_path();
    let out = run(
        &tools().checkov,
        &[
            "--file",
            path.to_str().unwrap(),
            "--framework",
            "cloudformation",
            "--output",
            "json",
            "--skip-download",
        ],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON ({e}), exit {:?}:\n{}\n{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    let summary = &report["summary"];
    let failed: Vec<String> = report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["check_name"]))
        .collect();
    assert!(
        failed.is_empty(),
        "checkov failed checks:\n{}",
        failed.join("\n")
    );
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["parsing_errors"], 0, "{summary}");
    assert!(
        summary["passed"].as_u64().unwrap_or(0) >= 50,
        "checkov ran suspiciously few checks: {summary}"
    );
    assert!(out.status.success(), "checkov exit {:?}", out.status.code());
    for skipped in report["results"]["skipped_checks"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let reason = skipped["check_result"]["suppress_comment"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reason.len() >= 20,
            "{} on {} is skipped without a reason",
            skipped["check_id"],
            skipped["resource"]
        );
    }
}

// ---- functions ----------------------------------------------------------------------

#[test]
fn every_function_crate_is_exactly_one_function_of_the_template() {
    let functions_dir = root().join("functions");
    let mut crates: BTreeMap<String, String> = BTreeMap::new();
    for package in cargo_metadata()["packages"].as_array().unwrap() {
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
        if !manifest.starts_with(&functions_dir) {
            continue;
        }
        let bins: Vec<&str> = package["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| strings(&t["kind"]).iter().any(|k| k == "bin"))
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            bins.len(),
            1,
            "{} should build exactly one binary: {bins:?}",
            package["name"]
        );
        crates.insert(
            bins[0].to_owned(),
            package["name"].as_str().unwrap().to_owned(),
        );
    }
    // Every directory under functions/ is a workspace member.
    let dirs: BTreeSet<String> = std::fs::read_dir(&functions_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        dirs,
        crates.values().cloned().collect::<BTreeSet<_>>(),
        "every crate under functions/ is a workspace member"
    );
    assert!(!crates.is_empty());

    let functions = functions();
    let mut by_binary: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for f in &functions {
        by_binary.entry(f.binary.as_str()).or_default().push(f.id);
    }
    for (binary, ids) in &by_binary {
        assert_eq!(
            ids.len(),
            1,
            "{binary} is deployed by several functions: {ids:?}"
        );
        assert!(
            crates.contains_key(*binary),
            "{ids:?} builds `{binary}`, which no crate under functions/ provides"
        );
    }
    for binary in crates.keys() {
        assert!(
            by_binary.contains_key(binary.as_str()),
            "the crate building `{binary}` has no function in the template"
        );
    }
    for f in &functions {
        assert_eq!(f.build_method, "rust-cargolambda", "{}", f.id);
        assert_eq!(f.props["Runtime"], "provided.al2023", "{}", f.id);
        assert_eq!(f.props["Architectures"], json!(["arm64"]), "{}", f.id);
        assert_eq!(f.props["Handler"], "bootstrap", "{}", f.id);
        assert!(f.props["MemorySize"].is_u64(), "{}: MemorySize", f.id);
        assert!(f.props["Timeout"].is_u64(), "{}: Timeout", f.id);
        // Its own role and its own log group with a retention.
        let group = f.props["LoggingConfig"]["LogGroup"]["Ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: LoggingConfig.LogGroup is not a Ref", f.id));
        assert_eq!(
            resources()[group]["Type"],
            "AWS::Logs::LogGroup",
            "{}",
            f.id
        );
        assert!(
            !resources()[group]["Properties"]["RetentionInDays"].is_null(),
            "{group} has no retention"
        );
    }
    let roles: BTreeSet<_> = functions
        .iter()
        .map(|f| f.props["Role"].to_string())
        .collect();
    assert_eq!(
        roles.len(),
        functions.len(),
        "every function has a role of its own"
    );
}

// ---- routes -------------------------------------------------------------------------

/// `[workspace.metadata.lambda.watch.router]`: `(METHOD, path)` → function, for the
/// methods the contract documents on each path.
fn router_routes(operations: &BTreeSet<(String, String)>) -> BTreeMap<(String, String), String> {
    let router = cargo_metadata()["metadata"]["lambda"]["watch"]["router"]
        .as_object()
        .expect("Cargo.toml has [workspace.metadata.lambda.watch.router]");
    let mut out = BTreeMap::new();
    for (path, target) in router {
        match target {
            // One function for every method of the path.
            Value::String(function) => {
                let methods: Vec<_> = operations.iter().filter(|(_, p)| p == path).collect();
                assert!(
                    !methods.is_empty(),
                    "the router maps {path}, which the contract does not document"
                );
                for (method, _) in methods {
                    out.insert((method.clone(), path.clone()), function.clone());
                }
            }
            Value::Array(entries) => {
                for entry in entries {
                    let method = entry["method"].as_str().expect("router entry method");
                    let function = entry["function"].as_str().expect("router entry function");
                    out.insert(
                        (method.to_ascii_uppercase(), path.clone()),
                        function.to_owned(),
                    );
                }
            }
            other => panic!("unexpected router entry for {path}: {other}"),
        }
    }
    out
}

#[test]
fn every_operation_is_a_route_of_the_function_the_router_names_and_vice_versa() {
    let contract = OpenApi::shared();
    // `paths` only: the contract's `webhooks` (the inquiry the network sends to banks)
    // are outbound calls, not routes.
    let operations: BTreeSet<(String, String)> = contract.operations().into_iter().collect();
    assert!(!operations.is_empty());

    let mut routes: BTreeMap<(String, String), (String, Value)> = BTreeMap::new();
    for f in functions() {
        for (route, props) in f.routes() {
            let previous = routes.insert(route.clone(), (f.binary.clone(), props.clone()));
            assert!(previous.is_none(), "{route:?} is routed twice");
        }
    }
    let routed: BTreeSet<_> = routes.keys().cloned().collect();
    let missing: Vec<_> = operations.difference(&routed).collect();
    let extra: Vec<_> = routed.difference(&operations).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "contract operations without a route: {missing:?}; routes the contract does not \
         document: {extra:?}"
    );

    let router = router_routes(&operations);
    let router_keys: BTreeSet<_> = router.keys().cloned().collect();
    assert_eq!(
        router_keys, operations,
        "the cargo lambda watch router covers exactly the contract's operations"
    );

    let document = contract.document();
    for ((method, path), (binary, props)) in &routes {
        assert_eq!(
            Some(binary),
            router.get(&(method.clone(), path.clone())),
            "{method} {path}: the template and the local router disagree on the function"
        );
        assert_eq!(
            props["ApiId"],
            json!({"Ref": "HttpApi"}),
            "{method} {path} is a route of the one HTTP API"
        );
        // The contract's own word on authentication: `security: []` opts an operation
        // out of the app's bearer token (the bank callback, HMAC-signed).
        let security = &document["paths"][path][method.to_ascii_lowercase()]["security"];
        let open = security.as_array().is_some_and(Vec::is_empty);
        let authorizer = &props["Auth"]["Authorizer"];
        if open {
            assert_eq!(
                authorizer, "NONE",
                "{method} {path} has `security: []` and must opt out of the JWT authorizer"
            );
        } else {
            assert!(
                authorizer.is_null(),
                "{method} {path} must stay behind the default JWT authorizer, not {authorizer}"
            );
        }
    }
}

#[test]
fn the_http_api_checks_app_jwts_with_the_configured_issuer_and_audience() {
    let api = &resources()["HttpApi"];
    assert_eq!(api["Type"], "AWS::Serverless::HttpApi");
    let auth = &api["Properties"]["Auth"];
    let default = auth["DefaultAuthorizer"]
        .as_str()
        .expect("a default authorizer");
    let authorizer = &auth["Authorizers"][default];
    assert_eq!(
        authorizer["IdentitySource"],
        "$request.header.Authorization"
    );
    let jwt = &authorizer["JwtConfiguration"];
    assert_eq!(jwt["issuer"], json!({"Ref": "AppJwtIssuer"}));
    assert_eq!(jwt["audience"], json!([{"Ref": "AppJwtAudience"}]));
    for parameter in ["AppJwtIssuer", "AppJwtAudience"] {
        assert!(
            template()["Parameters"][parameter].is_object(),
            "{parameter} is a template parameter"
        );
    }
}

// ---- least privilege ----------------------------------------------------------------

/// Actions that have no resource ARN to name, so AWS requires `Resource: "*"`.
const STAR_RESOURCE_ACTIONS: [&str; 3] = [
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    // Direct-to-phone SMS (the role denies every topic and endpoint ARN).
    "sns:Publish",
];

const WRITES: [&str; 6] = [
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLInsert",
    "dynamodb:PartiQLUpdate",
];

#[test]
fn roles_grant_no_wildcard_actions_and_wildcard_resources_only_where_aws_requires_them() {
    for f in functions() {
        for st in f.statements() {
            let actions = strings(&st["Action"]);
            assert!(!actions.is_empty(), "{}: a statement without Action", f.id);
            for action in &actions {
                assert!(!action.contains('*'), "{}: wildcard action {action}", f.id);
            }
            if st["Effect"] != "Allow" {
                continue;
            }
            if strings(&st["Resource"]).iter().any(|r| r.contains('*')) {
                for action in &actions {
                    assert!(
                        STAR_RESOURCE_ACTIONS.contains(&action.as_str()),
                        "{}: {action} is granted on a wildcard resource",
                        f.id
                    );
                }
            }
        }
        // A role allowed to publish SMS must not be allowed to publish to topics.
        let publishes = f.statements().iter().any(|st| {
            st["Effect"] == "Allow" && strings(&st["Action"]).iter().any(|a| a == "sns:Publish")
        });
        if publishes {
            assert!(
                f.statements().iter().any(|st| st["Effect"] == "Deny"
                    && strings(&st["Action"]).iter().any(|a| a == "sns:Publish")
                    && st["Resource"].to_string().contains("sns:*:*:*")),
                "{}: SMS publishing without the Deny on topic ARNs",
                f.id
            );
        }
    }
}

#[test]
fn only_the_functions_that_need_them_touch_tables_stream_and_sms() {
    let grants = |f: &Function, resource: &str| -> BTreeSet<String> {
        f.statements()
            .iter()
            .filter(|st| st["Effect"] == "Allow")
            .filter(|st| referenced_ids(&st["Resource"]).contains(resource))
            .flat_map(|st| strings(&st["Action"]))
            .collect()
    };
    let sms = |f: &Function| {
        f.statements().iter().any(|st| {
            st["Effect"] == "Allow" && strings(&st["Action"]).iter().any(|a| a == "sns:Publish")
        })
    };
    for f in functions() {
        // The users table belongs to the app's user system: read only, and only by the
        // functions that need a profile.
        let users = grants(&f, "UsersTable");
        let expected_users: BTreeSet<String> = match f.binary.as_str() {
            "submit-query" | "bank-fanout" | "aggregate-report" | "sweep" => {
                ["dynamodb:GetItem".to_owned()].into()
            }
            _ => BTreeSet::new(),
        };
        assert_eq!(users, expected_users, "{}: UsersTable", f.binary);
        assert!(users.iter().all(|a| !WRITES.contains(&a.as_str())));

        // Only the stream consumers read the stream; only the sweeper deletes.
        let main = grants(&f, "CardLookupTable");
        let reads_stream = main.contains("dynamodb:GetRecords");
        assert_eq!(
            reads_stream,
            matches!(f.binary.as_str(), "bank-fanout" | "aggregate-report"),
            "{}: stream access",
            f.binary
        );
        assert_eq!(
            main.contains("dynamodb:DeleteItem"),
            f.binary == "sweep",
            "{}: deletes",
            f.binary
        );
        assert!(!main.contains("dynamodb:Scan"), "{}: no scans", f.binary);

        assert_eq!(
            sms(&f),
            matches!(
                f.binary.as_str(),
                "submit-query" | "aggregate-report" | "sweep"
            ),
            "{}: SMS",
            f.binary
        );
    }
}

/// What each function's start-up reads (shared/src/bootstrap.rs and what it calls).
fn required_env(binary: &str) -> &'static [&'static str] {
    const APP: [&str; 7] = [
        "APP_JWT_PUBLIC_KEY",
        "APP_JWT_ISSUER",
        "APP_JWT_AUDIENCE",
        "FACE_PUBLIC_KEY",
        "FACE_ISSUER",
        "FACE_AUDIENCE",
        "SMS_CODE_KEY",
    ];
    match binary {
        "submit-query" => &APP,
        "view-report" => &[
            "APP_JWT_PUBLIC_KEY",
            "APP_JWT_ISSUER",
            "APP_JWT_AUDIENCE",
            "FACE_PUBLIC_KEY",
            "FACE_ISSUER",
            "FACE_AUDIENCE",
            "SMS_CODE_KEY",
            "REPORT_PRIVATE_KEY",
            "REPORT_KEY_ID",
        ],
        "bank-fanout" => &[
            "BANK_SECRETS",
            "CALLBACK_BASE_URL",
            "BANK_TIMEOUT_MS",
            "REPORT_PUBLIC_KEY",
            "REPORT_KEY_ID",
        ],
        "bank-callback" => &["BANK_SECRETS", "REPORT_PUBLIC_KEY", "REPORT_KEY_ID"],
        "aggregate-report" => &["REPORT_PUBLIC_KEY", "REPORT_KEY_ID", "SMS_SENDER_ID"],
        "sweep" => &[
            "REPORT_PUBLIC_KEY",
            "REPORT_KEY_ID",
            "SMS_SENDER_ID",
            "BANK_SECRETS",
            "CALLBACK_BASE_URL",
            "BANK_TIMEOUT_MS",
        ],
        other => panic!("no expectation for a function `{other}`: add it here"),
    }
}

/// Secrets, and the only functions that may hold each.
const SECRETS: [(&str, &[&str]); 3] = [
    ("BANK_SECRETS", &["bank-fanout", "bank-callback", "sweep"]),
    ("SMS_CODE_KEY", &["submit-query", "view-report"]),
    ("REPORT_PRIVATE_KEY", &["view-report"]),
];

#[test]
fn each_function_gets_the_environment_it_reads_and_secrets_only_where_needed() {
    for f in functions() {
        let env = f.env();
        for name in ["TABLE_NAME", "USERS_TABLE_NAME", "RUST_LOG"]
            .iter()
            .chain(required_env(&f.binary))
        {
            assert!(env.contains_key(*name), "{} lacks {name}", f.binary);
        }
        assert_eq!(env["TABLE_NAME"], json!({"Ref": "CardLookupTable"}));
        assert_eq!(env["USERS_TABLE_NAME"], json!({"Ref": "UsersTable"}));
        for (secret, holders) in SECRETS {
            match env.get(secret) {
                Some(value) => {
                    assert!(
                        holders.contains(&f.binary.as_str()),
                        "{} must not hold {secret}",
                        f.binary
                    );
                    // From Secrets Manager, never a literal in the template.
                    assert!(
                        value.to_string().contains("{{resolve:secretsmanager:"),
                        "{}: {secret} is not a Secrets Manager reference: {value}",
                        f.binary
                    );
                }
                None => assert!(
                    !holders.contains(&f.binary.as_str()),
                    "{} needs {secret}",
                    f.binary
                ),
            }
        }
        // Environment variables are encrypted with the stack's own key.
        assert_eq!(
            f.props["KmsKeyArn"],
            json!({"Fn::GetAtt": ["SecretsKey", "Arn"]}),
            "{}",
            f.binary
        );
    }
    // The public report key only where card data is sealed (answers as legs settle,
    // reports as they are published).
    for f in functions() {
        assert_eq!(
            f.env().contains_key("REPORT_PUBLIC_KEY"),
            matches!(
                f.binary.as_str(),
                "bank-fanout" | "bank-callback" | "aggregate-report" | "sweep"
            ),
            "{}: REPORT_PUBLIC_KEY",
            f.binary
        );
    }
    assert!(function("view-report")
        .env()
        .contains_key("REPORT_PRIVATE_KEY"));
}

/// The configuration built into the binaries has every bank at a `.invalid` placeholder
/// (the functions refuse it at start-up): a deployment must name the layer with the real
/// endpoints, and every function must read it. A missing layer fails the deploy.
#[test]
fn every_function_reads_the_required_service_configuration_layer() {
    let p = &template()["Parameters"]["ServiceConfigLayerArn"];
    assert!(p.is_object(), "ServiceConfigLayerArn is a parameter");
    assert!(p.get("Default").is_none(), "no default: {p}");
    let pattern = p["AllowedPattern"].as_str().expect("an AllowedPattern");
    assert!(
        !pattern.contains("(|") && !pattern.starts_with("^$"),
        "empty not allowed: {pattern}"
    );
    for f in functions() {
        assert_eq!(
            f.props["Layers"],
            json!([{"Ref": "ServiceConfigLayerArn"}]),
            "{}",
            f.binary
        );
        assert_eq!(
            f.env()["SERVICE_CONFIG"],
            json!("/opt/card-lookup/service.json"),
            "{}",
            f.binary
        );
    }
}

// ---- state and operations -----------------------------------------------------------

#[test]
fn tables_are_protected_and_stream_consumers_have_bounded_retries_and_a_dead_letter_queue() {
    for (id, table) in of_type("AWS::DynamoDB::Table") {
        let p = &table["Properties"];
        assert_eq!(p["BillingMode"], "PAY_PER_REQUEST", "{id}");
        assert_eq!(
            p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true,
            "{id}"
        );
        assert_eq!(p["DeletionProtectionEnabled"], true, "{id}");
        assert_eq!(p["SSESpecification"]["SSEEnabled"], true, "{id}");
        assert_eq!(p["SSESpecification"]["SSEType"], "KMS", "{id}");
        let key = referenced_ids(&p["SSESpecification"]["KMSMasterKeyId"]);
        let key = key.iter().next().unwrap_or_else(|| panic!("{id}: no CMK"));
        assert_eq!(resources()[key]["Type"], "AWS::KMS::Key", "{id}");
        assert_eq!(resources()[key]["Properties"]["EnableKeyRotation"], true);
        assert_eq!(table["DeletionPolicy"], "Retain", "{id}");
    }
    let mut consumers = 0;
    for f in functions() {
        for (name, event) in f.props["Events"].as_object().into_iter().flatten() {
            if event["Type"] != "DynamoDB" {
                continue;
            }
            consumers += 1;
            let p = &event["Properties"];
            let at = format!("{}.{name}", f.id);
            assert_eq!(
                p["Stream"],
                json!({"Fn::GetAtt": ["CardLookupTable", "StreamArn"]}),
                "{at}"
            );
            assert_eq!(
                p["FunctionResponseTypes"],
                json!(["ReportBatchItemFailures"]),
                "{at}"
            );
            let retries = p["MaximumRetryAttempts"].as_i64().unwrap_or(-1);
            assert!(
                (0..=10).contains(&retries),
                "{at}: bounded retries, not {retries}"
            );
            let age = p["MaximumRecordAgeInSeconds"].as_i64().unwrap_or(-1);
            assert!(
                (60..=86_400).contains(&age),
                "{at}: MaximumRecordAgeInSeconds {age}"
            );
            assert!(
                !strings(&p["FilterCriteria"]["Filters"][0]["Pattern"]).is_empty(),
                "{at}"
            );
            let dlq = referenced_ids(&p["DestinationConfig"]["OnFailure"]["Destination"]);
            let dlq = dlq.iter().next().unwrap_or_else(|| panic!("{at}: no DLQ"));
            let queue = &resources()[dlq];
            assert_eq!(queue["Type"], "AWS::SQS::Queue", "{at}");
            assert!(
                !queue["Properties"]["KmsMasterKeyId"].is_null(),
                "{dlq} is not encrypted"
            );
            // The role may send there (the event source mapping uses it).
            assert!(
                f.statements().iter().any(|st| strings(&st["Action"])
                    .contains(&"sqs:SendMessage".to_owned())
                    && referenced_ids(&st["Resource"]).contains(dlq)),
                "{at}: the role cannot send to {dlq}"
            );
        }
    }
    assert_eq!(consumers, 2, "fan-out and aggregation read the stream");
    let sweep = function("sweep");
    let schedule = &sweep.props["Events"]["Every5Minutes"];
    assert_eq!(schedule["Type"], "Schedule");
    assert_eq!(schedule["Properties"]["Schedule"], "rate(5 minutes)");
}

#[test]
fn alarms_cover_every_function_every_dead_letter_queue_and_late_reports() {
    let alarms: Vec<&Value> = of_type("AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|(_, a)| &a["Properties"])
        .collect();
    let topic = json!([{"Ref": "AlarmTopic"}]);
    for alarm in &alarms {
        assert_eq!(alarm["AlarmActions"], topic, "{alarm}");
    }
    let watches = |namespace: &str, metric: &str, dimension: Option<&str>| {
        alarms.iter().any(|a| {
            a["Namespace"] == namespace
                && a["MetricName"] == metric
                && dimension.is_none_or(|id| referenced_ids(&a["Dimensions"]).contains(id))
        })
    };
    for f in functions() {
        for metric in ["Errors", "Throttles"] {
            assert!(
                watches("AWS/Lambda", metric, Some(f.id)),
                "{}: {metric} alarm",
                f.id
            );
        }
    }
    for (id, _) in of_type("AWS::SQS::Queue") {
        assert!(
            watches("AWS/SQS", "ApproximateNumberOfMessagesVisible", Some(id)),
            "{id}: depth alarm"
        );
    }
    assert!(watches("CardLookup", "SubmitToReportLatency", None));
    assert!(watches("CardLookup", "SweepDeadlineFailures", None));
}

// ---- partitions each function may write ---------------------------------------------

/// Partition-key prefixes of the main table each function writes, from the DynamoDB
/// adapter (`shared/src/adapters/dynamo/*.rs`): `USER#` (state, codes, idempotency),
/// `QUERY#` (query, consent, legs, report), `FACENONCE#`, `BANKNONCE#`.
fn owned_prefixes(binary: &str) -> &'static [&'static str] {
    match binary {
        "submit-query" => &["USER#", "QUERY#", "FACENONCE#"],
        "view-report" => &["USER#", "QUERY#", "FACENONCE#"],
        "bank-fanout" => &["QUERY#"],
        "bank-callback" => &["QUERY#", "BANKNONCE#"],
        // Publishing releases the user's lock and sets the cooldown (USER#); the sweeper
        // runs the aggregator at deadlines.
        "aggregate-report" | "sweep" => &["QUERY#", "USER#"],
        other => panic!("no expectation for a function `{other}`: add it here"),
    }
}

/// Attributes only a stored report item has (what `NoReportWrites` denies).
const REPORT_ONLY: [&str; 2] = ["sealed", "generated_at"];

#[test]
fn main_table_writes_are_scoped_to_the_partitions_each_function_owns() {
    // The prefixes are the adapter's.
    let q = shared::model::ids::QueryId::parse(&ulid::Ulid::generate().to_string()).unwrap();
    let u = shared::model::ids::UserId::parse("u1").unwrap();
    assert!(shared::adapters::dynamo::query_pk(&q).starts_with("QUERY#"));
    assert!(shared::adapters::dynamo::user_pk(&u).starts_with("USER#"));

    for f in functions() {
        let on_main = |st: &&Value| referenced_ids(&st["Resource"]).contains("CardLookupTable");
        let writes: Vec<&Value> = f
            .statements()
            .into_iter()
            .filter(|st| st["Effect"] == "Allow")
            .filter(on_main)
            .filter(|st| {
                strings(&st["Action"])
                    .iter()
                    .any(|a| WRITES.contains(&a.as_str()))
            })
            .collect();
        assert!(!writes.is_empty(), "{}: writes nothing", f.binary);
        let expected: BTreeSet<String> = owned_prefixes(&f.binary)
            .iter()
            .map(|p| format!("{p}*"))
            .collect();
        for st in writes {
            let cond = &st["Condition"];
            let keys: BTreeSet<String> =
                strings(&cond["ForAllValues:StringLike"]["dynamodb:LeadingKeys"])
                    .into_iter()
                    .collect();
            assert_eq!(keys, expected, "{} {}: LeadingKeys", f.binary, st["Sid"]);
            // Without it, a request that names no key would pass ForAllValues.
            assert_eq!(
                cond["Null"]["dynamodb:LeadingKeys"], "false",
                "{} {}: keys required",
                f.binary, st["Sid"]
            );
            let operators: BTreeSet<&str> = cond
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            assert_eq!(
                operators,
                BTreeSet::from(["ForAllValues:StringLike", "Null"]),
                "{}: nothing else loosens or replaces the scope",
                f.binary
            );
        }

        // Reports share their query's partition: the roles that must not write them are
        // denied every write carrying a report's own attributes.
        let denies_reports = f.statements().into_iter().filter(on_main).any(|st| {
            let actions = strings(&st["Action"]);
            st["Effect"] == "Deny"
                && ["dynamodb:PutItem", "dynamodb:UpdateItem"]
                    .iter()
                    .all(|a| actions.iter().any(|x| x == a))
                && st.get("Resource").is_some()
                && strings(&st["Condition"]["ForAnyValue:StringEquals"]["dynamodb:Attributes"])
                    .iter()
                    .any(|a| a == "sealed")
        });
        assert_eq!(
            denies_reports,
            !matches!(f.binary.as_str(), "aggregate-report" | "sweep"),
            "{}: report writes",
            f.binary
        );
    }

    // Those attributes are the stored report's (and the names the Deny lists).
    let (_, public) = shared::report::crypto::generate_keypair();
    let sealer = shared::report::crypto::ReportSealer::new("k1", &public).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let report = shared::records::StoredReport {
        query_id: q,
        user_id: u.clone(),
        sealed: sealer
            .seal(
                &shared::report::crypto::Binding::Report {
                    query: &q,
                    user: &u,
                    generated_at: now,
                    expires_at: now,
                },
                b"{}",
            )
            .unwrap(),
        generated_at: now,
        expires_at: now,
    };
    let item = shared::adapters::dynamo::to_item(&report, &[]).unwrap();
    for a in REPORT_ONLY {
        assert!(item.contains_key(a), "a stored report has no `{a}`");
    }
    let deny = function("submit-query")
        .statements()
        .into_iter()
        .find(|st| st["Sid"] == "NoReportWrites")
        .expect("NoReportWrites");
    let listed: BTreeSet<String> =
        strings(&deny["Condition"]["ForAnyValue:StringEquals"]["dynamodb:Attributes"])
            .into_iter()
            .collect();
    assert_eq!(listed, REPORT_ONLY.iter().map(|s| s.to_string()).collect());
}
