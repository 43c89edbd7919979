//! The server's settings, loaded once by the binary (defaults → file → `HAKEN_*` → flags)
//! and passed down as this typed struct.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A secret string: never printed by `Debug`, never serialised back out.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// Everything `haken serve` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Holds the SQLite database and the first bootstrap token.
    pub data_dir: PathBuf,
    /// `sqlite://…` (default: `<data_dir>/haken.db`) or `postgres://…`.
    pub database_url: Option<Secret>,
    /// Base URL written into links and event sources; default `http://<listen address>`.
    pub public_url: Option<String>,
    /// Allow `http://` and loopback/private hook targets (development and tests only).
    pub insecure_hooks: bool,
    /// Makes this value a valid super-admin API token.
    pub bootstrap_token: Option<Secret>,
    /// Requests per minute per API token (and per client address before authentication).
    pub rate_limit_per_minute: u32,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Run the event-hook delivery workers on this node (a node can serve the API only).
    pub workers: bool,
    /// Names this node in delivery leases and attempt records. Default: kept in
    /// `<data-dir>/node-id`, so a restarted node takes back its own leases at once.
    pub node_id: Option<String>,
    /// How long a node holds a delivery it claimed before others may take it (seconds).
    pub delivery_lease_secs: u64,
    /// Longest pause between two looks at the delivery queue when nothing wakes the node
    /// (milliseconds). Writes wake their node at once and other nodes through PostgreSQL;
    /// the poll finds due retries and expired leases.
    pub delivery_poll_ms: u64,
    /// Delivered deliveries (and their attempt log) are kept this many days. Dead letters are
    /// kept until replayed.
    pub delivery_retention_days: u64,
    /// System Log events are kept this many days (Okta answers 90), unless an undelivered
    /// delivery still needs them.
    pub log_retention_days: u64,
    /// Inline hook calls in flight to one hook at once (per node); more wait, within the
    /// hook's time budget.
    pub inline_max_in_flight: usize,
    /// Registrations per minute from one client address (`POST /api/v1/registration`).
    pub registration_per_minute: u32,
    /// Failed sign-ins in a row before an account is locked (0: never).
    pub lockout_attempts: u32,
    /// Sign-in attempts (`POST /api/v1/authn`) per minute from one client address. Lockout is
    /// per user; this bounds password spraying across users from one address.
    pub signin_per_minute: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".to_owned(),
            data_dir: PathBuf::from("./haken-data"),
            database_url: None,
            public_url: None,
            insecure_hooks: false,
            bootstrap_token: None,
            rate_limit_per_minute: 6000,
            max_body_bytes: 1024 * 1024,
            workers: true,
            node_id: None,
            delivery_lease_secs: 60,
            delivery_poll_ms: 1000,
            delivery_retention_days: 7,
            log_retention_days: 90,
            inline_max_in_flight: haken_hooks::inline::DEFAULT_MAX_IN_FLIGHT,
            registration_per_minute: 60,
            lockout_attempts: 10,
            signin_per_minute: 120,
        }
    }
}

impl ServerConfig {
    /// The database URL, defaulting to SQLite in the data directory.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.expose().is_empty() => url.expose().to_owned(),
            _ => format!("sqlite://{}", self.data_dir.join("haken.db").display()),
        }
    }
}
