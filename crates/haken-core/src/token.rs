//! API tokens (`Authorization: SSWS <token>`). Only a SHA-256 digest of a token is stored.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A stored API token (without its secret value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the token value.
    pub token_hash: String,
    pub created: Timestamp,
    pub last_used: Option<Timestamp>,
    /// `SUPER_ADMIN` is the only role for now.
    pub role: String,
    pub revoked: bool,
}

/// Hex SHA-256 of an API token value: what the store keeps and looks tokens up by.
pub fn hash_token(value: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(value.as_bytes());
    crate::id::hex(&digest)
}
