//! Sign-in sessions. `POST /api/v1/authn` answers a one-time `sessionToken`; Haken keeps only
//! its SHA-256 digest. A live session authenticates the user's own self-service calls (the
//! progressive profile update).

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// How long a session lasts after sign-in.
pub const SESSION_TTL_MS: i64 = 2 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    /// Hex SHA-256 of the session token.
    pub token_hash: String,
    pub created: Timestamp,
    pub expires_at: Timestamp,
    /// Ended by sign-out or by an administrator.
    #[serde(default)]
    pub revoked: bool,
}

impl Session {
    pub fn is_live(&self, now: Timestamp) -> bool {
        !self.revoked && self.expires_at > now
    }
}
