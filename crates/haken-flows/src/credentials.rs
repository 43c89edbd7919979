//! Passwords: Okta's default password policy and Argon2id hashing. Hashing runs on the
//! blocking pool so a burst of sign-ups cannot stall the async workers.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
use haken_core::ApiError;

/// Okta's default policy: at least 8 characters, a lowercase letter, an uppercase letter, a
/// number, and not the username.
pub fn check_policy(password: &str, login: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    let ok = (8..=256).contains(&chars)
        && password.chars().any(char::is_lowercase)
        && password.chars().any(char::is_uppercase)
        && password.chars().any(|c| c.is_ascii_digit())
        && !contains_login_part(password, login);
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "password",
            "Password requirements were not met. Password requirements: at least 8 characters, a lowercase letter, an uppercase letter, a number, no parts of your username.",
        ))
    }
}

fn contains_login_part(password: &str, login: &str) -> bool {
    // The username is the login's local part (the whole login when it has no `@`).
    let username = login.split('@').next().unwrap_or(login).to_lowercase();
    username.chars().count() >= 3 && password.to_lowercase().contains(&username)
}

/// Password hashes computed at once. Each Argon2id run takes about 19 MiB and a core for
/// milliseconds: unbounded, a burst of sign-ins or sign-ups could take all memory and every
/// blocking thread. More wait their turn.
fn hashing_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        tokio::sync::Semaphore::new(cores * 2)
    })
}

/// An Argon2id hash (PHC string) of `password`, computed off the async workers.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    let _slot = hashing_slots().acquire().await.map_err(|_| ApiError::internal())?;
    tokio::task::spawn_blocking(move || {
        Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| {
            tracing::error!(error = %e, "Password hashing failed.");
            ApiError::internal()
        })
    })
    .await
    .map_err(|_| ApiError::internal())?
}

/// Checks `password` against a stored PHC hash, off the async workers.
pub async fn verify_password(password: String, hash: String) -> bool {
    let Ok(_slot) = hashing_slots().acquire().await else { return false };
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_policy("Tr0ub4dor&3", "lee@example.org").is_ok());
        assert!(check_policy("short1A", "lee@example.org").is_err());
        assert!(check_policy("alllowercase1", "lee@example.org").is_err());
        assert!(check_policy("Lee-Rules-123", "lee@example.org").is_err(), "contains the username");
        assert!(check_policy("Example-123", "lee@example.org").is_ok(), "the domain is not the username");
    }

    #[tokio::test]
    async fn argon2id_round_trip() {
        let h = hash_password("Tr0ub4dor&3".into()).await.unwrap_or_default();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("Tr0ub4dor&3".into(), h.clone()).await);
        assert!(!verify_password("tr0ub4dor&3".into(), h).await);
    }
}
