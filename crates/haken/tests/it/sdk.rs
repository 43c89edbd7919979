//! The official Okta management SDK for Python, driving the real server. The test command
//! installs it into `.venv-sdk`; without it the test fails in CI and is skipped loudly
//! elsewhere.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Backend, TOKEN, TestServer};

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("HAKEN_SDK_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = root.join(".venv-sdk/bin/python");
    p.exists().then_some(p)
}

async fn run_sdk(b: Backend) {
    let Some(py) = python() else {
        assert!(
            std::env::var("HAKEN_REQUIRE_SDK").as_deref() != Ok("1"),
            "the Okta SDK is required but .venv-sdk is missing"
        );
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "\n!!!!! Okta SDK test SKIPPED: run scripts/test to install it !!!!!\n");
        return;
    };
    let s = TestServer::start(b).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk/okta_sdk_check.py");
    let base = s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py).arg(script).env("HAKEN_URL", base).env("HAKEN_TOKEN", TOKEN).output()
    })
    .await
    .expect("join")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "Okta SDK checks failed on {b:?}:\n{stdout}\n{stderr}");
    assert!(stdout.lines().any(|l| l.ends_with(" 0 failed")), "{stdout}");
    s.stop().await;
}

crate::both!(okta_python_sdk);

async fn okta_python_sdk(b: Backend) {
    run_sdk(b).await;
}
