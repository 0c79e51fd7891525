use std::collections::BTreeMap;

use secrecy::ExposeSecret;

use super::*;

const SECRET: &str = "0123456789abcdef-very-secret-value";

/// What the template gives view-report (and more: the environment holds other things).
fn env(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("TABLE_NAME", "main"),
        ("USERS_TABLE_NAME", "users"),
        ("APP_JWT_PUBLIC_KEY", "app-pem"),
        ("APP_JWT_ISSUER", "iss"),
        ("APP_JWT_AUDIENCE", "aud"),
        ("FACE_PUBLIC_KEY", "face-pem"),
        ("FACE_ISSUER", "face-iss"),
        ("FACE_AUDIENCE", "face-aud"),
        ("SMS_CODE_KEY", SECRET),
        ("REPORT_PRIVATE_KEY", SECRET),
        ("PATH", "/usr/bin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        m.insert((*k).to_owned(), (*v).to_owned());
    }
    m
}

fn view(m: &BTreeMap<String, String>) -> Result<ViewReportEnv, EnvError> {
    ViewReportEnv::from_vars(&|k| m.get(k).cloned())
}

#[test]
fn a_function_reads_its_struct_and_its_debug_output_holds_no_secret() {
    let e = view(&env(&[])).unwrap();
    assert_eq!(e.common.table_name, "main");
    assert_eq!(e.common.service_config, None);
    assert_eq!(e.app_jwt.app_jwt_issuer, "iss");
    assert_eq!(e.sms_code.sms_code_key.expose_secret(), SECRET);
    // Defaults: the report key id, no key being retired.
    assert_eq!(e.report.report_key_id, "report-1");
    assert!(e.retiring.previous().unwrap().is_none());
    let debug = format!("{e:?}");
    assert!(
        debug.contains("REDACTED") && !debug.contains(SECRET),
        "{debug}"
    );
    let e = view(&env(&[("SERVICE_CONFIG", "/opt/card-lookup/service.json")])).unwrap();
    assert_eq!(
        e.common.service_config,
        Some(PathBuf::from("/opt/card-lookup/service.json"))
    );
}

#[test]
fn a_missing_variable_is_named_with_its_file_alternative_where_it_has_one() {
    let mut m = env(&[]);
    m.remove("APP_JWT_ISSUER");
    assert_eq!(
        view(&m).unwrap_err(),
        EnvError::Missing {
            var: "APP_JWT_ISSUER".into()
        }
    );
    let mut m = env(&[]);
    m.remove("REPORT_PRIVATE_KEY");
    let e = view(&m).unwrap_err();
    assert_eq!(
        e.to_string(),
        "REPORT_PRIVATE_KEY or REPORT_PRIVATE_KEY_FILE must be set"
    );
    // Empty is unset (a blank template parameter).
    let e = view(&env(&[("TABLE_NAME", " ")])).unwrap_err();
    assert_eq!(e.to_string(), "TABLE_NAME must be set");
}

#[test]
fn an_invalid_value_is_named_but_never_quoted() {
    let lookup = |k: &str| match k {
        "CALLBACK_BASE_URL" => Some("https://api.example/".to_owned()),
        "BANK_TIMEOUT_MS" => Some(SECRET.to_owned()),
        _ => None,
    };
    let e = read::<BankCallsEnv>(&lookup).unwrap_err();
    assert_eq!(
        e,
        EnvError::Invalid {
            var: "BANK_TIMEOUT_MS".into(),
            expected: "a whole number of milliseconds".into()
        }
    );
    assert!(!e.to_string().contains(SECRET));

    let lookup = |k: &str| match k {
        "CALLBACK_BASE_URL" => Some("https://api.example/".to_owned()),
        "BANK_TIMEOUT_MS" => Some(" 2500 ".to_owned()),
        _ => None,
    };
    let calls = read::<BankCallsEnv>(&lookup).unwrap();
    assert_eq!(calls.bank_timeout_ms, Millis(Duration::from_millis(2500)));
    assert_eq!(calls.callback_base(), "https://api.example");
    let unset = read::<BankCallsEnv>(&|k| {
        (k == "CALLBACK_BASE_URL").then(|| "https://api.example".to_owned())
    })
    .unwrap();
    assert_eq!(unset.bank_timeout_ms.0, Duration::from_secs(10));
}

#[test]
fn a_secret_may_come_from_a_file_and_an_unreadable_one_names_the_path_only() {
    let dir = std::env::temp_dir().join(format!("settings-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("report_private.hex");
    std::fs::write(&file, "from-the-file").unwrap();
    let path = file.display().to_string();
    let mut m = env(&[("REPORT_PRIVATE_KEY_FILE", &path)]);
    m.remove("REPORT_PRIVATE_KEY");
    assert_eq!(
        view(&m).unwrap().report.report_private_key.expose_secret(),
        "from-the-file"
    );
    // The variable itself wins over its file.
    let both = env(&[("REPORT_PRIVATE_KEY_FILE", &path)]);
    assert_eq!(
        view(&both)
            .unwrap()
            .report
            .report_private_key
            .expose_secret(),
        SECRET
    );
    let missing = dir.join("absent.hex").display().to_string();
    m.insert("REPORT_PRIVATE_KEY_FILE".into(), missing.clone());
    let e = view(&m).unwrap_err();
    assert!(
        matches!(&e, EnvError::File { var, .. } if var == "REPORT_PRIVATE_KEY"),
        "{e}"
    );
    assert!(e
        .to_string()
        .starts_with(&format!("REPORT_PRIVATE_KEY_FILE={missing}: ")));
    // Only keys and secrets have a file form.
    let mut m = env(&[("APP_JWT_ISSUER_FILE", &path)]);
    m.remove("APP_JWT_ISSUER");
    assert!(matches!(view(&m), Err(EnvError::Missing { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_key_being_retired_needs_its_private_half() {
    let e = view(&env(&[("REPORT_PREVIOUS_KEY_ID", "report-0")])).unwrap();
    assert_eq!(
        e.retiring.previous().unwrap_err().to_string(),
        "REPORT_PREVIOUS_PRIVATE_KEY or REPORT_PREVIOUS_PRIVATE_KEY_FILE must be set"
    );
    let e = view(&env(&[
        ("REPORT_PREVIOUS_KEY_ID", "report-0"),
        ("REPORT_PREVIOUS_PRIVATE_KEY", "old"),
    ]))
    .unwrap();
    let (id, key) = e.retiring.previous().unwrap().unwrap();
    assert_eq!((id, key.expose_secret()), ("report-0", "old"));
}

#[test]
fn every_function_lists_the_names_it_reads_and_the_template_sets_the_lasting_ones() {
    for (function, vars) in functions() {
        assert!(!vars.is_empty(), "{function}");
        let template = template_vars(function).unwrap();
        for name in ["SERVICE_CONFIG", "TABLE_NAME", "USERS_TABLE_NAME"] {
            assert!(template.contains(name), "{function}: {name}");
        }
        assert!(
            template.iter().all(|n| !n.ends_with("_FILE")),
            "{function}: {template:?}"
        );
    }
    let view = template_vars("view-report").unwrap();
    assert!(view.contains("REPORT_PRIVATE_KEY") && view.contains("REPORT_KEY_ID"));
    assert!(!view.iter().any(|n| n.starts_with("REPORT_PREVIOUS")));
    let all: Vec<String> = ViewReportEnv::vars().into_iter().map(|v| v.name).collect();
    for name in [
        "REPORT_PREVIOUS_KEY_ID",
        "REPORT_PREVIOUS_PRIVATE_KEY",
        "REPORT_PREVIOUS_PRIVATE_KEY_FILE",
        "REPORT_PRIVATE_KEY_FILE",
    ] {
        assert!(all.iter().any(|n| n == name), "{name}");
    }
    assert_eq!(
        template_vars("bank-callback").unwrap(),
        [
            "BANK_SECRETS",
            "REPORT_KEY_ID",
            "REPORT_PUBLIC_KEY",
            "SERVICE_CONFIG",
            "TABLE_NAME",
            "USERS_TABLE_NAME"
        ]
        .map(String::from)
        .into()
    );
    assert!(template_vars("no-such-function").is_none());
}
