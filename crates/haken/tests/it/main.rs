//! Integration tests: the real server, started in this process on 127.0.0.1:0 (or as the real
//! binary where a process boundary matters), driven over real HTTP. Every store-touching test
//! runs on SQLite and on PostgreSQL.

mod harness;

mod auth;
mod binary;
mod cli_hooks;
mod durability;
mod event_hooks;
mod groups;
mod import;
mod inline_hooks;
mod logs;
mod receiver;
mod registration;
mod sdk;
mod signin;
mod tidy;
mod users;
