//! What ships: the function binaries hold no test code. Token minting and key generation
//! (`domain::security::dev`) and the in-memory adapters (`domain::memory`, also reached as
//! `shared::adapters::memory`) are behind the `domain` crate's `test-util` feature (which
//! `shared/test-util` forwards), which only tests and tools enable.
//!
//! Cargo resolves features per build: resolver 2 unifies them across the packages selected
//! in one command, so a function built together with `testkit` (as in `cargo test
//! --workspace`) gets the feature, while the deployable builds select only functions
//! (`make build-arm64`: all six with `--package`; `sam build`: one at a time). So the checks
//! are on exactly those selections:
//!
//! - `cargo tree` shows `shared` and `domain` resolved without `test-util` for the six
//!   functions together and for each on its own (the release build's resolution, at no
//!   build cost);
//! - the debug binaries from `cargo build` of the six functions (the same selection; a
//!   release build takes minutes, and features are a property of the selection, not of
//!   the profile) carry no symbol of either module. The same scan finds them in a
//!   binary built with the feature, so it is not vacuous.
//!
//! Run with `cargo test -p system-tests --test ship`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const FUNCTIONS: [&str; 6] = [
    "aggregate-report",
    "bank-callback",
    "bank-fanout",
    "submit-query",
    "sweep",
    "view-report",
];

/// Module paths as they appear in symbols and debug info, legacy or v0 mangling alike
/// (`domain::security::dev` → `8security3dev`).
const MARKERS: [&str; 2] = ["8security3dev", "6domain6memory"];

/// The crates whose `test-util` must stay off in a shipped build.
const GATED: [&str; 2] = ["shared", "domain"];

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(testkit::workspace_root());
    c
}

fn with_packages<'a>(c: &'a mut Command, packages: &[&str]) -> &'a mut Command {
    for p in packages {
        c.args(["-p", p]);
    }
    c
}

/// `krate`'s features as resolved when building `packages` (one command).
fn features_of(krate: &str, packages: &[&str]) -> Vec<String> {
    let out = with_packages(
        cargo().args([
            "tree", "--locked", "-e", "features", "-i", krate, "--format", "{p} {f}",
        ]),
        packages,
    )
    .output()
    .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let first = text
        .lines()
        .next()
        .expect("cargo tree prints the crate first");
    assert!(first.starts_with(&format!("{krate} v")), "{first}");
    first
        .split_once(')')
        .map(|(_, features)| features)
        .unwrap_or_default()
        .split(',')
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty())
        .collect()
}

#[test]
fn the_shipped_builds_resolve_shared_and_domain_without_test_util() {
    let test_util = "test-util".to_owned();
    for krate in GATED {
        // The check can see the feature where it is on.
        assert!(
            features_of(krate, &["testkit"]).contains(&test_util),
            "{krate}"
        );
        assert!(
            !features_of(krate, &FUNCTIONS).contains(&test_util),
            "{krate}"
        );
        for f in FUNCTIONS {
            assert!(
                !features_of(krate, &[f]).contains(&test_util),
                "{krate}: {f}"
            );
        }
    }
}

/// Builds `packages` (debug, one command, `extra` arguments): their executables.
fn build(packages: &[&str], extra: &[&str]) -> Vec<(String, PathBuf)> {
    let out = with_packages(
        cargo()
            .args(["build", "--locked", "--message-format=json"])
            .args(extra),
        packages,
    )
    .output()
    .expect("cargo build runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            let exe = m["executable"].as_str()?.into();
            Some((m["target"]["name"].as_str()?.to_owned(), exe))
        })
        .collect()
}

fn markers_in(path: &PathBuf) -> Vec<&'static str> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    MARKERS
        .into_iter()
        .filter(|m| bytes.windows(m.len()).any(|w| w == m.as_bytes()))
        .collect()
}

#[test]
fn function_binaries_built_as_shipped_hold_no_test_code() {
    // One test, in this order: both builds write target/debug/sweep.
    let with_feature = build(&["sweep"], &["--features", "shared/test-util"]);
    let (_, exe) = with_feature.first().expect("sweep was built");
    assert_eq!(
        markers_in(exe),
        MARKERS,
        "the scan finds the modules when they are in"
    );

    let shipped = build(&FUNCTIONS, &[]);
    let names: Vec<&str> = shipped.iter().map(|(n, _)| n.as_str()).collect();
    for f in FUNCTIONS {
        assert!(names.contains(&f), "{f} was not built: {names:?}");
    }
    for (name, exe) in &shipped {
        assert_eq!(
            markers_in(exe),
            Vec::<&str>::new(),
            "{name}: {}",
            exe.display()
        );
    }
}
