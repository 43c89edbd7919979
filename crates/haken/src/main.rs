//! The `haken` command: `serve` runs the identity server; `token` manages API tokens directly
//! in the store; `hooks` and `users import` talk to a running server; `bench` measures it.

mod bench;
mod config;
mod hooks_cli;
mod import_cli;
mod inline_cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use haken_core::Timestamp;
use haken_core::log_event::EventContext;
use haken_store::{Store, StoreOptions};

// The server builds and drops many small JSON values per request; mimalloc's thread-local
// free lists handle that with far less time in the allocator than glibc's malloc. It is built
// without transparent huge pages (`no_thp`): mimalloc gives idle memory back and takes it
// again, and with huge pages each time a page came back the kernel zeroed 2 MiB for it (2 % of
// the server's CPU at 1,000 changes/s, against 0.6 % for all page faults without).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "haken", version, about = "Haken: an identity server extensible by hooks")]
struct Cli {
    /// TOML configuration file (flags and HAKEN_* variables override it).
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(config::ServeFlags),
    /// Manage API tokens (works on the store directly, with or without a running server).
    Token {
        #[command(flatten)]
        store: config::StoreFlags,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Measure the server on this machine.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// Develop against event hooks: a local receiver, test events, the delivery log, replay.
    Hooks {
        #[command(flatten)]
        api: hooks_cli::ApiFlags,
        #[command(subcommand)]
        action: hooks_cli::HooksAction,
    },
    /// Develop against inline hooks: list them, preview a hook with a sample or your own request.
    Inline {
        #[command(flatten)]
        api: hooks_cli::ApiFlags,
        #[command(subcommand)]
        action: inline_cli::InlineAction,
    },
    /// Users: import a CSV or JSON Lines file through an app (and its import inline hook).
    Users {
        #[command(flatten)]
        api: hooks_cli::ApiFlags,
        #[command(subcommand)]
        action: import_cli::UsersAction,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create a token and print its value (shown only this once).
    Create {
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List tokens (never their values).
    List,
    /// Revoke a token by id or name.
    Revoke { id_or_name: String },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HAKEN_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(flags) => serve(config::load(cli.config.as_deref(), &flags)?).await,
        Command::Token { store, action } => {
            let cfg = config::load(cli.config.as_deref(), &store.into_serve_flags())?;
            token(cfg, action).await
        }
        Command::Bench { what } => bench::run(what).await,
        Command::Hooks { api, action } => hooks_cli::run(api, action).await,
        Command::Users { api, action } => import_cli::run(api, action).await,
        Command::Inline { api, action } => inline_cli::run(api, action).await,
    }
}

async fn serve(cfg: haken_server::ServerConfig) -> anyhow::Result<()> {
    let data_dir = cfg.data_dir.clone();
    let running = haken_server::start(cfg).await.context("starting the server")?;
    if let Some(token) = &running.created_bootstrap_token {
        eprintln!(
            "\nCreated the first API token (shown once, also saved to {}):\n\n    {token}\n\nUse it as: Authorization: SSWS {token}\n",
            data_dir.join("bootstrap-token").display()
        );
    }
    eprintln!("Haken is listening on {} (public URL {})", running.addr, running.public_url);
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutting down: finishing requests in flight.");
        let _ = stop.send(true);
    });
    running.wait().await.context("serving")?;
    tracing::info!("Stopped.");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn token(cfg: haken_server::ServerConfig, action: TokenAction) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let store = Store::connect(&StoreOptions::new(cfg.effective_database_url())).await.context("opening the store")?;
    let ctx = EventContext::system("cli");
    let result = match action {
        TokenAction::Create { name } => {
            let created = haken_flows::tokens::create(&store, &ctx, &name, Timestamp::now()).await?;
            println!("{}", created.value);
            eprintln!(
                "Created token {} ({}). Its value is shown only this once.",
                created.token.id, created.token.name
            );
            Ok(())
        }
        TokenAction::List => {
            let tokens = store.list_tokens().await?;
            println!("{:<22} {:<24} {:<26} STATUS", "ID", "NAME", "CREATED");
            for t in tokens {
                println!(
                    "{:<22} {:<24} {:<26} {}",
                    t.id,
                    t.name,
                    t.created,
                    if t.revoked { "REVOKED" } else { "ACTIVE" }
                );
            }
            Ok(())
        }
        TokenAction::Revoke { id_or_name } => {
            let t = haken_flows::tokens::revoke(&store, &ctx, &id_or_name, Timestamp::now()).await?;
            eprintln!("Revoked token {} ({}).", t.id, t.name);
            Ok(())
        }
    };
    store.close().await;
    result
}
