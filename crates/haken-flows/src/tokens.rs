//! API tokens: creation (value shown once), listing, revocation, and the bootstrap token.

use haken_core::id::{IdKind, new_id, random_base62};
use haken_core::log_event::{EventContext, Target};
use haken_core::token::{ApiToken, hash_token};
use haken_core::{ApiError, Timestamp};
use haken_store::{Store, StoreError};

use crate::store_error;

/// A token just created: the only moment its value is known.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token: ApiToken,
    pub value: String,
}

/// A new super-admin token named `name`.
pub async fn create(store: &Store, ctx: &EventContext, name: &str, now: Timestamp) -> Result<NewToken, ApiError> {
    let value = format!("00{}", random_base62(40));
    let token = insert(store, ctx, name, &value, now).await?;
    Ok(NewToken { token, value })
}

async fn insert(
    store: &Store,
    ctx: &EventContext,
    name: &str,
    value: &str,
    now: Timestamp,
) -> Result<ApiToken, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(ApiError::validation("name", "must be 1 to 255 characters"));
    }
    let token = ApiToken {
        id: new_id(IdKind::ApiToken),
        name: name.to_owned(),
        token_hash: hash_token(value),
        created: now,
        last_used: None,
        role: "SUPER_ADMIN".to_owned(),
        revoked: false,
    };
    let event = ctx
        .event("system.api_token.create", "Create API token", now)
        .with_target(Target::token(&token.id, &token.name));
    store.insert_token(&token, &[event]).await.map_err(|e| store_error(e, "Token", &token.id))?;
    Ok(token)
}

/// Makes `value` a valid token (idempotent: an existing token with that value is kept, and
/// re-enabled if it had been revoked).
pub async fn ensure_bootstrap(store: &Store, value: &str, now: Timestamp) -> Result<ApiToken, ApiError> {
    let hash = hash_token(value);
    let ctx = EventContext::system("bootstrap");
    match store.token_by_hash(&hash).await.map_err(|e| store_error(e, "Token", "bootstrap"))? {
        Some(t) if !t.revoked => Ok(t),
        Some(mut t) => {
            t.revoked = false;
            store.update_token(&t, &[]).await.map_err(|e| store_error(e, "Token", &t.id))?;
            Ok(t)
        }
        None => match insert(store, &ctx, "bootstrap", value, now).await {
            Ok(t) => Ok(t),
            // Another node inserted it at the same moment.
            Err(e) if e.code == haken_core::ErrorCode::ValidationFailed => {
                store.token_by_hash(&hash).await.map_err(|e| store_error(e, "Token", "bootstrap"))?.ok_or(e)
            }
            Err(e) => Err(e),
        },
    }
}

/// Looks up an active token by its value.
pub async fn authenticate(store: &Store, value: &str) -> Result<Option<ApiToken>, StoreError> {
    Ok(store.token_by_hash(&hash_token(value)).await?.filter(|t| !t.revoked))
}

/// Revokes a token by id (or name).
pub async fn revoke(store: &Store, ctx: &EventContext, id_or_name: &str, now: Timestamp) -> Result<ApiToken, ApiError> {
    let tokens = store.list_tokens().await.map_err(|e| store_error(e, "Token", id_or_name))?;
    let mut token = tokens
        .into_iter()
        .find(|t| !t.revoked && (t.id == id_or_name || t.name == id_or_name))
        .ok_or_else(|| ApiError::not_found(id_or_name, "Token"))?;
    token.revoked = true;
    let event = ctx
        .event("system.api_token.revoke", "Revoke API token", now)
        .with_target(Target::token(&token.id, &token.name));
    store.update_token(&token, &[event]).await.map_err(|e| store_error(e, "Token", &token.id))?;
    Ok(token)
}
