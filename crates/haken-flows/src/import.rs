//! User import from an app (spec 4.2): a CSV or JSON Lines file is read row by row, each row
//! is mapped to an Okta profile, matched to existing users by the app's rules, shown to the
//! app's user import inline hook (`com.okta.import.transform`) when it has an active one, and
//! applied — a new user, or a profile update of the linked user.
//!
//! The job streams: a reader thread parses the file into a bounded channel, up to
//! [`IN_FLIGHT`] rows are matched and sent to the hook at once (in file order), and a writer
//! commits up to [`BATCH_ROWS`] rows per store transaction (or what arrived within
//! [`BATCH_WAIT`]) together with their System Log events and the job's counters. A batch that
//! cannot commit is retried row by row, so one bad row fails alone. Memory stays flat except
//! for one 8-byte digest per row, which is how a login seen twice in the file is caught.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use haken_core::app::{
    App, FailedRow, IMPORT_JOB_PREFIX, IMPORT_JOB_TYPE, ImportCounts, ImportFormat, ImportJob, ImportSettings,
    JobStatus, MatchRule,
};
use haken_core::id::random_base62;
use haken_core::inline_hook::InlineHook;
use haken_core::log_event::{EventContext, LogEvent, Target};
use haken_core::schema::{AttrType, UserSchema};
use haken_core::user::StoredCredentials;
use haken_core::{ApiError, Timestamp, User, UserStatus};
use haken_hooks::inline::commands::{self, ImportAction, ImportEffect};
use haken_hooks::inline::{Decision, InlineCaller};
use haken_store::{Change, ImportRow, RowWrite, Store, StoreError};
use serde_json::{Map, Value, json};

use crate::apps::app_target;
use crate::directory::{DEFAULT_USER_TYPE, changed_attributes};
use crate::{schema, store_error};

/// Rows matched and sent to the hook at the same time.
pub const IN_FLIGHT: usize = 32;
/// Most rows committed in one store transaction.
pub const BATCH_ROWS: usize = 200;
/// Longest a row waits for its batch to fill before the batch is committed anyway.
pub const BATCH_WAIT: Duration = Duration::from_millis(20);
/// Longest JSON Lines line (one user).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Columns of a CSV file read at most.
pub const MAX_COLUMNS: usize = 1000;
/// Users one matching rule may find for a row before the rest are ignored.
const MAX_MATCHES: i64 = 10;

/// Apps with an import running in this process (one import per app at a time).
static RUNNING: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Whether an import of `app_id` runs in this process.
pub fn is_running(app_id: &str) -> bool {
    RUNNING.lock().map(|s| s.as_ref().is_some_and(|s| s.contains(app_id))).unwrap_or(false)
}

fn claim(app_id: &str) -> bool {
    match RUNNING.lock() {
        Ok(mut s) => s.get_or_insert_with(HashSet::new).insert(app_id.to_owned()),
        Err(_) => false,
    }
}

fn release(app_id: &str) {
    if let Ok(mut s) = RUNNING.lock()
        && let Some(set) = s.as_mut()
    {
        set.remove(app_id);
    }
}

/// Removes the app from [`RUNNING`] however the job ends.
struct Claim(String);

impl Drop for Claim {
    fn drop(&mut self) {
        release(&self.0);
    }
}

/// A fresh job id (`ijb` and 17 base-62 characters).
pub fn new_job_id() -> String {
    format!("{IMPORT_JOB_PREFIX}{}", random_base62(17))
}

/// What the job needs from the process that runs it.
#[derive(Clone)]
pub struct ImportEnv {
    pub store: Store,
    pub inline: Arc<InlineCaller>,
    /// A user as the API renders it (the hook's `data.context.matches`).
    pub render_user: Arc<dyn Fn(&User) -> Value + Send + Sync>,
}

/// Options of one import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub format: ImportFormat,
    /// Overrides the app's `settings.import.passwordHook`.
    pub password_hook: Option<bool>,
}

/// The job context of an import's events: the caller who started it, as a `JOB` transaction
/// named by the job id.
fn job_context(ctx: &EventContext, job_id: &str) -> EventContext {
    let mut ctx = ctx.clone();
    ctx.transaction_type = "JOB";
    ctx.request_id = job_id.to_owned();
    ctx
}

fn job_target(job: &ImportJob) -> Target {
    Target {
        id: job.id.clone(),
        kind: "ImportJob".to_owned(),
        alternate_id: Some(IMPORT_JOB_TYPE.to_owned()),
        display_name: Some("User import".to_owned()),
        detail_entry: None,
        change_details: None,
    }
}

/// A started import: the job as stored, and the claim that the app is busy.
pub struct Started {
    pub job: ImportJob,
    claim: Claim,
}

/// Records a new job (`RUNNING`, with `system.import.start`) for a file already on disk.
/// Refused when the app is inactive or already importing in this process.
pub async fn start_job(
    store: &Store,
    ctx: &EventContext,
    app: &App,
    job_id: String,
    opts: &ImportOptions,
    bytes: u64,
    now: Timestamp,
) -> Result<Started, ApiError> {
    if !app.is_active() {
        return Err(ApiError::validation("status", "the app is INACTIVE; activate it to import users"));
    }
    if !claim(&app.id) {
        return Err(ApiError::validation("id", "an import of this app is running; wait for it to finish"));
    }
    let claim = Claim(app.id.clone());
    let settings = app.import_settings();
    let job = ImportJob {
        id: job_id,
        app_id: app.id.clone(),
        status: JobStatus::Running,
        format: opts.format,
        password_hook: opts.password_hook.unwrap_or(settings.password_hook),
        bytes,
        created: now,
        started: Some(now),
        finished: None,
        counts: ImportCounts::default(),
        rate: 0.0,
        failed_rows: Vec::new(),
        failed_rows_omitted: 0,
        error: None,
        heartbeat: Some(now),
    };
    let jctx = job_context(ctx, &job.id);
    let ev = jctx
        .event("system.import.start", "Import started", now)
        .with_target(app_target(app))
        .with_target(job_target(&job))
        .with_debug("format", Value::String(job.format.as_str().to_owned()));
    store.insert_doc(&job, &[ev]).await.map_err(|e| store_error(e, "ImportJob", &job.id))?;
    Ok(Started { job, claim })
}

pub async fn get_job(store: &Store, app_id: &str, job_id: &str) -> Result<ImportJob, ApiError> {
    let job = match store.get_doc::<ImportJob>(job_id).await.map_err(|e| store_error(e, "ImportJob", job_id))? {
        Some(j) if j.app_id == app_id => j,
        _ => return Err(ApiError::not_found(job_id, "ImportJob")),
    };
    let now = Timestamp::now();
    if !job.is_abandoned(now) || is_running(app_id) {
        return Ok(job);
    }
    // Its server is gone: record the end, so every node answers the same from now on.
    let settled = store
        .update_doc::<ImportJob, StoreError, _>(job_id, move |mut j| {
            if !j.is_abandoned(now) {
                return Ok(None);
            }
            j.abandon(now);
            let ev = EventContext::system("import")
                .event("system.import.complete", "Import stopped before the end of the file", now)
                .with_target(job_target(&j))
                .with_outcome("FAILURE", Some("ABANDONED"));
            Ok(Some(Change { value: j, events: vec![ev] }))
        })
        .await;
    match settled {
        Ok(j) => Ok(j),
        Err(e) => {
            tracing::warn!(job_id, error = %e, "Could not record an abandoned import job.");
            let mut j = job;
            j.abandon(now);
            Ok(j)
        }
    }
}

/// A listed job as [`get_job`] would show it (an abandoned one as failed).
pub fn settled(mut job: ImportJob, now: Timestamp) -> ImportJob {
    if job.is_abandoned(now) && !is_running(&job.app_id) {
        job.abandon(now);
    }
    job
}

// ---- reading the file ----

/// One record of the file.
#[derive(Debug)]
enum Source {
    Row { n: u64, values: Map<String, Value> },
    Bad { n: u64, reason: String },
}

type Sink = tokio::sync::mpsc::Sender<Source>;

/// Reads the file into `tx`; an error means the file as a whole is unreadable.
fn read_file(path: &Path, format: ImportFormat, tx: &Sink) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open the uploaded file: {e}"))?;
    let reader = std::io::BufReader::with_capacity(64 * 1024, file);
    match format {
        ImportFormat::Csv => read_csv(reader, tx),
        ImportFormat::Jsonl => read_jsonl(reader, tx),
    }
}

fn send(tx: &Sink, s: Source) -> Result<(), String> {
    // The job stopped listening (it failed): stop reading.
    tx.blocking_send(s).map_err(|_| "the import stopped".to_owned())
}

fn read_csv<R: Read>(reader: R, tx: &Sink) -> Result<(), String> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(reader);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| format!("the header row cannot be read: {e}"))?
        .iter()
        .enumerate()
        // A byte order mark is not part of the first column's name.
        .map(|(i, h)| if i == 0 { h.trim_start_matches('\u{feff}') } else { h }.trim().to_owned())
        .collect();
    if headers.is_empty() || headers.iter().all(String::is_empty) {
        return Err("the file has no header row (the first row names the source attributes)".into());
    }
    if headers.len() > MAX_COLUMNS {
        return Err(format!("the header row has {} columns; at most {MAX_COLUMNS} are read", headers.len()));
    }
    let mut named = HashSet::with_capacity(headers.len());
    for (i, h) in headers.iter().enumerate() {
        if h.is_empty() {
            return Err(format!("column {} of the header row has no name", i + 1));
        }
        if !named.insert(h.as_str()) {
            return Err(format!("the header row names the column '{h}' twice"));
        }
    }
    let mut record = csv::StringRecord::new();
    let mut n = 0u64;
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) if record.as_byte_record().as_slice().len() > MAX_LINE_BYTES => {
                n += 1;
                send(tx, Source::Bad { n, reason: format!("the row is longer than {MAX_LINE_BYTES} bytes") })?;
            }
            Ok(true) => {
                n += 1;
                let values = headers
                    .iter()
                    .zip(record.iter())
                    .map(|(h, v)| (h.clone(), if v.is_empty() { Value::Null } else { Value::String(v.to_owned()) }))
                    .collect();
                send(tx, Source::Row { n, values })?;
            }
            Err(e) => {
                n += 1;
                let reason = match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!("the row has {len} fields; the header row has {expected_len}")
                    }
                    csv::ErrorKind::Utf8 { .. } => "the row is not valid UTF-8".to_owned(),
                    csv::ErrorKind::Io(io) => return Err(format!("reading the file failed: {io}")),
                    _ => format!("the row cannot be read: {e}"),
                };
                send(tx, Source::Bad { n, reason })?;
            }
        }
    }
}

fn read_jsonl<R: Read>(reader: R, tx: &Sink) -> Result<(), String> {
    let mut reader = std::io::BufReader::new(reader);
    let mut buf = Vec::with_capacity(4096);
    let mut n = 0u64;
    loop {
        buf.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("reading the file failed: {e}"))?;
        if read == 0 {
            return Ok(());
        }
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            // Skip the rest of the oversized line without holding it.
            loop {
                let (done, used) = {
                    let chunk = reader.fill_buf().map_err(|e| format!("reading the file failed: {e}"))?;
                    match chunk.iter().position(|b| *b == b'\n') {
                        Some(p) => (true, p + 1),
                        None => (chunk.is_empty(), chunk.len()),
                    }
                };
                reader.consume(used);
                if done {
                    break;
                }
            }
            n += 1;
            send(tx, Source::Bad { n, reason: format!("the line is longer than {MAX_LINE_BYTES} bytes") })?;
            continue;
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        n += 1;
        let s = match serde_json::from_slice::<Value>(&buf) {
            Ok(Value::Object(values)) => Source::Row { n, values },
            Ok(_) => Source::Bad { n, reason: "the line is not a JSON object".into() },
            Err(e) => Source::Bad { n, reason: format!("the line is not valid JSON: {e}") },
        };
        send(tx, s)?;
    }
}

// ---- mapping and matching ----

/// Turns a source value into the attribute's type where the text says so (CSV cells are text).
fn coerce(kind: AttrType, v: &Value) -> Value {
    let Value::String(s) = v else { return v.clone() };
    let t = s.trim();
    match kind {
        AttrType::Boolean if t.eq_ignore_ascii_case("true") => Value::Bool(true),
        AttrType::Boolean if t.eq_ignore_ascii_case("false") => Value::Bool(false),
        AttrType::Integer => t.parse::<i64>().map(Value::from).unwrap_or_else(|_| v.clone()),
        AttrType::Number => {
            t.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or_else(|| v.clone(), Value::Number)
        }
        AttrType::Array if t.starts_with('[') => serde_json::from_str(t).unwrap_or_else(|_| v.clone()),
        _ => v.clone(),
    }
}

/// The Okta profile of an app-side profile: each schema attribute takes its mapped column,
/// else the column of the same name, else (`login` only) `userName`. Absent and null values
/// are left out.
pub fn map_profile(
    schema: &UserSchema,
    mapping: &std::collections::BTreeMap<String, String>,
    app: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for attr in schema.base.iter().chain(schema.custom.iter()) {
        let source = match mapping.get(&attr.name) {
            Some(col) => app.get(col),
            None => app.get(&attr.name).or_else(|| if attr.name == "login" { app.get("userName") } else { None }),
        };
        if let Some(v) = source.filter(|v| !v.is_null()) {
            out.insert(attr.name.clone(), coerce(attr.kind, v));
        }
    }
    out
}

fn text<'a>(p: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    p.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The users the first matching rule finds, and that rule.
async fn find_matches(
    store: &Store,
    rules: &[MatchRule],
    profile: &Map<String, Value>,
    known: &KnownLogins,
) -> Result<(Vec<User>, Option<MatchRule>), StoreError> {
    for rule in rules {
        let found = match rule {
            MatchRule::Login => match text(profile, "login") {
                Some(l) => match known.get(&l.to_lowercase()) {
                    Some(found) => found.iter().cloned().collect(),
                    None => store.user_by_login(l).await?.into_iter().collect(),
                },
                None => Vec::new(),
            },
            MatchRule::Email => match text(profile, "email") {
                Some(e) => store.users_by_email(e, MAX_MATCHES).await?,
                None => Vec::new(),
            },
            MatchRule::FirstAndLastName => match (text(profile, "firstName"), text(profile, "lastName")) {
                (Some(f), Some(l)) => store.users_by_name(f, l, MAX_MATCHES).await?,
                _ => Vec::new(),
            },
        };
        if !found.is_empty() {
            return Ok((found, Some(*rule)));
        }
    }
    Ok((Vec::new(), None))
}

/// Attributes of the row whose value differs from a matched user's.
fn conflicts(profile: &Map<String, Value>, matches: &[User]) -> Vec<String> {
    let mut names: Vec<String> = profile
        .iter()
        .filter(|(k, v)| matches.iter().any(|u| u.profile.get(*k) != Some(*v)))
        .map(|(k, _)| k.clone())
        .collect();
    names.sort();
    names
}

// ---- one row ----

/// Everything a row's planning reads, shared by the rows in flight.
struct Job {
    env: ImportEnv,
    app: App,
    settings: ImportSettings,
    hook: Option<InlineHook>,
    schema: Arc<UserSchema>,
    ctx: EventContext,
    job_id: String,
    password_hook: bool,
}

/// What a row will do.
#[derive(Debug)]
enum Outcome {
    Create(Box<User>),
    /// Set `patch` on the user (empty: nothing changes, the row is skipped).
    Link {
        user_id: String,
        login: String,
        patch: Map<String, Value>,
    },
    Fail(String),
}

#[derive(Debug)]
struct Planned {
    n: u64,
    login: Option<String>,
    outcome: Outcome,
    events: Vec<LogEvent>,
}

fn reason_of(e: &ApiError) -> String {
    if e.causes.is_empty() { e.summary.clone() } else { e.causes.join("; ") }
}

/// Users found by login for a chunk of rows, looked up in one query before the rows are planned
/// (`None`: the login is not taken).
type KnownLogins = HashMap<String, Option<User>>;

/// How many rows share one login lookup.
const LOOKUP_CHUNK: usize = 64;

/// Looks up the logins of a chunk of rows at once, when login matching is on.
async fn prefetch_logins(job: &Job, chunk: &[Source]) -> Arc<KnownLogins> {
    let mut known = KnownLogins::new();
    if !job.settings.matching.contains(&MatchRule::Login) {
        return Arc::new(known);
    }
    let logins: Vec<String> = chunk
        .iter()
        .filter_map(|src| match src {
            Source::Row { values, .. } => {
                let profile = map_profile(&job.schema, &job.settings.mapping, values);
                text(&profile, "login").map(str::to_lowercase)
            }
            Source::Bad { .. } => None,
        })
        .collect();
    match job.env.store.users_by_logins(&logins).await {
        Ok(users) => {
            for l in logins {
                known.insert(l, None);
            }
            for u in users {
                known.insert(u.login().to_lowercase(), Some(u));
            }
        }
        // Each row then asks on its own.
        Err(e) => tracing::warn!(error = %e, "Looking up a chunk of logins failed."),
    }
    Arc::new(known)
}

async fn plan(job: &Job, src: Source, known: &KnownLogins) -> Planned {
    let (n, app_profile) = match src {
        Source::Row { n, values } => (n, values),
        Source::Bad { n, reason } => {
            return Planned { n, login: None, outcome: Outcome::Fail(reason), events: Vec::new() };
        }
    };
    let mut events = Vec::new();
    match plan_row(job, n, app_profile, known, &mut events).await {
        Ok((login, outcome)) => Planned { n, login, outcome, events },
        Err(reason) => Planned { n, login: None, outcome: Outcome::Fail(reason), events },
    }
}

async fn plan_row(
    job: &Job,
    n: u64,
    mut app_profile: Map<String, Value>,
    known: &KnownLogins,
    events: &mut Vec<LogEvent>,
) -> Result<(Option<String>, Outcome), String> {
    let store = &job.env.store;
    let store_failed = |e: StoreError| format!("reading the directory failed: {e}");
    let mut profile = map_profile(&job.schema, &job.settings.mapping, &app_profile);
    let (matches, _rule) = find_matches(store, &job.settings.matching, &profile, known).await.map_err(store_failed)?;
    let default = if matches.is_empty() { ImportAction::CreateUser } else { ImportAction::LinkUser };
    let mut action: Option<ImportAction> = None;
    let mut link_to: Option<String> = None;

    if let Some(hook) = &job.hook {
        let mut user = json!({ "profile": profile });
        if matches.len() == 1 {
            user["id"] = Value::String(matches[0].id.clone());
        }
        let data = json!({
            "context": {
                "conflicts": conflicts(&profile, &matches),
                "application": {
                    "name": job.app.name,
                    "id": job.app.id,
                    "label": job.app.label,
                    "status": job.app.status.as_str(),
                },
                "job": { "id": job.job_id, "type": IMPORT_JOB_TYPE },
                "matches": matches.iter().map(|u| (job.env.render_user)(u)).collect::<Vec<_>>(),
                "policy": job.settings.matching.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            },
            "action": { "result": default.as_str() },
            "appUser": { "profile": app_profile },
            "user": user,
        });
        let payload = job.env.inline.envelope(hook, None, data, Timestamp::now());
        let schema = &job.schema;
        let exec = job.env.inline.run(hook, &job.ctx, &payload, |resp| commands::import(resp, schema)).await;
        let mut hook_events = exec.events;
        for ev in &mut hook_events {
            *ev = ev
                .clone()
                .with_debug("importJobId", Value::String(job.job_id.clone()))
                .with_debug("importRow", json!(n));
        }
        match exec.decision {
            Decision::Apply(ImportEffect { error_summary: Some(summary), .. }) => {
                // Okta writes a failure event with the errorSummary; the default action applies.
                if let Some(last) = hook_events.last_mut() {
                    *last = last.clone().with_outcome("FAILURE", Some("HOOK_ERROR"));
                }
                tracing::info!(job_id = %job.job_id, row = n, error_summary = %summary, "Import hook answered an error; the default action applies.");
            }
            Decision::Apply(effect) => {
                if !effect.app_user_profile.is_empty() {
                    for (k, v) in effect.app_user_profile {
                        app_profile.insert(k, v);
                    }
                    profile = map_profile(&job.schema, &job.settings.mapping, &app_profile);
                }
                for (k, v) in effect.user_profile {
                    if v.is_null() {
                        profile.remove(&k);
                    } else {
                        profile.insert(k, v);
                    }
                }
                action = effect.action;
                link_to = effect.link_to;
            }
            Decision::Proceed => {}
            Decision::Stop(failure) => {
                events.extend(hook_events);
                return Err(format!("the import hook failed and fails closed: {failure}"));
            }
        }
        events.extend(hook_events);
    }

    let login = text(&profile, "login").map(str::to_owned);
    match action.unwrap_or(default) {
        ImportAction::CreateUser => {
            job.schema.validate_profile(&profile).map_err(|e| reason_of(&e))?;
            let user = new_user(job, profile, Timestamp::now());
            Ok((login, Outcome::Create(Box::new(user))))
        }
        ImportAction::LinkUser => {
            let target = match link_to {
                Some(id) => store
                    .get_user(&id)
                    .await
                    .map_err(store_failed)?
                    .filter(|u| u.id == id)
                    .ok_or_else(|| format!("the import hook linked the row to user {id}, which does not exist"))?,
                None if matches.len() == 1 => matches.into_iter().next().ok_or("no match")?,
                None => {
                    return Err(format!(
                        "{} users match ({}); the import hook did not choose one",
                        matches.len(),
                        matches.iter().map(|u| u.id.as_str()).collect::<Vec<_>>().join(", ")
                    ));
                }
            };
            let patch: Map<String, Value> =
                profile.into_iter().filter(|(k, v)| target.profile.get(k) != Some(v)).collect();
            let mut next = target.profile.clone();
            next.retain(|k, _| job.schema.attribute(k).is_some());
            next.extend(patch.clone());
            job.schema.validate_profile(&next).map_err(|e| reason_of(&e))?;
            let login = text(&next, "login").unwrap_or(target.login()).to_owned();
            Ok((Some(login.clone()), Outcome::Link { user_id: target.id, login, patch }))
        }
    }
}

fn new_user(job: &Job, profile: Map<String, Value>, now: Timestamp) -> User {
    let activate = job.settings.activate;
    let status = match (activate, job.password_hook) {
        (false, _) => UserStatus::Staged,
        (true, true) => UserStatus::Active,
        (true, false) => UserStatus::Provisioned,
    };
    User {
        id: haken_core::id::new_id(haken_core::id::IdKind::User),
        status,
        created: now,
        activated: activate.then_some(now),
        status_changed: (status != UserStatus::Staged).then_some(now),
        last_login: None,
        last_updated: now,
        password_changed: None,
        type_id: DEFAULT_USER_TYPE.to_owned(),
        profile,
        credentials: StoredCredentials {
            password_hook: job.password_hook,
            provider_type: "OKTA".to_owned(),
            provider_name: "OKTA".to_owned(),
            ..StoredCredentials::default()
        },
        failed_sign_ins: 0,
    }
}

/// The events the API's create path writes for a new user.
fn create_events(ctx: &EventContext, user: &User, activated: bool) -> Vec<LogEvent> {
    let mut events = vec![ctx.user_event("user.lifecycle.create", "Create okta user", user, user.created)];
    if activated {
        events.push(ctx.user_event("user.lifecycle.activate", "Activate Okta user", user, user.created));
    }
    events
}

/// Applies `patch` to the user read under the lock; the profile update event as the API's
/// update path writes it.
fn apply_patch(
    ctx: &EventContext,
    schema: &UserSchema,
    mut user: User,
    patch: &Map<String, Value>,
    now: Timestamp,
) -> Result<Option<Change<User>>, RowError> {
    let before = user.profile.clone();
    let mut next = user.profile.clone();
    next.retain(|k, _| schema.attribute(k).is_some());
    for (k, v) in patch {
        next.insert(k.clone(), v.clone());
    }
    schema.validate_profile(&next).map_err(|e| RowError::Invalid(reason_of(&e)))?;
    let changed = changed_attributes(&before, &next);
    if changed.is_empty() {
        return Ok(None);
    }
    user.profile = next;
    user.last_updated = now;
    let from: Map<String, Value> =
        changed.iter().map(|k| (k.clone(), before.get(k).cloned().unwrap_or(Value::Null))).collect();
    let to: Map<String, Value> =
        changed.iter().map(|k| (k.clone(), user.profile.get(k).cloned().unwrap_or(Value::Null))).collect();
    let target = Target::user(&user).with_change_details(Value::Object(from), Value::Object(to));
    let ev = ctx
        .event("user.account.update_profile", "Update user profile for Okta", now)
        .with_target(target)
        .with_debug("changedAttributes", Value::String(changed.join(",")));
    Ok(Some(Change { value: user, events: vec![ev] }))
}

#[derive(Debug)]
enum RowError {
    Store(StoreError),
    Invalid(String),
}

impl From<StoreError> for RowError {
    fn from(e: StoreError) -> Self {
        RowError::Store(e)
    }
}

fn row_error_reason(e: &RowError, login: Option<&str>) -> String {
    match e {
        RowError::Invalid(r) => r.clone(),
        RowError::Store(StoreError::Conflict(_)) => match login {
            Some(l) => format!("a user with login {l} already exists"),
            None => "the user already exists".to_owned(),
        },
        RowError::Store(StoreError::NotFound) => "the linked user no longer exists".to_owned(),
        RowError::Store(other) => format!("writing the row failed: {other}"),
    }
}

// ---- the writer ----

/// What a planned row becomes in the batch, and how it counts.
enum Kind {
    Created,
    Updated,
    Skipped,
    Failed(String),
}

struct Pending {
    planned: Planned,
    kind: Kind,
    patch: Option<Map<String, Value>>,
    write: RowWrite,
}

fn count(job: &mut ImportJob, p: &Pending) {
    job.counts.rows += 1;
    match &p.kind {
        Kind::Created => job.counts.created += 1,
        Kind::Updated => {
            job.counts.linked += 1;
            job.counts.updated += 1;
        }
        Kind::Skipped => {
            job.counts.linked += 1;
            job.counts.skipped += 1;
        }
        Kind::Failed(reason) => {
            job.fail_row(FailedRow { row: p.planned.n, reason: reason.clone(), login: p.planned.login.clone() })
        }
    }
}

struct Writer {
    store: Store,
    ctx: EventContext,
    schema: Arc<UserSchema>,
    activated: bool,
    job: ImportJob,
    started: Instant,
    /// Digests of the logins (and linked user ids) rows of this file resolved to, with the
    /// row that did.
    seen: HashMap<u64, u64>,
    hasher: RandomState,
}

impl Writer {
    fn digest(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Turns a planned row into its write, catching a second row for the same user.
    fn pending(&mut self, mut planned: Planned) -> Pending {
        let keys: Vec<String> = match &planned.outcome {
            Outcome::Create(u) => vec![format!("l:{}", u.login().to_lowercase())],
            Outcome::Link { user_id, login, .. } => vec![format!("l:{}", login.to_lowercase()), format!("u:{user_id}")],
            Outcome::Fail(_) => Vec::new(),
        };
        for k in &keys {
            let d = self.digest(k);
            if let Some(first) = self.seen.get(&d) {
                let reason = format!("row {first} of this file already imported the same user");
                planned.outcome = Outcome::Fail(reason);
                break;
            }
        }
        if !matches!(planned.outcome, Outcome::Fail(_)) {
            for k in &keys {
                let d = self.digest(k);
                self.seen.insert(d, planned.n);
            }
        }
        let outcome = std::mem::replace(&mut planned.outcome, Outcome::Fail(String::new()));
        let (kind, patch, write) = match outcome {
            Outcome::Create(user) => {
                planned.events.extend(create_events(&self.ctx, &user, self.activated));
                (Kind::Created, None, RowWrite::Create(user))
            }
            Outcome::Link { patch, .. } if patch.is_empty() => (Kind::Skipped, None, RowWrite::Nothing),
            Outcome::Link { user_id, patch, .. } => (Kind::Updated, Some(patch), RowWrite::Update(user_id)),
            Outcome::Fail(reason) => (Kind::Failed(reason), None, RowWrite::Nothing),
        };
        Pending { planned, kind, patch, write }
    }

    fn refresh_rate(&self, job: &mut ImportJob) {
        job.heartbeat = Some(Timestamp::now());
        let secs = self.started.elapsed().as_secs_f64();
        job.rate = if secs > 0.0 { (job.counts.rows as f64 / secs * 10.0).round() / 10.0 } else { 0.0 };
    }

    async fn commit(
        &self,
        rows: &[ImportRow],
        patches: &[Option<Map<String, Value>>],
        job: &ImportJob,
    ) -> Result<(), RowError> {
        let (ctx, schema, now) = (&self.ctx, &self.schema, Timestamp::now());
        self.store
            .write_import_batch::<ImportJob, RowError, _>(rows, Some(job), |i, user| match patches.get(i) {
                Some(Some(patch)) => apply_patch(ctx, schema, user, patch, now),
                _ => Ok(None),
            })
            .await
    }

    /// Commits a batch; if it fails, each row alone, so only the bad rows fail.
    async fn flush(&mut self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let mut next = self.job.clone();
        for p in &batch {
            count(&mut next, p);
        }
        self.refresh_rate(&mut next);
        let rows: Vec<ImportRow> =
            batch.iter().map(|p| ImportRow { write: p.write.clone(), events: p.planned.events.clone() }).collect();
        let patches: Vec<Option<Map<String, Value>>> = batch.iter().map(|p| p.patch.clone()).collect();
        match self.commit(&rows, &patches, &next).await {
            Ok(()) => {
                self.job = next;
                return;
            }
            Err(e) => {
                tracing::debug!(job_id = %self.job.id, error = ?e, rows = batch.len(), "Import batch failed; retrying its rows one by one.");
            }
        }
        for (mut p, (row, patch)) in batch.into_iter().zip(rows.into_iter().zip(patches)) {
            let mut next = self.job.clone();
            count(&mut next, &p);
            self.refresh_rate(&mut next);
            match self.commit(std::slice::from_ref(&row), std::slice::from_ref(&patch), &next).await {
                Ok(()) => self.job = next,
                Err(e) => {
                    let reason = row_error_reason(&e, p.planned.login.as_deref());
                    // The row's own writes are gone; the hook calls it made still go in the log.
                    let events: Vec<LogEvent> =
                        p.planned.events.iter().filter(|e| e.event_type.starts_with("inline_hook.")).cloned().collect();
                    p.kind = Kind::Failed(reason);
                    let mut next = self.job.clone();
                    count(&mut next, &p);
                    self.refresh_rate(&mut next);
                    let fallback = ImportRow { write: RowWrite::Nothing, events };
                    if let Err(e) = self.commit(std::slice::from_ref(&fallback), &[None], &next).await {
                        tracing::warn!(job_id = %self.job.id, error = ?e, "Recording a failed import row failed.");
                    }
                    self.job = next;
                }
            }
        }
    }
}

// ---- the job ----

/// Runs a started job to its end and returns the final job. The uploaded file is removed.
pub async fn run_job(env: ImportEnv, ctx: EventContext, app: App, started: Started, path: PathBuf) -> ImportJob {
    let Started { job, claim } = started;
    let result = run(&env, &ctx, &app, job.clone(), &path).await;
    let _ = tokio::fs::remove_file(&path).await;
    let mut final_job = match result {
        Ok(j) => j,
        Err((mut j, why)) => {
            j.status = JobStatus::Failed;
            j.error = Some(why);
            j
        }
    };
    let now = Timestamp::now();
    if final_job.status == JobStatus::Running {
        final_job.status = JobStatus::Completed;
    }
    final_job.finished = Some(now);
    let jctx = job_context(&ctx, &final_job.id);
    let c = final_job.counts;
    let mut ev = jctx
        .event("system.import.complete", "Import completed", now)
        .with_target(app_target(&app))
        .with_target(job_target(&final_job))
        .with_debug(
            "counts",
            json!({ "rows": c.rows, "created": c.created, "linked": c.linked, "updated": c.updated, "skipped": c.skipped, "failed": c.failed }),
        );
    if let Some(why) = &final_job.error {
        ev = ev.with_outcome("FAILURE", Some("IMPORT_FAILED")).with_debug("failureReason", Value::String(why.clone()));
    }
    let to_store = final_job.clone();
    let written = env
        .store
        .update_doc::<ImportJob, StoreError, _>(&final_job.id, move |_| {
            Ok(Some(Change { value: to_store, events: vec![ev] }))
        })
        .await;
    if let Err(e) = written {
        tracing::error!(job_id = %final_job.id, error = %e, "Recording the end of an import failed.");
    }
    tracing::info!(
        job_id = %final_job.id, app_id = %app.id, status = final_job.status.as_str(),
        rows = c.rows, created = c.created, updated = c.updated, skipped = c.skipped, failed = c.failed,
        rate = final_job.rate, "Import finished."
    );
    drop(claim);
    final_job
}

async fn run(
    env: &ImportEnv,
    ctx: &EventContext,
    app: &App,
    job: ImportJob,
    path: &Path,
) -> Result<ImportJob, (ImportJob, String)> {
    let schema = match schema::load(&env.store).await {
        Ok(s) => s,
        Err(e) => return Err((job, format!("the profile schema cannot be read: {e}"))),
    };
    let settings = app.import_settings();
    let hook = match &settings.inline_hook_id {
        Some(id) => match env.store.get_doc::<InlineHook>(id).await {
            Ok(Some(h)) if h.is_active() => Some(h),
            Ok(_) => {
                tracing::info!(job_id = %job.id, hook_id = %id, "The app's import hook is missing or inactive; importing without it.");
                None
            }
            Err(e) => return Err((job, format!("the import hook cannot be read: {e}"))),
        },
        None => None,
    };
    let jctx = job_context(ctx, &job.id);
    let shared = Arc::new(Job {
        env: env.clone(),
        app: app.clone(),
        settings: settings.clone(),
        hook,
        schema: schema.clone(),
        ctx: jctx.clone(),
        job_id: job.id.clone(),
        password_hook: job.password_hook,
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Source>(1024);
    let format = job.format;
    let file = path.to_owned();
    let reader = tokio::task::spawn_blocking(move || read_file(&file, format, &tx));
    let rows = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    // Planning (matching, the hook call) runs in its own task, so it goes on while a batch
    // commits.
    let (ptx, mut prx) = tokio::sync::mpsc::channel::<Planned>(BATCH_ROWS * 2);
    let planner = tokio::spawn(async move {
        let planned = rows
            .ready_chunks(LOOKUP_CHUNK)
            .then({
                let shared = shared.clone();
                move |chunk| {
                    let shared = shared.clone();
                    async move {
                        let known = prefetch_logins(&shared, &chunk).await;
                        futures_util::stream::iter(chunk.into_iter().map(move |src| (src, known.clone())))
                    }
                }
            })
            .flatten()
            .map(|(src, known)| {
                let shared = shared.clone();
                async move { plan(&shared, src, &known).await }
            })
            .buffered(IN_FLIGHT);
        futures_util::pin_mut!(planned);
        while let Some(p) = planned.next().await {
            if ptx.send(p).await.is_err() {
                return;
            }
        }
    });
    let mut w = Writer {
        store: env.store.clone(),
        ctx: jctx,
        schema,
        activated: settings.activate,
        job,
        started: Instant::now(),
        seen: HashMap::new(),
        hasher: RandomState::new(),
    };
    let mut batch: Vec<Pending> = Vec::with_capacity(BATCH_ROWS);
    let mut deadline = tokio::time::Instant::now() + BATCH_WAIT;
    loop {
        let next =
            if batch.is_empty() { Ok(prx.recv().await) } else { tokio::time::timeout_at(deadline, prx.recv()).await };
        match next {
            Ok(Some(p)) => {
                if batch.is_empty() {
                    deadline = tokio::time::Instant::now() + BATCH_WAIT;
                }
                let pending = w.pending(p);
                batch.push(pending);
                if batch.len() >= BATCH_ROWS {
                    w.flush(std::mem::take(&mut batch)).await;
                }
            }
            Ok(None) => {
                w.flush(std::mem::take(&mut batch)).await;
                break;
            }
            Err(_) => w.flush(std::mem::take(&mut batch)).await,
        }
    }
    let _ = planner.await;
    let read = reader.await.map_err(|e| format!("the file reader stopped: {e}")).and_then(|r| r);
    let mut job = w.job.clone();
    w.refresh_rate(&mut job);
    match read {
        Ok(()) => Ok(job),
        Err(why) => Err((job, why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> UserSchema {
        UserSchema::from_custom_definitions(&Map::new(), Timestamp(0), Timestamp(0))
    }

    #[test]
    fn maps_by_name_then_username_then_explicit_mapping() {
        let s = schema();
        let row: Map<String, Value> = serde_json::from_value(json!({
            "userName": "tkato@example.org", "firstName": "Taro", "surname": "Kato",
            "email": "t@example.org", "externalId": "E-1", "mobilePhone": null
        }))
        .unwrap_or_default();
        let mut mapping = std::collections::BTreeMap::new();
        let p = map_profile(&s, &mapping, &row);
        assert_eq!(p.get("login"), Some(&json!("tkato@example.org")));
        assert_eq!(p.get("firstName"), Some(&json!("Taro")));
        assert!(!p.contains_key("lastName") && !p.contains_key("mobilePhone") && !p.contains_key("externalId"));
        mapping.insert("lastName".to_owned(), "surname".to_owned());
        mapping.insert("login".to_owned(), "email".to_owned());
        let p = map_profile(&s, &mapping, &row);
        assert_eq!(p.get("lastName"), Some(&json!("Kato")));
        assert_eq!(p.get("login"), Some(&json!("t@example.org")));
    }

    #[test]
    fn csv_cells_take_the_attribute_type() {
        assert_eq!(coerce(AttrType::Boolean, &json!("TRUE")), json!(true));
        assert_eq!(coerce(AttrType::Integer, &json!(" 42 ")), json!(42));
        assert_eq!(coerce(AttrType::Integer, &json!("x")), json!("x"));
        assert_eq!(coerce(AttrType::Array, &json!("[\"a\"]")), json!(["a"]));
        assert_eq!(coerce(AttrType::String, &json!("007")), json!("007"));
    }

    fn collect(data: &str, format: ImportFormat) -> (Vec<Source>, Result<(), String>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(100);
        let r = match format {
            ImportFormat::Csv => read_csv(data.as_bytes(), &tx),
            ImportFormat::Jsonl => read_jsonl(data.as_bytes(), &tx),
        };
        drop(tx);
        let mut out = Vec::new();
        while let Ok(s) = rx.try_recv() {
            out.push(s);
        }
        (out, r)
    }

    #[test]
    fn csv_rows_are_numbered_and_bad_rows_reported() {
        let (rows, r) = collect("\u{feff}login,email\na@x.org,a@x.org\nb@x.org\nc@x.org,\n", ImportFormat::Csv);
        assert!(r.is_ok());
        assert_eq!(rows.len(), 3);
        assert!(matches!(&rows[0], Source::Row { n: 1, values } if values.get("login") == Some(&json!("a@x.org"))));
        assert!(matches!(&rows[1], Source::Bad { n: 2, reason } if reason.contains("1 fields")));
        assert!(matches!(&rows[2], Source::Row { n: 3, values } if values.get("email") == Some(&Value::Null)));
        let (_, r) = collect("login,login\n", ImportFormat::Csv);
        assert!(r.is_err_and(|e| e.contains("twice")));
    }

    #[test]
    fn jsonl_lines_are_objects() {
        let big = "x".repeat(MAX_LINE_BYTES + 10);
        let data = format!("{{\"login\":\"a\"}}\n\n[1]\n{big}\nnot json\n{{\"login\":\"b\"}}");
        let (rows, r) = collect(&data, ImportFormat::Jsonl);
        assert!(r.is_ok());
        assert_eq!(rows.len(), 5);
        assert!(matches!(&rows[0], Source::Row { n: 1, .. }));
        assert!(matches!(&rows[1], Source::Bad { n: 2, reason } if reason.contains("not a JSON object")));
        assert!(matches!(&rows[2], Source::Bad { n: 3, reason } if reason.contains("longer")));
        assert!(matches!(&rows[3], Source::Bad { n: 4, .. }));
        assert!(matches!(&rows[4], Source::Row { n: 5, values } if values.get("login") == Some(&json!("b"))));
    }
}
