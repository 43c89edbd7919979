//! Haken's domain: identifiers, time stamps, users, groups, the profile schema, System Log
//! events and the Okta error vocabulary.
//!
//! This crate knows nothing of HTTP or SQL. The server turns these types into wire bodies; the
//! store persists them.

pub mod app;
pub mod catalog;
pub mod error;
pub mod expr;
pub mod filter;
pub mod group;
pub mod hook;
pub mod id;
pub mod inline_hook;
pub mod log_event;
pub mod policy;
pub mod schema;
pub mod session;
pub mod time;
pub mod token;
pub mod user;

pub use error::{ApiError, ErrorCode};
pub use group::Group;
pub use log_event::LogEvent;
pub use time::Timestamp;
pub use user::{User, UserStatus};
