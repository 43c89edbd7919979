//! `haken users import FILE --app APP_ID`: streams a CSV or JSON Lines file to
//! `POST /api/v1/apps/{appId}/imports` (from disk, never read whole into memory), follows the
//! job until it ends — with a progress line when stdout is a terminal — and prints the report:
//! counts and every failed row with its reason, or with `--json` the job as one JSON object.
//! The exit code is non-zero only when the job failed as a whole (or never started); rows
//! that fail are part of a successful run's report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Url;
use serde_json::Value;

use crate::hooks_cli::{Api, ApiFlags};

#[derive(Debug, Subcommand)]
pub enum UsersAction {
    /// Import users from a CSV file (header row = source attribute names) or a JSON Lines file
    /// (one object per line) through an app's import settings and inline hook.
    Import(ImportArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file to import.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The app whose import settings (matching, mapping, inline hook) apply.
    #[arg(long, value_name = "APP_ID")]
    app: String,
    /// File format [default: from the extension: .csv, or .jsonl / .ndjson].
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Created users get their password from the password import hook at first sign-in.
    #[arg(long)]
    password_hook: bool,
    /// Print the final job as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub async fn run(api: ApiFlags, action: UsersAction) -> anyhow::Result<()> {
    match action {
        UsersAction::Import(args) => import(&Api::new(api)?, args).await,
    }
}

fn format_of(args: &ImportArgs) -> anyhow::Result<Format> {
    if let Some(f) = args.format {
        return Ok(f);
    }
    let ext = args.file.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    match ext.as_str() {
        "csv" => Ok(Format::Csv),
        "jsonl" | "ndjson" => Ok(Format::Jsonl),
        _ => bail!(
            "cannot tell the format of {} from its name: pass --format csv or --format jsonl",
            args.file.display()
        ),
    }
}

fn app_url(api: &Api, app: &str, rest: &[&str]) -> anyhow::Result<Url> {
    api.url(&[&["apps", app, "imports"], rest].concat())
}

async fn import(api: &Api, args: ImportArgs) -> anyhow::Result<()> {
    let format = format_of(&args)?;
    let file = tokio::fs::File::open(&args.file).await.with_context(|| format!("opening {}", args.file.display()))?;
    let size = file.metadata().await.with_context(|| format!("reading {}", args.file.display()))?.len();
    let mut url = app_url(api, &args.app, &[])?;
    if args.password_hook {
        url.query_pairs_mut().append_pair("passwordHook", "true");
    }
    let content_type = match format {
        Format::Csv => "text/csv",
        Format::Jsonl => "application/x-ndjson",
    };
    // The upload may take long: no overall timeout, only one for connecting.
    let upload = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("haken-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")?;
    let resp = upload
        .post(url.clone())
        .header("Authorization", format!("SSWS {}", api.token))
        .header("Accept", "application/json")
        .header("Content-Type", content_type)
        .header("Content-Length", size)
        .body(reqwest::Body::from(file))
        .send()
        .await
        .with_context(|| format!("cannot reach Haken at {} (is it running?)", api.base))?;
    let status = resp.status();
    let bytes = resp.bytes().await.context("reading the answer to the upload")?;
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    if !status.is_success() {
        return Err(api.error(status, body.as_ref(), &bytes));
    }
    let job = body.ok_or_else(|| anyhow!("the upload was answered {status} with a body that is not JSON"))?;
    let job_id = job["id"].as_str().ok_or_else(|| anyhow!("the upload's answer names no job: {job}"))?.to_owned();
    let job_url = app_url(api, &args.app, &[&job_id])?;

    let bar = (!args.json && std::io::stdout().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    let started = Instant::now();
    let mut job = job;
    while job["status"] == "RUNNING" {
        if let Some(b) = &bar {
            let c = &job["counts"];
            b.set_message(format!(
                "{} rows: {} created, {} linked, {} failed ({} rows/s)",
                c["rows"], c["created"], c["linked"], c["failed"], job["rate"]
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        job = api.get(job_url.clone()).await?.1;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if args.json {
        println!("{job}");
    } else {
        print!("{}", report(&job, started.elapsed()));
    }
    if job["status"] != "COMPLETED" {
        bail!("the import {job_id} failed: {}", job["error"].as_str().unwrap_or("no reason given"));
    }
    Ok(())
}

/// The human report: status, counts, and each failed row with its reason.
fn report(job: &Value, waited: Duration) -> String {
    let c = &job["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    let mut out = format!(
        "Import {} {}: {} rows in {:.1} s ({} rows/s)\n  created {}, linked {} (updated {}, skipped {}), failed {}\n",
        job["id"].as_str().unwrap_or("-"),
        job["status"].as_str().unwrap_or("-"),
        n("rows"),
        waited.as_secs_f64(),
        job["rate"],
        n("created"),
        n("linked"),
        n("updated"),
        n("skipped"),
        n("failed"),
    );
    for r in job["failedRows"].as_array().into_iter().flatten() {
        let login = r["login"].as_str().map(|l| format!(" ({l})")).unwrap_or_default();
        out.push_str(&format!("  row {}{login}: {}\n", r["row"], r["reason"].as_str().unwrap_or("-")));
    }
    if let Some(more) = job["failedRowsOmitted"].as_u64().filter(|m| *m > 0) {
        out.push_str(&format!("  … and {more} more failed rows (only the first 1000 are kept)\n"));
    }
    if let Some(e) = job["error"].as_str() {
        out.push_str(&format!("  error: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_counts_and_failed_rows() {
        let job = json!({ "id": "ijb1", "status": "COMPLETED", "rate": 10.0,
            "counts": { "rows": 3, "created": 1, "linked": 1, "updated": 0, "skipped": 1, "failed": 1 },
            "failedRows": [{ "row": 2, "reason": "bad login", "login": "x" }], "failedRowsOmitted": 4 });
        let r = report(&job, Duration::from_millis(1500));
        assert!(r.contains("created 1, linked 1 (updated 0, skipped 1), failed 1"), "{r}");
        assert!(r.contains("row 2 (x): bad login"), "{r}");
        assert!(r.contains("4 more"), "{r}");
    }
}
