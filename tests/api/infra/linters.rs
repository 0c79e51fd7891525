//! The template against the pinned linters: cfn-lint finds nothing, checkov fails no
//! check and every skip has a reason.

use super::*;

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
