//! Configuration loading: defaults, then the TOML file, then `HAKEN_*` variables, then flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use haken_server::ServerConfig;
use serde::Serialize;

/// Flags of `haken serve` (each overrides the file and the environment).
#[derive(Debug, Default, Clone, clap::Args, Serialize)]
pub struct ServeFlags {
    /// Address to listen on [default: 127.0.0.1:8080; env HAKEN_LISTEN].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Data directory, holding the SQLite database [default: ./haken-data; env HAKEN_DATA_DIR].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// sqlite://… or postgres://… [default: sqlite in the data directory; env HAKEN_DATABASE_URL].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Base URL for links and event sources [env HAKEN_PUBLIC_URL].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Allow http:// and loopback/private hook targets (development only) [env HAKEN_INSECURE_HOOKS].
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_hooks: bool,
    /// Requests per minute per API token [default: 6000; env HAKEN_RATE_LIMIT_PER_MINUTE].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_minute: Option<u32>,
    /// Largest request body in bytes [default: 1048576; env HAKEN_MAX_BODY_BYTES].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Serve the API only: no event-hook delivery workers on this node [env HAKEN_WORKERS=false].
    #[arg(long = "no-workers", action = clap::ArgAction::SetFalse)]
    #[serde(skip_serializing_if = "is_true")]
    pub workers: bool,
    /// Name of this node in delivery leases [default: kept in <data-dir>/node-id; env HAKEN_NODE_ID].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Seconds a node holds a claimed delivery before others may take it [default: 60; env HAKEN_DELIVERY_LEASE_SECS].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_lease_secs: Option<u64>,
    /// Longest pause in ms between looks at the delivery queue when nothing wakes the node (10–60000) [default: 1000; env HAKEN_DELIVERY_POLL_MS].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_poll_ms: Option<u64>,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The flags a store-only command needs.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct StoreFlags {
    /// Data directory [default: ./haken-data; env HAKEN_DATA_DIR].
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// sqlite://… or postgres://… [env HAKEN_DATABASE_URL].
    #[arg(long, global = true)]
    pub database_url: Option<String>,
}

impl StoreFlags {
    pub fn into_serve_flags(self) -> ServeFlags {
        ServeFlags { data_dir: self.data_dir, database_url: self.database_url, workers: true, ..Default::default() }
    }
}

const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "public_url",
    "insecure_hooks",
    "bootstrap_token",
    "rate_limit_per_minute",
    "max_body_bytes",
    "workers",
    "node_id",
    "delivery_lease_secs",
    "delivery_poll_ms",
    "delivery_retention_days",
    "log_retention_days",
    "inline_max_in_flight",
    "registration_per_minute",
    "lockout_attempts",
    "signin_per_minute",
];

/// Loads the configuration in order of precedence: flags > `HAKEN_*` > file > defaults.
pub fn load(file: Option<&Path>, flags: &ServeFlags) -> anyhow::Result<ServerConfig> {
    let mut fig = Figment::from(Serialized::defaults(ServerConfig::default()));
    if let Some(path) = file {
        anyhow::ensure!(path.exists(), "configuration file {} does not exist", path.display());
        fig = fig.merge(Toml::file(path));
    }
    fig = fig.merge(Env::prefixed("HAKEN_").only(ENV_KEYS)).merge(Serialized::defaults(flags));
    let cfg: ServerConfig = fig.extract().context("reading the configuration")?;
    anyhow::ensure!(cfg.max_body_bytes >= 1024, "max_body_bytes must be at least 1024");
    Ok(cfg)
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
mod tests {
    use super::*;

    #[test]
    fn flags_beat_env_beat_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "haken.toml",
                "listen = \"127.0.0.1:1000\"\ndata_dir = \"/from/file\"\nrate_limit_per_minute = 5\n",
            )?;
            jail.set_env("HAKEN_DATA_DIR", "/from/env");
            jail.set_env("HAKEN_RATE_LIMIT_PER_MINUTE", "7");
            let flags = ServeFlags { rate_limit_per_minute: Some(9), workers: true, ..Default::default() };
            let cfg = load(Some(Path::new("haken.toml")), &flags).map_err(|e| e.to_string())?;
            assert_eq!(cfg.listen, "127.0.0.1:1000");
            assert_eq!(cfg.data_dir, PathBuf::from("/from/env"));
            assert_eq!(cfg.rate_limit_per_minute, 9);
            Ok(())
        });
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("haken.toml", "lisen = \"x\"\n")?;
            assert!(load(Some(Path::new("haken.toml")), &ServeFlags { workers: true, ..Default::default() }).is_err());
            Ok(())
        });
    }
}
