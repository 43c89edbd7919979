//! Haken's hooks engine. It decides which event hooks receive an event (inside the write
//! transaction, through the store's router), delivers queued events durably (claim with a
//! lease, send, record, retry), verifies endpoints, signs bodies, and owns the one outbound
//! HTTP client with its URL policy. It knows nothing of HTTP routing or of specific flows.

pub mod client;
pub mod dispatcher;
pub mod envelope;
pub mod inline;
pub mod manage;
pub mod metrics;
pub mod oauth;
pub mod retry;
pub mod router;
pub mod signing;
pub mod verify;

pub use client::{OutboundClient, UrlPolicy};
pub use dispatcher::{Dispatcher, DispatcherConfig};
pub use router::HookRouter;
