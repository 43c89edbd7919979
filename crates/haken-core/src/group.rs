//! Groups of users.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// A group. Only `OKTA_GROUP`s are created through the API; their memberships are editable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub created: Timestamp,
    pub last_updated: Timestamp,
    pub last_membership_updated: Timestamp,
    /// `OKTA_GROUP`, `APP_GROUP` or `BUILT_IN`.
    pub group_type: String,
    pub profile: Map<String, Value>,
}

impl Group {
    pub fn name(&self) -> &str {
        self.profile.get("name").and_then(Value::as_str).unwrap_or_default()
    }
}
