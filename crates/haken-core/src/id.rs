//! Okta-shaped identifiers: 20 characters of base-62 behind a three-character type prefix
//! (`00u…` users, `00g…` groups, `00T…` API tokens). Handlers in the wild pattern-match on the
//! prefixes, so Haken keeps them.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ID_LEN: usize = 20;

/// The kinds of object that carry an Okta-style id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    User,
    Group,
    App,
    EventHook,
    InlineHook,
    Policy,
    PolicyRule,
    ApiToken,
    HookKey,
    AuthServer,
    /// Per-request ids (`X-Okta-Request-Id`, `errorId`): not an Okta object, same alphabet.
    Request,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::User => "00u",
            IdKind::Group => "00g",
            IdKind::App => "0oa",
            IdKind::EventHook => "who",
            IdKind::InlineHook => "cal",
            IdKind::Policy => "00p",
            IdKind::PolicyRule => "0pr",
            IdKind::ApiToken => "00T",
            IdKind::HookKey => "HKY",
            IdKind::AuthServer => "aus",
            IdKind::Request => "",
        }
    }
}

/// A fresh random id of the given kind.
pub fn new_id(kind: IdKind) -> String {
    let prefix = kind.prefix();
    let mut out = String::with_capacity(ID_LEN + 5);
    out.push_str(prefix);
    let len = if prefix.is_empty() { 25 } else { ID_LEN };
    random_base62_into(&mut out, len - prefix.len());
    out
}

/// Appends `n` random base-62 characters.
pub fn random_base62_into(out: &mut String, n: usize) {
    let mut rng = rand::rng();
    for _ in 0..n {
        let i = rng.random_range(0..ALPHABET.len());
        out.push(char::from(ALPHABET[i]));
    }
}

/// Appends `bytes` as lowercase hexadecimal.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// `bytes` as lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    push_hex(&mut s, bytes);
    s
}

/// A random base-62 string of `n` characters (secrets, tokens).
pub fn random_base62(n: usize) -> String {
    let mut s = String::with_capacity(n);
    random_base62_into(&mut s, n);
    s
}

/// True when `s` looks like an id of `kind` (prefix and alphabet), without touching storage.
pub fn looks_like(kind: IdKind, s: &str) -> bool {
    s.len() == ID_LEN && s.starts_with(kind.prefix()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn ids_have_prefix_and_length() {
        let id = new_id(IdKind::User);
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("00u"));
        assert!(looks_like(IdKind::User, &id));
        assert!(!looks_like(IdKind::Group, &id));
        assert_ne!(new_id(IdKind::User), id);
    }
}
