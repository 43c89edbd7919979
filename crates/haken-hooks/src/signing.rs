//! Standard Webhooks signatures: `webhook-id`, `webhook-timestamp` and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one entry per live secret, so during a
//! rotation receivers holding either secret can verify). Okta-shaped receivers ignore them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SECRET_PREFIX: &str = "whsec_";

/// A fresh secret in the Standard Webhooks format (`whsec_` and 32 random bytes in base64).
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

fn key(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret)).ok()
}

/// `v1,<signature>` of one message with one secret.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)?).ok()?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The three headers for a request signed with every secret given.
pub fn headers<'a>(
    secrets: impl Iterator<Item = &'a str>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let sigs: Vec<String> = secrets.filter_map(|s| sign(s, msg_id, timestamp, body)).collect();
    if sigs.is_empty() {
        return Vec::new();
    }
    vec![
        ("webhook-id".to_owned(), msg_id.to_owned()),
        ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ("webhook-signature".to_owned(), sigs.join(" ")),
    ]
}

/// Checks a `webhook-signature` header as a receiver would (used by `haken hooks listen` and
/// the tests): true when any listed signature matches.
pub fn verify(secret: &str, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(expected) = sign(secret, msg_id, timestamp, body) else { return false };
    header.split_whitespace().any(|candidate| {
        candidate.len() == expected.len()
            && candidate.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        // The example from the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig.as_deref(), Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
    }

    #[test]
    fn rotation_signs_with_every_live_secret() {
        let (a, b) = (new_secret(), new_secret());
        let h = headers([a.as_str(), b.as_str()].into_iter(), "evt1", 1700000000, b"{}");
        let sig = &h[2].1;
        assert!(verify(&a, "evt1", 1700000000, b"{}", sig));
        assert!(verify(&b, "evt1", 1700000000, b"{}", sig));
        assert!(!verify(&new_secret(), "evt1", 1700000000, b"{}", sig));
        assert!(!verify(&a, "evt1", 1700000000, b"{ }", sig), "a changed body fails");
        assert!(headers(std::iter::empty(), "x", 1, b"").is_empty());
    }
}
