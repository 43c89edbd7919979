//! Inline hooks and hook keys as Haken keeps them, secrets included. The wire shape of
//! `/api/v1/inlineHooks` and `/api/v1/hook-keys` is built by the server; the call itself
//! (channels, time budget, commands) lives in `haken-hooks`.

use serde::{Deserialize, Serialize};

use crate::hook::{AuthScheme, HookStatus};
use crate::time::Timestamp;

/// The six inline hook types (the InlineHook `type`, also the request's `eventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InlineHookType {
    #[serde(rename = "com.okta.user.pre-registration")]
    Registration,
    #[serde(rename = "com.okta.import.transform")]
    Import,
    #[serde(rename = "com.okta.user.credential.password.import")]
    PasswordImport,
    #[serde(rename = "com.okta.oauth2.tokens.transform")]
    Token,
    #[serde(rename = "com.okta.saml.tokens.transform")]
    Saml,
    #[serde(rename = "com.okta.telephony.provider")]
    Telephony,
}

impl InlineHookType {
    pub const ALL: [InlineHookType; 6] = [
        InlineHookType::Registration,
        InlineHookType::Import,
        InlineHookType::PasswordImport,
        InlineHookType::Token,
        InlineHookType::Saml,
        InlineHookType::Telephony,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InlineHookType::Registration => "com.okta.user.pre-registration",
            InlineHookType::Import => "com.okta.import.transform",
            InlineHookType::PasswordImport => "com.okta.user.credential.password.import",
            InlineHookType::Token => "com.okta.oauth2.tokens.transform",
            InlineHookType::Saml => "com.okta.saml.tokens.transform",
            InlineHookType::Telephony => "com.okta.telephony.provider",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        InlineHookType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Okta's behaviour when the call fails (timeout, transport error, bad status, invalid
    /// answer), spec 3.4: registration and password import stop the flow; the others go on
    /// without the hook's changes.
    pub fn default_fail_mode(self) -> FailMode {
        match self {
            InlineHookType::Registration | InlineHookType::PasswordImport => FailMode::Closed,
            InlineHookType::Import | InlineHookType::Token | InlineHookType::Saml | InlineHookType::Telephony => {
                FailMode::Open
            }
        }
    }

    /// Whether a failed attempt is tried once more (spec 3.3: never for token and telephony).
    pub fn retries(self) -> bool {
        !matches!(self, InlineHookType::Token | InlineHookType::Telephony)
    }
}

/// What a flow does when its hook cannot be asked or answers nonsense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailMode {
    /// Go on as if there were no hook (`failOpen`).
    #[serde(rename = "failOpen")]
    Open,
    /// Stop the flow (`failClosed`).
    #[serde(rename = "failClosed")]
    Closed,
}

impl FailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "failOpen",
            FailMode::Closed => "failClosed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "failOpen" => Some(FailMode::Open),
            "failClosed" => Some(FailMode::Closed),
            _ => None,
        }
    }
}

/// How Haken authenticates to the token endpoint of an `OAUTH` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OAuthAuthType {
    #[serde(rename = "client_secret_post")]
    ClientSecretPost,
    #[serde(rename = "private_key_jwt")]
    PrivateKeyJwt,
}

impl OAuthAuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthAuthType::ClientSecretPost => "client_secret_post",
            OAuthAuthType::PrivateKeyJwt => "private_key_jwt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client_secret_post" => Some(OAuthAuthType::ClientSecretPost),
            "private_key_jwt" => Some(OAuthAuthType::PrivateKeyJwt),
            _ => None,
        }
    }
}

/// The `OAUTH` channel: a client-credentials access token, sent as `Authorization: Bearer`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthConfig {
    pub auth_type: OAuthAuthType,
    pub client_id: String,
    /// `client_secret_post` only; a secret.
    pub client_secret: Option<String>,
    /// `private_key_jwt` only: the hook key's `id`.
    pub hook_key_id: Option<String>,
    pub token_url: String,
    pub scope: Option<String>,
}

impl std::fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("auth_type", &self.auth_type)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("hook_key_id", &self.hook_key_id)
            .field("token_url", &self.token_url)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The channel of an inline hook: where it is called and how Haken authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineChannel {
    pub uri: String,
    pub headers: Vec<(String, String)>,
    /// `HTTP` channel: the header secret (may be absent, except for telephony hooks).
    pub auth: Option<AuthScheme>,
    /// `OAUTH` channel.
    pub oauth: Option<OAuthConfig>,
}

impl InlineChannel {
    /// `HTTP` or `OAUTH`.
    pub fn kind(&self) -> &'static str {
        if self.oauth.is_some() { "OAUTH" } else { "HTTP" }
    }
}

/// An inline hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InlineHook {
    pub id: String,
    pub name: String,
    pub hook_type: InlineHookType,
    /// Version of the hook type's contract (`1.0.0`).
    pub version: String,
    pub status: HookStatus,
    pub channel: InlineChannel,
    pub created: Timestamp,
    pub last_updated: Timestamp,
    /// Extension: overrides the type's fail mode.
    #[serde(default)]
    pub fail_mode: Option<FailMode>,
    /// Extension: call the handler and record what it would change, without applying it.
    #[serde(default)]
    pub shadow: bool,
    /// Extension: time budget of one attempt (default 3 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Accepted and kept for older SDKs (`metadata` string map); not interpreted.
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Default time budget of one attempt (spec 3.3).
pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;
/// Longest time budget an administrator may set.
pub const MAX_TIMEOUT_MS: u64 = 30_000;

impl InlineHook {
    pub fn fail_mode(&self) -> FailMode {
        self.fail_mode.unwrap_or_else(|| self.hook_type.default_fail_mode())
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)
    }

    pub fn is_active(&self) -> bool {
        self.status == HookStatus::Active
    }
}

/// A key pair for `private_key_jwt` channels. The private half never leaves the server.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct HookKey {
    pub id: String,
    /// Alias of the public key, the JWT `kid`.
    pub key_id: String,
    pub name: String,
    /// PKCS#8 DER of the private key, base64.
    pub private_key: String,
    /// The public JWK.
    pub public_jwk: serde_json::Value,
    pub created: Timestamp,
    pub last_updated: Timestamp,
}

impl std::fmt::Debug for HookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookKey")
            .field("id", &self.id)
            .field("key_id", &self.key_id)
            .field("name", &self.name)
            .field("private_key", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_fail_modes() {
        for t in InlineHookType::ALL {
            assert_eq!(InlineHookType::parse(t.as_str()), Some(t));
            let json = serde_json::to_value(t).unwrap_or_default();
            assert_eq!(json, t.as_str());
        }
        assert_eq!(InlineHookType::Registration.default_fail_mode(), FailMode::Closed);
        assert_eq!(InlineHookType::PasswordImport.default_fail_mode(), FailMode::Closed);
        assert_eq!(InlineHookType::Import.default_fail_mode(), FailMode::Open);
        assert!(!InlineHookType::Token.retries());
        assert!(InlineHookType::Import.retries());
        assert_eq!(FailMode::parse("failOpen"), Some(FailMode::Open));
        assert_eq!(FailMode::parse("open"), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let c = OAuthConfig {
            auth_type: OAuthAuthType::ClientSecretPost,
            client_id: "c".into(),
            client_secret: Some("s3cr3t".into()),
            hook_key_id: None,
            token_url: "https://x/token".into(),
            scope: None,
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
