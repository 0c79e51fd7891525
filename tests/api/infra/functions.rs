//! Each function crate is one function of the template, gets the environment its start-up
//! reads (secrets only where needed) and the service configuration layer.

use super::*;

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

/// Set by the template, read by no code: changing it makes CloudFormation update every
/// function and so re-resolve the secrets (see the template's Globals).
const NOT_READ: [&str; 1] = ["SECRETS_REVISION"];

/// What `function`'s start-up reads and a deployment sets: its settings struct
/// (`shared::settings`) and the log filter, which telemetry reads before it.
fn read_env(function: &str) -> BTreeSet<String> {
    let mut names = shared::settings::template_vars(function).unwrap_or_else(|| {
        panic!("{function} has no settings struct in shared::settings: add one there")
    });
    names.insert(shared::telemetry::LOG_FILTER_VAR.to_owned());
    names
}

#[test]
fn each_function_gets_exactly_the_environment_its_settings_struct_reads() {
    for f in functions() {
        let set: BTreeSet<String> = f.env().keys().cloned().collect();
        let mut expected = read_env(&f.binary);
        expected.extend(NOT_READ.map(String::from));
        assert_eq!(
            set,
            expected,
            "{}: the template's environment (Globals merged) against its settings struct; \
             set but not read: {:?}, read but not set: {:?}",
            f.binary,
            set.difference(&expected).collect::<Vec<_>>(),
            expected.difference(&set).collect::<Vec<_>>(),
        );
    }
    // And every settings struct is a function of the template.
    let deployed: BTreeSet<String> = functions().into_iter().map(|f| f.binary).collect();
    for (function, _) in shared::settings::functions() {
        assert!(
            deployed.contains(function),
            "shared::settings reads for {function}, which the template does not deploy"
        );
    }
}

/// Secrets, and the only functions that may hold each: the bank secrets where banks
/// are called or call us (the planners, bank-fanout and sweep, only queue; decision 114).
const SECRETS: [(&str, &[&str]); 3] = [
    ("BANK_SECRETS", &["bank-inquiry", "bank-callback"]),
    ("SMS_CODE_KEY", &["submit-query", "view-report"]),
    ("REPORT_PRIVATE_KEY", &["view-report"]),
];

#[test]
fn each_function_holds_secrets_only_where_needed() {
    for f in functions() {
        let env = f.env();
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
                "bank-inquiry" | "bank-callback" | "aggregate-report" | "sweep"
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
