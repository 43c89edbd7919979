//! Applications (Okta's `/api/v1/apps` objects) and the user import jobs that read users from
//! them. An app's import configuration — which inline hook transforms rows, how rows are
//! matched to existing users, how source columns map to profile attributes — is Haken's own
//! part of the app, kept under `settings.import`. The wire shapes are built by the server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// `ACTIVE` or `INACTIVE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppStatus {
    Active,
    Inactive,
}

impl AppStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AppStatus::Active => "ACTIVE",
            AppStatus::Inactive => "INACTIVE",
        }
    }
}

/// Okta's sign-on modes. An import source is `BOOKMARK` or `AUTO_LOGIN`; the others are
/// accepted so OIDC and SAML apps fit the same object.
pub const SIGN_ON_MODES: &[&str] = &[
    "BOOKMARK",
    "AUTO_LOGIN",
    "BASIC_AUTH",
    "BROWSER_PLUGIN",
    "SECURE_PASSWORD_STORE",
    "WS_FEDERATION",
    "OPENID_CONNECT",
    "SAML_1_1",
    "SAML_2_0",
];

/// A rule that matches an imported row to an existing user (Okta's import matching `policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MatchRule {
    /// The mapped `login` equals a user's login (ignoring case).
    #[serde(rename = "LOGIN")]
    Login,
    /// The mapped `email` equals a user's email (ignoring case).
    #[serde(rename = "EMAIL")]
    Email,
    /// The mapped `firstName` and `lastName` both equal a user's (ignoring case).
    #[serde(rename = "FIRST_AND_LAST_NAME")]
    FirstAndLastName,
}

impl MatchRule {
    pub const ALL: [MatchRule; 3] = [MatchRule::Login, MatchRule::Email, MatchRule::FirstAndLastName];

    pub fn as_str(self) -> &'static str {
        match self {
            MatchRule::Login => "LOGIN",
            MatchRule::Email => "EMAIL",
            MatchRule::FirstAndLastName => "FIRST_AND_LAST_NAME",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        MatchRule::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// How users are imported from an app (`settings.import`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportSettings {
    /// The user import inline hook (`com.okta.import.transform`) that sees every row.
    #[serde(default)]
    pub inline_hook_id: Option<String>,
    /// Matching rules in order of precedence; the first rule that finds a user wins.
    #[serde(default = "default_matching")]
    pub matching: Vec<MatchRule>,
    /// Profile attribute → source column. Attributes not named here take the column of the
    /// same name; `login` falls back to `userName`.
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
    /// Created users are activated (`ACTIVE` with a password hook, else `PROVISIONED`);
    /// `false` creates them `STAGED`.
    #[serde(default = "yes")]
    pub activate: bool,
    /// Created users get their password from the password import hook at first sign-in.
    #[serde(default)]
    pub password_hook: bool,
}

fn default_matching() -> Vec<MatchRule> {
    vec![MatchRule::Login]
}

fn yes() -> bool {
    true
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings {
            inline_hook_id: None,
            matching: default_matching(),
            mapping: BTreeMap::new(),
            activate: true,
            password_hook: false,
        }
    }
}

/// An application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub id: String,
    /// The app type key (`bookmark`, `oidc_client`, `saml_2_0`, `haken_import`, ...).
    pub name: String,
    pub label: String,
    pub status: AppStatus,
    pub sign_on_mode: String,
    pub created: Timestamp,
    pub last_updated: Timestamp,
    #[serde(default)]
    pub features: Vec<String>,
    /// `settings` as given, except `settings.import`, which lives in [`App::import`].
    #[serde(default)]
    pub settings: Map<String, Value>,
    #[serde(default)]
    pub profile: Map<String, Value>,
    #[serde(default)]
    pub import: Option<ImportSettings>,
}

impl App {
    pub fn is_active(&self) -> bool {
        self.status == AppStatus::Active
    }

    /// The import settings in force (defaults when none are configured).
    pub fn import_settings(&self) -> ImportSettings {
        self.import.clone().unwrap_or_default()
    }
}

/// The `type` of an import job (spec 4.2 `data.context.job.type`).
pub const IMPORT_JOB_TYPE: &str = "import:users";
/// Prefix of import job ids (`ijb…`, 20 characters like Okta's ids).
pub const IMPORT_JOB_PREFIX: &str = "ijb";
/// How many failed rows a job keeps with their reasons; the rest are only counted.
pub const MAX_FAILED_ROWS: usize = 1_000;

/// `RUNNING`, `COMPLETED` or `FAILED` (the whole job; rows fail on their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Running,
    Completed,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "RUNNING",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed => "FAILED",
        }
    }
}

/// The source format of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportFormat {
    /// A header row of source attribute names, then one user per row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl ImportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportFormat::Csv => "csv",
            ImportFormat::Jsonl => "jsonl",
        }
    }
}

/// What happened to the rows of a job so far. Every row ends in exactly one of `created`,
/// `updated`, `skipped` or `failed`; `linked` counts the rows linked to an existing user
/// (`updated` + `skipped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImportCounts {
    pub rows: u64,
    pub created: u64,
    pub linked: u64,
    pub updated: u64,
    pub skipped: u64,
    pub failed: u64,
}

/// A row that failed, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRow {
    /// 1-based number of the record in the file (the CSV header is not counted).
    pub row: u64,
    pub reason: String,
    /// The row's login, when it got that far.
    #[serde(default)]
    pub login: Option<String>,
}

/// One import of users from an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportJob {
    pub id: String,
    pub app_id: String,
    pub status: JobStatus,
    pub format: ImportFormat,
    pub password_hook: bool,
    /// Size of the uploaded file in bytes.
    pub bytes: u64,
    pub created: Timestamp,
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    pub counts: ImportCounts,
    /// Rows per second over the job's run so far.
    pub rate: f64,
    pub failed_rows: Vec<FailedRow>,
    /// Failed rows beyond [`MAX_FAILED_ROWS`], counted but not kept.
    pub failed_rows_omitted: u64,
    /// Why the whole job failed (unreadable file, store down).
    pub error: Option<String>,
    /// When the running job last committed a batch; a job silent for
    /// [`ABANDONED_AFTER_MS`] lost its server.
    #[serde(default)]
    pub heartbeat: Option<Timestamp>,
}

/// A `RUNNING` job that has committed nothing for this long was cut off (its server crashed
/// or restarted). Batches are far shorter: 200 rows or 20 ms, each hook call at most 2 × 30 s.
pub const ABANDONED_AFTER_MS: i64 = 5 * 60 * 1000;

impl ImportJob {
    /// Whether the job says `RUNNING` but its server stopped running it.
    pub fn is_abandoned(&self, now: Timestamp) -> bool {
        self.status == JobStatus::Running
            && self.heartbeat.or(self.started).unwrap_or(self.created).millis() + ABANDONED_AFTER_MS < now.millis()
    }

    /// The job as it stands once it is known to be abandoned.
    pub fn abandon(&mut self, now: Timestamp) {
        self.status = JobStatus::Failed;
        self.finished = Some(now);
        self.error = Some(
            "the import stopped before the end of the file (the server running it stopped); the rows counted were \
             committed — import the file again: rows already imported are matched, not created twice"
                .to_owned(),
        );
    }

    /// Records a failed row, keeping at most [`MAX_FAILED_ROWS`].
    pub fn fail_row(&mut self, row: FailedRow) {
        self.counts.failed += 1;
        if self.failed_rows.len() < MAX_FAILED_ROWS {
            self.failed_rows.push(row);
        } else {
            self.failed_rows_omitted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_and_defaults_hold() {
        for r in MatchRule::ALL {
            assert_eq!(MatchRule::parse(r.as_str()), Some(r));
        }
        assert_eq!(MatchRule::parse("login"), None);
        let s: ImportSettings = serde_json::from_str("{}")
            .unwrap_or_else(|_| ImportSettings { activate: false, ..ImportSettings::default() });
        assert_eq!(s, ImportSettings::default());
        assert!(s.activate && s.matching == vec![MatchRule::Login]);
    }

    #[test]
    fn failed_rows_are_capped() {
        let mut job = ImportJob {
            id: "ijb1".into(),
            app_id: "0oa1".into(),
            status: JobStatus::Running,
            format: ImportFormat::Csv,
            password_hook: false,
            bytes: 0,
            created: Timestamp(0),
            started: None,
            finished: None,
            counts: ImportCounts::default(),
            rate: 0.0,
            failed_rows: Vec::new(),
            failed_rows_omitted: 0,
            error: None,
            heartbeat: None,
        };
        assert!(!job.is_abandoned(Timestamp(ABANDONED_AFTER_MS)));
        assert!(job.is_abandoned(Timestamp(ABANDONED_AFTER_MS + 1)));
        for i in 0..(MAX_FAILED_ROWS as u64 + 5) {
            job.fail_row(FailedRow { row: i, reason: "x".into(), login: None });
        }
        assert_eq!(job.failed_rows.len(), MAX_FAILED_ROWS);
        assert_eq!(job.failed_rows_omitted, 5);
        assert_eq!(job.counts.failed, MAX_FAILED_ROWS as u64 + 5);
    }
}
