//! Haken's storage API. One [`Store`] with two backends, SQLite (embedded, WAL, one writer) and
//! PostgreSQL (many nodes), each with its own migrations. This crate is the only place that
//! contains SQL.
//!
//! Every write that changes the directory takes the System Log events it produces and commits
//! them in the same transaction: no event without its change, no change without its event.

mod backend;
mod pg_batch;
mod pg_dispatch;
mod query;
mod record;
pub mod scratch;
mod sqlite_hot;
mod sqlite_writer;

/// PostgreSQL types the delivery engine needs for `LISTEN`.
pub mod pg {
    pub use sqlx::postgres::{PgListener, PgPool};
}

use std::time::Duration;

use haken_core::hook::{Attempt, AttemptOutcome, Delivery, DeliveryStatus, EventHook};
use haken_core::{Group, LogEvent, User, token::ApiToken};
use serde_json::{Map, Value};

pub use backend::{PgBackend, SqliteBackend};
pub use query::{LogCursor, LogQuery, UserQuery};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// A unique value is taken; names the column's meaning (`login`, `name`, ...).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// A referenced row (group id, user id) does not exist.
    #[error("referenced {0} does not exist")]
    MissingReference(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Backend(#[from] sqlx::Error),
    /// An error of SQLite's writer thread.
    #[error("database error: {0}")]
    Embedded(#[from] rusqlite::Error),
    /// A write that could not run or commit (the reason is in the text).
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL: {0}")]
    BadUrl(String),
}

/// A resource kept as a JSON document in the `documents` table: the kinds that need no
/// columns of their own (inline hooks, hook keys, apps, policies, sessions, import jobs).
pub trait Document: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    /// The kind's name in the table; never change it once stored.
    const KIND: &'static str;
    fn doc_id(&self) -> &str;
    /// Unique within the kind, ignoring case.
    fn doc_name(&self) -> Option<String> {
        None
    }
    /// A second key, unique within the kind.
    fn doc_lookup(&self) -> Option<String> {
        None
    }
    /// The document this one belongs to.
    fn doc_parent(&self) -> Option<String> {
        None
    }
}

impl Document for haken_core::inline_hook::InlineHook {
    const KIND: &'static str = "inline_hook";
    fn doc_id(&self) -> &str {
        &self.id
    }
    fn doc_name(&self) -> Option<String> {
        Some(self.name.clone())
    }
    /// The unique lookup key enforces the one-of-a-kind limits even for concurrent writers:
    /// one password import hook, one active telephony hook.
    fn doc_lookup(&self) -> Option<String> {
        use haken_core::inline_hook::InlineHookType;
        match self.hook_type {
            InlineHookType::PasswordImport => Some("only:password_import".to_owned()),
            InlineHookType::Telephony if self.is_active() => Some("only:active_telephony".to_owned()),
            _ => None,
        }
    }
    fn doc_parent(&self) -> Option<String> {
        Some(self.hook_type.as_str().to_owned())
    }
}

impl Document for haken_core::inline_hook::HookKey {
    const KIND: &'static str = "hook_key";
    fn doc_id(&self) -> &str {
        &self.id
    }
    fn doc_name(&self) -> Option<String> {
        Some(self.name.clone())
    }
    fn doc_lookup(&self) -> Option<String> {
        Some(self.key_id.clone())
    }
}

// ---- registration and policies ----

impl Document for haken_core::policy::Policy {
    const KIND: &'static str = "policy";
    fn doc_id(&self) -> &str {
        &self.id
    }
    fn doc_name(&self) -> Option<String> {
        Some(self.name.clone())
    }
}

impl Document for haken_core::policy::PolicyRule {
    const KIND: &'static str = "policy_rule";
    fn doc_id(&self) -> &str {
        &self.id
    }
    fn doc_parent(&self) -> Option<String> {
        Some(self.policy_id.clone())
    }
}

impl Document for haken_core::session::Session {
    const KIND: &'static str = "session";
    fn doc_id(&self) -> &str {
        &self.id
    }
    fn doc_lookup(&self) -> Option<String> {
        Some(self.token_hash.clone())
    }
    fn doc_parent(&self) -> Option<String> {
        Some(self.user_id.clone())
    }
}

/// Decides, inside the write transaction, which event hooks receive an event. Implemented by
/// `haken-hooks` (event types and filters are hook semantics the store does not know).
pub trait EventRouter: Send + Sync + 'static {
    /// The hooks revision the router was built from.
    fn revision(&self) -> i64;
    /// Rebuilds from the hooks that receive deliveries (active and verified).
    fn refresh(&self, revision: i64, hooks: Vec<EventHook>);
    /// The ids of the hooks that receive `event`.
    fn route(&self, event: &LogEvent) -> Vec<String>;
}

/// A node's delivery engine as the store's writers see it. A write that makes a delivery for a
/// hook with room leases it to this node in its own transaction (PostgreSQL: its statement;
/// SQLite: the end of its writer group) and hands it over after commit,
/// so it goes out without waiting for a lease round. What is not handed over (no room, a hooks
/// revision the engine does not hold, a failed write) waits for a round as before; a handed
/// delivery that is never sent is leased again when its lease ends, like any other.
pub trait Intake: Send + Sync + 'static {
    /// The node leases are taken under.
    fn node(&self) -> &str;
    /// Takes an in-flight slot of `hook_id` for a delivery that a write, routed by hooks
    /// revision `rev`, is about to make at `now`: the lease end to write, or `None` (no room,
    /// or the engine does not hold that revision).
    fn reserve(&self, hook_id: &str, rev: i64, now: i64) -> Option<i64>;
    /// Gives back a slot the write did not use.
    fn release(&self, hook_id: &str);
    /// Deliveries written leased to this node, each holding a slot: send them now.
    fn hand_over(&self, claimed: Vec<Claimed>);
}

/// Most events one delivery carries (spec 1.3: up to 50 events a request). PostgreSQL writers
/// make their deliveries with this many at most; the dispatcher forms the rest by its own
/// setting.
pub const MAX_EVENTS_PER_DELIVERY: i64 = 50;

/// What the backends share with the delivery engine: the router and the wake-up signal
/// given after a commit that queued deliveries.
#[derive(Default)]
pub struct HookRuntime {
    router: std::sync::OnceLock<std::sync::Arc<dyn EventRouter>>,
    /// This node's delivery engine, for deliveries handed over at write time.
    intake: std::sync::OnceLock<std::sync::Arc<dyn Intake>>,
    wake: tokio::sync::Notify,
    cache: ReadCache,
    tag: WakeTag,
}

/// Names this store in the wake-ups it sends other nodes (PostgreSQL `NOTIFY` payloads), so
/// its own listener can tell them from other nodes' and not wake its dispatcher twice.
struct WakeTag(String);

impl Default for WakeTag {
    fn default() -> Self {
        WakeTag(haken_core::id::random_base62(12))
    }
}

/// How long a cached read (a setting, a token lookup) is trusted. Changes made through this
/// process clear it at once; changes by another node or process are seen within this time.
pub const READ_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Clone)]
enum Cached {
    Setting(Option<String>),
    Token(Option<ApiToken>),
}

/// Reads that every request makes (the token, the profile schema) and that rarely change.
#[derive(Default)]
struct ReadCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Cached)>>,
}

impl ReadCache {
    fn get(&self, key: &str) -> Option<Cached> {
        let map = self.entries.lock().ok()?;
        let (at, v) = map.get(key)?;
        (at.elapsed() < READ_CACHE_TTL).then(|| v.clone())
    }

    fn put(&self, key: String, v: Cached) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() > 10_000 {
                map.retain(|_, (at, _)| at.elapsed() < READ_CACHE_TTL);
            }
            map.insert(key, (std::time::Instant::now(), v));
        }
    }

    fn forget(&self, prefix: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.retain(|k, _| !k.starts_with(prefix));
        }
    }
}

impl std::fmt::Debug for HookRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookRuntime").field("router", &self.router.get().is_some()).finish()
    }
}

/// A delivery claimed by a worker: it holds the lease until it reports the attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    /// Events of a test delivery, carried by the delivery itself.
    pub inline_events: Option<Vec<LogEvent>>,
    /// The delivery's stored events, when the claim read them with it (a PostgreSQL round, or
    /// a write that handed the delivery over); otherwise
    /// [`Store::delivery_events`] reads them.
    pub stored_events: Option<Vec<Box<serde_json::value::RawValue>>>,
}

/// Receiving hooks as of a hooks revision.
pub type HooksAt = (i64, std::sync::Arc<Vec<EventHook>>);

/// What one dispatcher round leased, per hook, and when the next delivery falls due.
#[derive(Debug, Clone, Default)]
pub struct DispatchRound {
    pub claimed: Vec<(EventHook, Vec<Claimed>)>,
    /// Earliest future `next_attempt_at` (ms) of deliveries not due yet.
    pub next_due: Option<i64>,
    /// The receiving hooks the round worked with and their revision, when it read them
    /// (PostgreSQL: when they may be newer than the last round's; SQLite: always): what an
    /// [`Intake`] checks a write's revision against.
    pub hooks: Option<HooksAt>,
}

/// Backlog figures of one hook, for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueStats {
    pub hook_id: String,
    /// Routed events not yet delivered (in no delivery yet, or in a pending one).
    pub pending_events: i64,
    /// Creation time (ms) of the oldest of them.
    pub oldest_pending: Option<i64>,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://path/to/file.db` or `postgres://…`.
    pub url: String,
    /// Connections for readers (PostgreSQL: the whole pool).
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions { url: url.into(), max_connections: 16, acquire_timeout: Duration::from_secs(10) }
    }
}

/// The store, with the backend chosen by URL at start.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqliteBackend),
    Postgres(PgBackend),
}

/// A change computed from a row's current value: the new value and the events it writes.
pub struct Change<T> {
    pub value: T,
    pub events: Vec<LogEvent>,
}

/// What one sign-in attempt writes (see [`Store::record_sign_in`]).
#[derive(Debug, Default)]
pub struct SignInWrite {
    /// The user's new row (failure counter, lock, `lastLogin`, an imported password).
    pub user: Option<User>,
    /// The session a successful sign-in starts.
    pub session: Option<haken_core::session::Session>,
    pub events: Vec<LogEvent>,
}

macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(b) => b.$method($($arg),*).await,
            Store::Postgres(b) => b.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Opens the store named by `opts.url` and applies its migrations.
    pub async fn connect(opts: &StoreOptions) -> Result<Store, StoreError> {
        let url = opts.url.as_str();
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteBackend::connect(opts).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgBackend::connect(opts).await?))
        } else {
            Err(StoreError::BadUrl(redact_url(url)))
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        dispatch!(self.close())
    }

    // ---- settings ----

    /// A setting (cached for [`READ_CACHE_TTL`]).
    pub async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let ck = format!("s:{key}");
        if let Some(Cached::Setting(v)) = self.runtime().cache.get(&ck) {
            return Ok(v);
        }
        let v: Option<String> = dispatch!(self.get_setting(key))?;
        self.runtime().cache.put(ck, Cached::Setting(v.clone()));
        Ok(v)
    }

    /// Stores `value` under `key` unless a value is there already; returns the value that won.
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        self.runtime().cache.forget(&format!("s:{key}"));
        dispatch!(self.setting_or_insert(key, value))
    }

    /// Reads a JSON setting, lets `f` change it, and writes it back with `f`'s events.
    pub async fn update_setting<E, F>(&self, key: &str, f: F) -> Result<Value, E>
    where
        E: From<StoreError> + Send,
        F: FnOnce(Option<Value>) -> Result<Change<Value>, E> + Send,
    {
        let r = dispatch!(self.update_setting(key, f));
        self.runtime().cache.forget(&format!("s:{key}"));
        r
    }

    // ---- API tokens ----

    pub async fn insert_token(&self, token: &ApiToken, events: &[LogEvent]) -> Result<(), StoreError> {
        let r = dispatch!(self.insert_token(token, events));
        self.runtime().cache.forget("t:");
        r
    }

    /// A token by the digest of its value (cached for [`READ_CACHE_TTL`], so a revocation made
    /// by another process or node applies within that time).
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let ck = format!("t:{hash}");
        if let Some(Cached::Token(t)) = self.runtime().cache.get(&ck) {
            return Ok(t);
        }
        let t: Option<ApiToken> = dispatch!(self.token_by_hash(hash))?;
        self.runtime().cache.put(ck, Cached::Token(t.clone()));
        Ok(t)
    }

    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        dispatch!(self.list_tokens())
    }

    /// Writes the token as given (last use, revocation) with its events.
    pub async fn update_token(&self, token: &ApiToken, events: &[LogEvent]) -> Result<(), StoreError> {
        let r = dispatch!(self.update_token(token, events));
        self.runtime().cache.forget("t:");
        r
    }

    // ---- users ----

    /// Creates a user, its group memberships and events. [`StoreError::Conflict`] when the
    /// login is taken (ignoring case), [`StoreError::MissingReference`] for an unknown group.
    pub async fn insert_user(&self, user: &User, group_ids: &[String], events: &[LogEvent]) -> Result<(), StoreError> {
        dispatch!(self.insert_user(user, group_ids, events))
    }

    /// A user by id, or by login (case-insensitive).
    pub async fn get_user(&self, id_or_login: &str) -> Result<Option<User>, StoreError> {
        dispatch!(self.get_user(id_or_login))
    }

    /// Lets `f` compute the change of the user's current row and writes it with its events,
    /// atomically: no other write of the row comes between the row `f` saw and the change.
    /// `f` returning `None` means nothing to write. `f` may be called more than once (on
    /// PostgreSQL a change computed on a row another node has changed meanwhile is computed
    /// again on the new row); only the last call's result counts.
    pub async fn update_user<E, F>(&self, id: &str, f: F) -> Result<User, E>
    where
        E: From<StoreError> + Send + 'static,
        F: FnMut(User) -> Result<Option<Change<User>>, E> + Send + 'static,
    {
        dispatch!(self.update_user(id, f))
    }

    /// Deletes the user (and memberships) if `f` agrees, writing `f`'s events.
    pub async fn delete_user<E, F>(&self, id: &str, f: F) -> Result<(), E>
    where
        E: From<StoreError> + Send + 'static,
        F: FnMut(&User) -> Result<Vec<LogEvent>, E> + Send + 'static,
    {
        dispatch!(self.delete_user(id, f))
    }

    /// Users in creation order after the cursor, narrowed by the query's indexed predicates.
    pub async fn list_users(&self, q: &UserQuery) -> Result<Vec<(i64, User)>, StoreError> {
        dispatch!(self.list_users(q))
    }

    pub async fn count_users(&self) -> Result<i64, StoreError> {
        dispatch!(self.count_users())
    }

    // ---- groups ----

    /// Creates a group; [`StoreError::Conflict`] when the name is taken (ignoring case).
    pub async fn insert_group(&self, group: &Group, events: &[LogEvent]) -> Result<(), StoreError> {
        dispatch!(self.insert_group(group, events))
    }

    pub async fn get_group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        dispatch!(self.get_group(id))
    }

    pub async fn update_group<E, F>(&self, id: &str, f: F) -> Result<Group, E>
    where
        E: From<StoreError> + Send,
        F: FnOnce(Group) -> Result<Option<Change<Group>>, E> + Send,
    {
        dispatch!(self.update_group(id, f))
    }

    pub async fn delete_group<E, F>(&self, id: &str, f: F) -> Result<(), E>
    where
        E: From<StoreError> + Send,
        F: FnOnce(&Group) -> Result<Vec<LogEvent>, E> + Send,
    {
        dispatch!(self.delete_group(id, f))
    }

    /// Groups in creation order after `after_seq`, optionally those whose name starts with
    /// `name_prefix` (case-insensitive).
    pub async fn list_groups(
        &self,
        after_seq: i64,
        limit: i64,
        name_prefix: Option<&str>,
    ) -> Result<Vec<(i64, Group)>, StoreError> {
        dispatch!(self.list_groups(after_seq, limit, name_prefix))
    }

    /// Adds a member. `f` sees the group and user and returns the events; it is not called
    /// (and `false` is returned) when the user is already a member.
    pub async fn add_member<E, F>(&self, group_id: &str, user_id: &str, now: i64, f: F) -> Result<bool, E>
    where
        E: From<StoreError> + Send,
        F: FnOnce(&Group, &User) -> Result<Vec<LogEvent>, E> + Send,
    {
        dispatch!(self.add_member(group_id, user_id, now, f))
    }

    /// Removes a member; `false` when the user was not a member.
    pub async fn remove_member<E, F>(&self, group_id: &str, user_id: &str, now: i64, f: F) -> Result<bool, E>
    where
        E: From<StoreError> + Send,
        F: FnOnce(&Group, &User) -> Result<Vec<LogEvent>, E> + Send,
    {
        dispatch!(self.remove_member(group_id, user_id, now, f))
    }

    /// Members of a group in user-creation order after `after_seq`.
    pub async fn list_members(
        &self,
        group_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, User)>, StoreError> {
        dispatch!(self.list_members(group_id, after_seq, limit))
    }

    /// Groups of a user.
    pub async fn user_groups(&self, user_id: &str) -> Result<Vec<Group>, StoreError> {
        dispatch!(self.user_groups(user_id))
    }

    // ---- event hooks and deliveries ----

    /// Installs the event router (once, at start); until then no event is routed.
    pub fn install_router(&self, router: std::sync::Arc<dyn EventRouter>) -> bool {
        self.runtime().router.set(router).is_ok()
    }

    /// Installs this node's delivery engine as the taker of deliveries written leased to it
    /// (once, at start; false if one is installed already).
    pub fn install_intake(&self, intake: std::sync::Arc<dyn Intake>) -> bool {
        self.runtime().intake.set(intake).is_ok()
    }

    /// Resolves after a commit that queued deliveries (or at once if one happened since the
    /// last call).
    pub async fn wait_for_work(&self) {
        self.runtime().wake.notified().await
    }

    /// Wakes the delivery engine (after a replay, or a notification from another node).
    pub fn wake(&self) {
        self.runtime().wake.notify_one()
    }

    /// The payload of the wake-ups this store sends other nodes: a listener that receives it
    /// hears its own commit, whose dispatcher was woken already.
    pub fn wake_tag(&self) -> &str {
        &self.runtime().tag.0
    }

    fn runtime(&self) -> &HookRuntime {
        match self {
            Store::Sqlite(b) => &b.hooks,
            Store::Postgres(b) => &b.hooks,
        }
    }

    /// The PostgreSQL pool, for `LISTEN` (other nodes' wake-ups).
    pub fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match self {
            Store::Postgres(b) => Some(b.pool()),
            Store::Sqlite(_) => None,
        }
    }

    /// Creates a hook; [`StoreError::Conflict`] when the name is taken (ignoring case).
    pub async fn insert_event_hook(&self, hook: &EventHook, events: &[LogEvent]) -> Result<(), StoreError> {
        dispatch!(self.insert_event_hook(hook, events))
    }

    pub async fn get_event_hook(&self, id: &str) -> Result<Option<EventHook>, StoreError> {
        dispatch!(self.get_event_hook(id))
    }

    pub async fn list_event_hooks(&self) -> Result<Vec<EventHook>, StoreError> {
        dispatch!(self.list_event_hooks())
    }

    /// Changes a hook under a write lock (see [`Store::update_user`]).
    pub async fn update_event_hook<E, F>(&self, id: &str, f: F) -> Result<EventHook, E>
    where
        E: From<StoreError> + Send,
        F: FnOnce(EventHook) -> Result<Option<Change<EventHook>>, E> + Send,
    {
        dispatch!(self.update_event_hook(id, f))
    }

    /// Deletes a hook with its queue and delivery log, if `f` agrees.
    pub async fn delete_event_hook<E, F>(&self, id: &str, f: F) -> Result<(), E>
    where
        E: From<StoreError> + Send,
        F: FnOnce(&EventHook) -> Result<Vec<LogEvent>, E> + Send,
    {
        dispatch!(self.delete_event_hook(id, f))
    }

    /// Forms deliveries from newly routed events and leases, for each hook with room (`room`
    /// says how many more it may have in flight), the deliveries due now — in one transaction.
    pub async fn dispatch_round<F>(
        &self,
        now: i64,
        max_events: i64,
        node: &str,
        lease_until: i64,
        room: F,
    ) -> Result<DispatchRound, StoreError>
    where
        F: Fn(&EventHook) -> u32 + Send + Sync + 'static,
    {
        match self {
            Store::Sqlite(b) => b.dispatch_round(now, max_events, node, lease_until, Box::new(room)).await,
            Store::Postgres(b) => b.dispatch_round(now, max_events, node, lease_until, &room).await,
        }
    }

    /// Hooks with deliveries due now, and the earliest due time of the rest (ms).
    pub async fn due_hooks(&self, now: i64) -> Result<(Vec<String>, Option<i64>), StoreError> {
        dispatch!(self.due_hooks(now))
    }

    /// Clears the leases `node` holds (it restarted), so its deliveries can be claimed now.
    pub async fn release_leases(&self, node: &str) -> Result<u64, StoreError> {
        dispatch!(self.release_leases(node))
    }

    /// The events of a delivery, in order, as stored (JSON, checked to be well-formed): the
    /// envelope takes them as they are, without decoding and encoding each event again.
    pub async fn delivery_events(
        &self,
        delivery_id: &str,
    ) -> Result<Vec<Box<serde_json::value::RawValue>>, StoreError> {
        dispatch!(self.delivery_events(delivery_id))
    }

    /// Records an attempt and its outcome, with `events`, and deactivates the hook `stop_hook`
    /// if given (410). The attempt is always logged (it went out); when the attempt's node no
    /// longer holds the delivery's lease (it expired and was taken over, or a replay reset it)
    /// nothing else is written and the answer is `false`.
    pub async fn finish_attempt(
        &self,
        attempt: &Attempt,
        outcome: &AttemptOutcome,
        events: &[LogEvent],
        stop_hook: Option<&str>,
    ) -> Result<bool, StoreError> {
        dispatch!(self.finish_attempt(attempt, outcome, events, stop_hook))
    }

    /// Records a delivered attempt without waiting for it: written with others within a few
    /// milliseconds (see `record.rs`). Until it is written the delivery stays leased to the
    /// attempt's node.
    pub async fn record_delivered(&self, attempt: Attempt) -> Result<(), StoreError> {
        let recorder = match self {
            Store::Postgres(b) => &b.recorder,
            Store::Sqlite(b) => &b.recorder,
        };
        let Some(attempt) = recorder.push(attempt) else { return Ok(()) };
        self.finish_attempt(&attempt, &AttemptOutcome::Delivered, &[], None).await.map(|_| ())
    }

    /// A test delivery carrying its own events (not written to the System Log).
    pub async fn insert_test_delivery(&self, delivery: &Delivery, events: &[LogEvent]) -> Result<(), StoreError> {
        dispatch!(self.insert_test_delivery(delivery, events))
    }

    /// Deliveries of a hook, newest first, before `before_seq` (0 = from the newest).
    pub async fn list_deliveries(
        &self,
        hook_id: &str,
        status: Option<DeliveryStatus>,
        before_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Delivery)>, StoreError> {
        dispatch!(self.list_deliveries(hook_id, status, before_seq, limit))
    }

    pub async fn get_delivery(&self, hook_id: &str, id: &str) -> Result<Option<(Delivery, Vec<Attempt>)>, StoreError> {
        dispatch!(self.get_delivery(hook_id, id))
    }

    /// Queues deliveries again (same `eventId`, attempts counted afresh): one by id, or every
    /// dead letter of the hook. Returns how many.
    pub async fn replay_deliveries(&self, hook_id: &str, id: Option<&str>, now: i64) -> Result<u64, StoreError> {
        dispatch!(self.replay_deliveries(hook_id, id, now))
    }

    /// Routes System Log events of `[since, until]` that `matches` accepts to `hook_id` again:
    /// those the hook does not have queued or delivered (still in the delivery log), or every
    /// one of them with `resend`. Returns how many were queued.
    pub async fn backfill<F>(
        &self,
        hook_id: &str,
        range: (i64, i64),
        now: i64,
        resend: bool,
        matches: F,
    ) -> Result<u64, StoreError>
    where
        F: Fn(&LogEvent) -> bool + Send + Sync,
    {
        dispatch!(self.backfill(hook_id, range, now, resend, &matches))
    }

    /// Deletes delivered deliveries (with their attempts and outbox rows) created before
    /// `delivered_before`, and System Log events published before `logs_before` that no
    /// undelivered delivery still needs. Works in bounded batches; returns (deliveries, events).
    pub async fn purge(&self, delivered_before: i64, logs_before: i64) -> Result<(u64, u64), StoreError> {
        dispatch!(self.purge(delivered_before, logs_before))
    }

    /// The backlog of every hook that has one.
    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        dispatch!(self.queue_stats())
    }

    // ---- documents ----

    /// Stores a new document; [`StoreError::Conflict`] (`name` or `lookup`) when its name or
    /// lookup key is taken within its kind.
    pub async fn insert_doc<T: Document>(&self, doc: &T, events: &[LogEvent]) -> Result<(), StoreError> {
        dispatch!(self.insert_doc(doc, events))
    }

    pub async fn get_doc<T: Document>(&self, id: &str) -> Result<Option<T>, StoreError> {
        dispatch!(self.get_doc(id))
    }

    /// A document by its lookup key.
    pub async fn doc_by_lookup<T: Document>(&self, lookup: &str) -> Result<Option<T>, StoreError> {
        dispatch!(self.doc_by_lookup(lookup))
    }

    /// Documents of a kind in creation order after `after_seq`, optionally only those of `parent`.
    pub async fn list_docs<T: Document>(
        &self,
        parent: Option<&str>,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, T)>, StoreError> {
        dispatch!(self.list_docs(parent, after_seq, limit))
    }

    /// Every document of a kind (for the small kinds: hooks, keys, policies).
    pub async fn all_docs<T: Document>(&self) -> Result<Vec<T>, StoreError> {
        Ok(self.list_docs::<T>(None, 0, 100_000).await?.into_iter().map(|(_, d)| d).collect())
    }

    pub async fn count_docs<T: Document>(&self) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(b) => b.count_docs::<T>().await,
            Store::Postgres(b) => b.count_docs::<T>().await,
        }
    }

    /// Changes a document under a write lock (see [`Store::update_user`]).
    pub async fn update_doc<T, E, F>(&self, id: &str, f: F) -> Result<T, E>
    where
        T: Document + Clone,
        E: From<StoreError> + Send,
        F: FnOnce(T) -> Result<Option<Change<T>>, E> + Send,
    {
        dispatch!(self.update_doc(id, f))
    }

    /// Deletes a document if `f` agrees, writing `f`'s events.
    pub async fn delete_doc<T, E, F>(&self, id: &str, f: F) -> Result<(), E>
    where
        T: Document,
        E: From<StoreError> + Send,
        F: FnOnce(&T) -> Result<Vec<LogEvent>, E> + Send,
    {
        dispatch!(self.delete_doc(id, f))
    }

    /// Users whose profile `email` equals `email`, ignoring case (at most `limit`, oldest first).
    pub async fn users_by_email(&self, email: &str, limit: i64) -> Result<Vec<User>, StoreError> {
        dispatch!(self.users_by_email(email, limit))
    }

    /// Users with this `firstName` and `lastName`, ignoring case (at most `limit`, oldest first).
    pub async fn users_by_name(&self, first: &str, last: &str, limit: i64) -> Result<Vec<User>, StoreError> {
        dispatch!(self.users_by_name(first, last, limit))
    }

    // ---- registration and policies ----

    /// Stores `doc` unless a document with its id (or name) exists; returns the stored one.
    /// Several nodes may do this at once: one insert wins, the others read what it wrote.
    pub async fn doc_or_insert<T: Document>(&self, doc: &T) -> Result<T, StoreError> {
        if let Some(found) = self.get_doc::<T>(doc.doc_id()).await? {
            return Ok(found);
        }
        match self.insert_doc(doc, &[]).await {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.get_doc::<T>(doc.doc_id()).await?.ok_or(StoreError::NotFound)
    }

    // ---- user import ----

    /// The users whose login is one of `logins` (lowercase), in one query per 500.
    pub async fn users_by_logins(&self, logins: &[String]) -> Result<Vec<User>, StoreError> {
        if logins.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self.users_by_logins(logins))
    }

    /// Writes one batch of import rows in one transaction: each row's new user or profile
    /// update with its events, and the job document as it stands after the batch. `update`
    /// computes an update row's change from the user read under the write lock (`None`: no
    /// change). Any failure rolls the whole batch back.
    pub async fn write_import_batch<J, E, F>(&self, rows: &[ImportRow], job: Option<&J>, update: F) -> Result<(), E>
    where
        J: Document,
        E: From<StoreError> + Send,
        F: FnMut(usize, User) -> Result<Option<Change<User>>, E> + Send,
    {
        dispatch!(self.write_import_batch(rows, job, update))
    }

    // ---- sign-in and sessions ----

    /// A user by login only (case-insensitive); unlike [`Store::get_user`] an id never matches,
    /// so a sign-in cannot name a user by id.
    pub async fn user_by_login(&self, login: &str) -> Result<Option<User>, StoreError> {
        dispatch!(self.user_by_login(login))
    }

    /// Records a sign-in attempt in one transaction: reads the user under a write lock, lets
    /// `f` decide, then writes the user's new row (if any), the new session (if any) and the
    /// events. A session therefore exists only together with its committed events and the
    /// user's `lastLogin`. Returns the user as stored afterwards and `f`'s verdict.
    pub async fn record_sign_in<R, E, F>(&self, user_id: &str, f: F) -> Result<(User, R), E>
    where
        R: Send,
        E: From<StoreError> + Send,
        F: FnOnce(User) -> Result<(SignInWrite, R), E> + Send,
    {
        dispatch!(self.record_sign_in(user_id, f))
    }

    // ---- System Log ----

    /// Writes events that belong to no entity change (e.g. a failed sign-in).
    pub async fn append_events(&self, events: &[LogEvent]) -> Result<(), StoreError> {
        dispatch!(self.append_events(events))
    }

    /// How many System Log events of `event_type` exist.
    pub async fn count_events(&self, event_type: &str) -> Result<i64, StoreError> {
        dispatch!(self.count_events(event_type))
    }

    /// One batch of events for `GET /api/v1/logs`, in the query's order, each with its position.
    pub async fn list_logs(&self, q: &LogQuery) -> Result<Vec<(LogCursor, LogEvent)>, StoreError> {
        dispatch!(self.list_logs(q))
    }
}

/// The URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// An event as stored: with `debugData.targetEventHookIds` when hooks receive it.
pub(crate) fn routed_json(ev: &LogEvent, targets: &[String]) -> Result<String, StoreError> {
    if targets.is_empty() {
        return encode(ev);
    }
    let mut ev = ev.clone();
    if let Some(dc) = ev.debug_context.as_mut() {
        dc.debug_data.insert("targetEventHookIds".into(), Value::String(targets.join(",")));
    }
    encode(&ev)
}

/// A user's row as every write path stores it: the columns beside the document.
pub(crate) struct UserColumns {
    pub id: String,
    pub login_lower: String,
    pub status: &'static str,
    pub last_updated: i64,
    pub data: String,
    pub email_key: Option<String>,
    pub name_key: Option<String>,
}

impl UserColumns {
    pub(crate) fn of(user: &User) -> Result<Self, StoreError> {
        Ok(UserColumns {
            id: user.id.clone(),
            login_lower: user.login().to_lowercase(),
            status: user.status.as_str(),
            last_updated: user.last_updated.millis(),
            data: encode(user)?,
            email_key: email_key(user),
            name_key: name_key(user),
        })
    }

    /// The columns as SQLite parameters ?1…?7, in the order of the `users` column lists.
    pub(crate) fn params(&self) -> [&dyn rusqlite::ToSql; 7] {
        [&self.id, &self.login_lower, &self.status, &self.last_updated, &self.data, &self.email_key, &self.name_key]
    }
}

/// Binds [`UserColumns`] as the next seven parameters of an sqlx query, in the order of the
/// `users` column lists.
macro_rules! bind_user {
    ($query:expr, $cols:expr) => {{
        let c = $cols;
        $query
            .bind(c.id)
            .bind(c.login_lower)
            .bind(c.status)
            .bind(c.last_updated)
            .bind(c.data)
            .bind(c.email_key)
            .bind(c.name_key)
    }};
}
pub(crate) use bind_user;

/// The key user import matches a profile's `email` on (lowercase), if it has one.
pub(crate) fn email_key(user: &User) -> Option<String> {
    user.profile.get("email").and_then(Value::as_str).map(str::to_lowercase)
}

/// The key user import matches `firstName` and `lastName` on.
pub(crate) fn name_key(user: &User) -> Option<String> {
    let part = |k: &str| user.profile.get(k).and_then(Value::as_str);
    Some(name_key_of(part("firstName")?, part("lastName")?))
}

/// Both names lowercase, joined by U+001F.
pub(crate) fn name_key_of(first: &str, last: &str) -> String {
    format!("{}\u{1f}{}", first.to_lowercase(), last.to_lowercase())
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(data: &str) -> Result<T, StoreError> {
    serde_json::from_str(data).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

// ---- user import ----

impl Document for haken_core::app::App {
    const KIND: &'static str = "app";
    fn doc_id(&self) -> &str {
        &self.id
    }
}

impl Document for haken_core::app::ImportJob {
    const KIND: &'static str = "import_job";
    fn doc_id(&self) -> &str {
        &self.id
    }
    fn doc_parent(&self) -> Option<String> {
        Some(self.app_id.clone())
    }
}

/// What one imported row writes.
#[derive(Debug, Clone)]
pub enum RowWrite {
    /// Nothing but its events (a skipped row, or a failed one whose hook call is logged).
    Nothing,
    /// A new user.
    Create(Box<User>),
    /// A change to this existing user, computed under the lock by the batch's `update`.
    Update(String),
}

/// One row of an import batch: its write and the System Log events that go with it.
#[derive(Debug, Clone)]
pub struct ImportRow {
    pub write: RowWrite,
    pub events: Vec<LogEvent>,
}

/// A JSON object setting, read as a map (empty when absent).
pub fn as_map(v: Option<Value>) -> Map<String, Value> {
    match v {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        let list = |dir: &str| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR")))
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let sqlite = list("sqlite");
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, list("postgres"), "every migration needs a twin for the other backend");
    }
}
