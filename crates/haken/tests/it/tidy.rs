//! Tidy checks: the layering of the crates and the house rules of the source tree.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every package `crate` depends on (normal dependencies, whole tree).
fn dependencies(krate: &str, depth: Option<u32>) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root()).args([
        "tree",
        "--offline",
        "-p",
        krate,
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]);
    if let Some(d) = depth {
        cmd.args(["--depth", &d.to_string()]);
    }
    let out = cmd.output().expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn crate_layering_holds() {
    let core = dependencies("haken-core", None);
    for banned in ["sqlx", "axum", "reqwest", "hyper", "tokio"] {
        assert!(!core.iter().any(|d| d == banned), "haken-core must not depend on {banned}");
    }
    let store = dependencies("haken-store", None);
    for banned in ["axum", "reqwest", "hyper", "argon2"] {
        assert!(!store.iter().any(|d| d == banned), "haken-store must not depend on {banned}");
    }
    let flows = dependencies("haken-flows", Some(1));
    for banned in ["axum", "sqlx", "hyper"] {
        assert!(!flows.iter().any(|d| d == banned), "haken-flows must not depend on {banned} directly");
    }
    let hooks = dependencies("haken-hooks", None);
    assert!(!hooks.iter().any(|d| d == "axum"), "haken-hooks knows no HTTP routing");
    let server = dependencies("haken-server", Some(1));
    assert!(!server.iter().any(|d| d == "sqlx"), "only haken-store contains SQL");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_source_module_has_a_module_doc() {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).into_iter().flatten().flatten() {
        rust_files(&entry.path().join("src"), &mut files);
    }
    assert!(files.len() > 10);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap_or_default().trim_start().starts_with("//!"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a //! module doc: {missing:?}");
}

#[test]
fn readme_test_command_is_what_ci_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap_or_default();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap_or_default();
    assert!(readme.contains("./scripts/test"), "the README names the test command");
    assert!(ci.lines().any(|l| l.trim() == "./scripts/test"), ".ci/run runs the README's test command");
}
