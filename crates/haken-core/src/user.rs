//! The user: profile, status and the lifecycle rules that move between statuses.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorCode};
use crate::time::Timestamp;

/// Okta user statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserStatus {
    Staged,
    Provisioned,
    Active,
    Recovery,
    LockedOut,
    PasswordExpired,
    Suspended,
    Deprovisioned,
}

impl UserStatus {
    pub const ALL: [UserStatus; 8] = [
        UserStatus::Staged,
        UserStatus::Provisioned,
        UserStatus::Active,
        UserStatus::Recovery,
        UserStatus::LockedOut,
        UserStatus::PasswordExpired,
        UserStatus::Suspended,
        UserStatus::Deprovisioned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Staged => "STAGED",
            UserStatus::Provisioned => "PROVISIONED",
            UserStatus::Active => "ACTIVE",
            UserStatus::Recovery => "RECOVERY",
            UserStatus::LockedOut => "LOCKED_OUT",
            UserStatus::PasswordExpired => "PASSWORD_EXPIRED",
            UserStatus::Suspended => "SUSPENDED",
            UserStatus::Deprovisioned => "DEPROVISIONED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        UserStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What Haken keeps of a user's credentials. Secrets are hashes; none of this is returned
/// by the API except the shape (`password: {}`, the recovery question text, the provider).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredCredentials {
    /// PHC string of an Argon2id hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// The user was created with `credentials.password.hook`: their first sign-in asks the
    /// password import hook.
    #[serde(default)]
    pub password_hook: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_question: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_answer_hash: Option<String>,
    /// `credentials.provider.type`: OKTA, IMPORT, FEDERATION, ...
    #[serde(default = "default_provider")]
    pub provider_type: String,
    #[serde(default = "default_provider")]
    pub provider_name: String,
    /// SHA-256 of the latest activation token (activate / reactivate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_token_hash: Option<String>,
}

fn default_provider() -> String {
    "OKTA".to_owned()
}

/// A user of the directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub status: UserStatus,
    pub created: Timestamp,
    pub activated: Option<Timestamp>,
    pub status_changed: Option<Timestamp>,
    pub last_login: Option<Timestamp>,
    pub last_updated: Timestamp,
    pub password_changed: Option<Timestamp>,
    /// The user type (`type.id`); Haken has one default type.
    pub type_id: String,
    pub profile: Map<String, Value>,
    pub credentials: StoredCredentials,
    /// Consecutive failed sign-ins, for lockout.
    #[serde(default)]
    pub failed_sign_ins: u32,
}

impl User {
    /// The profile `login`, which is always present on a stored user.
    pub fn login(&self) -> &str {
        self.profile.get("login").and_then(Value::as_str).unwrap_or_default()
    }

    pub fn display_name(&self) -> String {
        let first = self.profile.get("firstName").and_then(Value::as_str).unwrap_or_default();
        let last = self.profile.get("lastName").and_then(Value::as_str).unwrap_or_default();
        let name = format!("{first} {last}");
        let name = name.trim();
        if name.is_empty() { self.login().to_owned() } else { name.to_owned() }
    }

    pub fn has_password(&self) -> bool {
        self.credentials.password_hash.is_some()
    }

    fn set_status(&mut self, status: UserStatus, now: Timestamp) {
        self.status = status;
        self.status_changed = Some(now);
        self.last_updated = now;
    }
}

/// Lifecycle operations of `/api/v1/users/{id}/lifecycle/*` (and the first step of delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Activate,
    Reactivate,
    Deactivate,
    Suspend,
    Unsuspend,
    Unlock,
    ExpirePassword,
}

impl Lifecycle {
    pub fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "activate" => Lifecycle::Activate,
            "reactivate" => Lifecycle::Reactivate,
            "deactivate" => Lifecycle::Deactivate,
            "suspend" => Lifecycle::Suspend,
            "unsuspend" => Lifecycle::Unsuspend,
            "unlock" => Lifecycle::Unlock,
            "expire_password" => Lifecycle::ExpirePassword,
            _ => return None,
        })
    }

    /// The System Log event type this operation writes.
    pub fn event_type(self) -> &'static str {
        match self {
            Lifecycle::Activate => "user.lifecycle.activate",
            Lifecycle::Reactivate => "user.lifecycle.reactivate",
            Lifecycle::Deactivate => "user.lifecycle.deactivate",
            Lifecycle::Suspend => "user.lifecycle.suspend",
            Lifecycle::Unsuspend => "user.lifecycle.unsuspend",
            Lifecycle::Unlock => "user.account.unlock_by_admin",
            Lifecycle::ExpirePassword => "user.account.expire_password",
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Lifecycle::Activate => "Activate user",
            Lifecycle::Reactivate => "Reactivate user",
            Lifecycle::Deactivate => "Deactivate user",
            Lifecycle::Suspend => "Suspend user",
            Lifecycle::Unsuspend => "Unsuspend user",
            Lifecycle::Unlock => "Unlock user by admin",
            Lifecycle::ExpirePassword => "Expire user password",
        }
    }
}

/// What a lifecycle operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The status changed.
    Changed,
    /// The user was already in the target state; nothing to write.
    Unchanged,
}

/// Applies Okta's status rules for `op` to `user`, changing it in place, or explains why the
/// operation is not allowed in the user's current status.
pub fn apply_lifecycle(user: &mut User, op: Lifecycle, now: Timestamp) -> Result<Transition, ApiError> {
    use UserStatus as S;
    let status = user.status;
    let not_allowed = || ApiError::new(ErrorCode::WrongStatus);
    match op {
        Lifecycle::Activate => match status {
            S::Staged | S::Deprovisioned => {
                // A user with a password (or one whose password comes from the import hook)
                // is usable at once; the others wait for the activation link.
                let target =
                    if user.has_password() || user.credentials.password_hook { S::Active } else { S::Provisioned };
                user.set_status(target, now);
                user.activated = Some(now);
                Ok(Transition::Changed)
            }
            S::Provisioned => Err(ApiError::with_summary(
                ErrorCode::WrongStatus,
                "This operation is not allowed in the user's current status. Use reactivate for a PROVISIONED user.",
            )),
            _ => Err(ApiError::new(ErrorCode::AlreadyActive)),
        },
        Lifecycle::Reactivate => match status {
            S::Provisioned | S::Recovery => {
                user.set_status(S::Provisioned, now);
                Ok(Transition::Changed)
            }
            _ => Err(not_allowed()),
        },
        Lifecycle::Deactivate => match status {
            S::Deprovisioned => Ok(Transition::Unchanged),
            _ => {
                user.set_status(S::Deprovisioned, now);
                Ok(Transition::Changed)
            }
        },
        Lifecycle::Suspend => match status {
            S::Active => {
                user.set_status(S::Suspended, now);
                Ok(Transition::Changed)
            }
            _ => Err(ApiError::validation(
                "status",
                format!("Cannot suspend a user that is not ACTIVE (status is {})", status.as_str()),
            )),
        },
        Lifecycle::Unsuspend => match status {
            S::Suspended => {
                user.set_status(S::Active, now);
                Ok(Transition::Changed)
            }
            _ => Err(ApiError::validation(
                "status",
                format!("Cannot unsuspend a user that is not SUSPENDED (status is {})", status.as_str()),
            )),
        },
        Lifecycle::Unlock => match status {
            S::LockedOut => {
                user.set_status(S::Active, now);
                user.failed_sign_ins = 0;
                Ok(Transition::Changed)
            }
            _ => Err(ApiError::validation(
                "status",
                format!("Cannot unlock a user that is not LOCKED_OUT (status is {})", status.as_str()),
            )),
        },
        Lifecycle::ExpirePassword => match status {
            S::Active | S::PasswordExpired if user.has_password() => {
                if status == S::PasswordExpired {
                    return Ok(Transition::Unchanged);
                }
                user.set_status(S::PasswordExpired, now);
                Ok(Transition::Changed)
            }
            _ => Err(not_allowed()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(status: UserStatus, password: bool) -> User {
        User {
            id: "00u1".into(),
            status,
            created: Timestamp(0),
            activated: None,
            status_changed: None,
            last_login: None,
            last_updated: Timestamp(0),
            password_changed: None,
            type_id: "oty1".into(),
            profile: Map::new(),
            credentials: StoredCredentials { password_hash: password.then(|| "h".to_owned()), ..Default::default() },
            failed_sign_ins: 0,
        }
    }

    #[test]
    fn okta_status_rules() {
        use Lifecycle as L;
        use UserStatus as S;
        let now = Timestamp(5);
        let cases: &[(S, bool, L, Result<S, &str>)] = &[
            (S::Staged, true, L::Activate, Ok(S::Active)),
            (S::Staged, false, L::Activate, Ok(S::Provisioned)),
            (S::Deprovisioned, true, L::Activate, Ok(S::Active)),
            (S::Active, true, L::Activate, Err("E0000016")),
            (S::Provisioned, false, L::Reactivate, Ok(S::Provisioned)),
            (S::Active, true, L::Reactivate, Err("E0000038")),
            (S::Active, true, L::Suspend, Ok(S::Suspended)),
            (S::Staged, true, L::Suspend, Err("E0000001")),
            (S::Suspended, true, L::Unsuspend, Ok(S::Active)),
            (S::Active, true, L::Unsuspend, Err("E0000001")),
            (S::LockedOut, true, L::Unlock, Ok(S::Active)),
            (S::Active, true, L::Unlock, Err("E0000001")),
            (S::Active, true, L::ExpirePassword, Ok(S::PasswordExpired)),
            (S::Active, false, L::ExpirePassword, Err("E0000038")),
            (S::Suspended, true, L::Deactivate, Ok(S::Deprovisioned)),
        ];
        for (from, pw, op, want) in cases {
            let mut u = user(*from, *pw);
            let got = apply_lifecycle(&mut u, *op, now);
            match want {
                Ok(to) => {
                    assert!(got.is_ok(), "{from:?} {op:?}: {got:?}");
                    assert_eq!(u.status, *to, "{from:?} {op:?}");
                }
                Err(code) => {
                    assert_eq!(got.err().map(|e| e.code.code()), Some(*code), "{from:?} {op:?}");
                    assert_eq!(u.status, *from, "a refused transition changes nothing");
                }
            }
        }
    }
}
