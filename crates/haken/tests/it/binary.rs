//! The real `haken` binary: first start, token commands, configuration precedence, signals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::tempdir::Dir;

const BIN: &str = env!("CARGO_BIN_EXE_haken");

/// A `haken serve` process; killed (and reaped) when dropped.
struct Served {
    child: Child,
    base: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Served {
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Served {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.env_remove("HAKEN_BOOTSTRAP_TOKEN");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("haken starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("haken did not start; it said:\n{}", seen.join("\n"))
            });
            if let Some(rest) = line.split("Haken is listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                return Served { child, base: format!("http://{addr}"), stderr: rx };
            }
            seen.push(line);
        }
    }

    fn status(&self, token: &str) -> u16 {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("Authorization: SSWS {token}")])
            .arg(format!("{}/api/v1/users", self.base))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }

    /// SIGTERM, then the exit status (graceful shutdown must exit 0).
    fn terminate(mut self) -> std::process::ExitStatus {
        self.terminate_in_place()
    }

    fn terminate_in_place(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("haken did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn haken(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).env_remove("HAKEN_BOOTSTRAP_TOKEN").output().expect("haken runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn first_start_writes_a_private_bootstrap_token_and_stops_on_sigterm() {
    let dir = Dir::new("first");
    let data = dir.0.join("data");
    let data = data.to_str().unwrap_or_default();
    let served = Served::start(&["--data-dir", data, "--listen", "127.0.0.1:0"], &[]);
    let file = std::path::Path::new(data).join("bootstrap-token");
    let token = std::fs::read_to_string(&file).expect("bootstrap-token written").trim().to_owned();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).map(|m| m.permissions().mode() & 0o777).unwrap_or(0), 0o600);
    assert_eq!(served.status(&token), 200);
    assert_eq!(served.status("nope"), 401);
    let rx_lines: Vec<String> = served.stderr.try_iter().collect();
    assert!(!rx_lines.iter().any(|l| l.contains(&token) && l.contains("INFO")), "the token is not logged");
    assert!(served.terminate().success(), "SIGTERM is a clean exit");

    // A second start on the same store creates no new token.
    let served = Served::start(&["--data-dir", data, "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(std::fs::read_to_string(&file).unwrap_or_default().trim(), token);
    let (ok, list, _) = haken(&["token", "list", "--data-dir", data]);
    assert!(ok);
    assert_eq!(list.lines().count(), 2, "header and one token: {list}");
    assert!(served.terminate().success());
}

#[test]
fn token_commands_create_list_and_revoke() {
    let dir = Dir::new("tokens");
    let data = dir.0.to_str().unwrap_or_default();
    let (ok, out, err) = haken(&["token", "create", "--data-dir", data, "--name", "ci"]);
    assert!(ok, "{err}");
    let token = out.trim().to_owned();
    assert!(token.len() >= 40);
    let served = Served::start(&["--data-dir", data, "--listen", "127.0.0.1:0"], &[]);
    assert!(
        !std::path::Path::new(data).join("bootstrap-token").exists(),
        "a store with tokens gets no bootstrap token"
    );
    assert_eq!(served.status(&token), 200);
    let (ok, _, err) = haken(&["token", "revoke", "ci", "--data-dir", data]);
    assert!(ok, "{err}");
    // Another process revoked it: the server sees that within its one-second read cache.
    let deadline = Instant::now() + Duration::from_secs(3);
    while served.status(&token) != 401 {
        assert!(Instant::now() < deadline, "revocation did not take effect");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, list, _) = haken(&["token", "list", "--data-dir", data]);
    assert!(list.contains("REVOKED"), "{list}");
    assert!(!list.contains(&token), "values are never listed");
    let (ok, _, err) = haken(&["token", "revoke", "nope", "--data-dir", data]);
    assert!(!ok);
    assert!(err.contains("E0000007"), "{err}");
    assert!(served.terminate().success());
}

#[test]
fn bootstrap_token_env_is_idempotent_and_flags_beat_env() {
    let dir = Dir::new("boot");
    let data = dir.0.to_str().unwrap_or_default();
    let token = "bootstrap-0123456789-abcdef";
    // HAKEN_LISTEN names a port that is taken; the --listen flag wins over it.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = blocker.local_addr().map(|a| a.to_string()).unwrap_or_default();
    for _ in 0..2 {
        let served = Served::start(
            &["--listen", "127.0.0.1:0"],
            &[("HAKEN_BOOTSTRAP_TOKEN", token), ("HAKEN_DATA_DIR", data), ("HAKEN_LISTEN", &taken)],
        );
        assert_eq!(served.status(token), 200);
        assert!(served.terminate().success());
    }
    let (_, list, _) = haken(&["token", "list", "--data-dir", data]);
    assert_eq!(list.lines().count(), 2, "one token after two starts: {list}");

    let (ok, _, err) = haken(&["serve", "--data-dir", data, "--listen", &taken]);
    assert!(!ok, "a taken port is an error");
    assert!(err.contains("cannot listen"), "{err}");
    drop(blocker);
}

#[test]
fn bad_configuration_is_reported() {
    let dir = Dir::new("cfg");
    let file = dir.0.join("haken.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nrate_limit = 5\n").expect("write");
    let (ok, _, err) = haken(&["--config", file.to_str().unwrap_or_default(), "serve"]);
    assert!(!ok);
    assert!(err.contains("rate_limit"), "the unknown key is named: {err}");
    let (ok, _, err) = haken(&["serve", "--database-url", "mysql://x"]);
    assert!(!ok);
    assert!(err.contains("unsupported database URL"), "{err}");
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
