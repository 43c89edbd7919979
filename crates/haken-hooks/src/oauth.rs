//! OAuth 2.0 for inline hook calls (spec 3.5, 5.4): the RSA hook keys of `private_key_jwt`
//! (generation, public JWK, RS256 client assertions per RFC 7523) and the client-credentials
//! access tokens, fetched through the one outbound client and cached per hook until shortly
//! before they expire.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::client::{OutboundClient, OutboundRequest};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a client assertion: it is used once, right away.
const ASSERTION_LIFETIME_SECS: i64 = 300;
/// `expires_in` when the token endpoint gives none (RFC 6749 leaves it to the server).
const DEFAULT_EXPIRES_IN: u64 = 3600;
/// A token is dropped this long before it expires, so it never expires on its way to the hook.
const EXPIRY_MARGIN_SECS: u64 = 30;
/// Longest time a token is kept, whatever `expires_in` says (and no `Instant` overflow).
const MAX_KEEP_SECS: u64 = 24 * 3600;
/// Characters of a token endpoint's body quoted in an error.
const SNIPPET_CHARS: usize = 200;

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A freshly generated hook key: RSA 2048, for `private_key_jwt`.
pub struct GeneratedKey {
    /// PKCS#8 DER of the private key (a secret: never logged, never returned by an API).
    pub private_pkcs8_der: Vec<u8>,
    /// The public key as a JWK: {"kty":"RSA","alg":"RS256","use":"sig","kid":kid,"e":..,"n":..} (base64url, no padding).
    pub public_jwk: serde_json::Value,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey").field("private_pkcs8_der", &"***").field("public_jwk", &self.public_jwk).finish()
    }
}

/// Generates a hook key whose JWK carries `kid`. RSA key generation is slow (up to hundreds of
/// milliseconds): call it on the blocking pool.
pub fn generate_rsa_key(kid: &str) -> Result<GeneratedKey, String> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| "RSA key generation failed".to_owned())?;
    let der = pair.as_der().map_err(|_| "the new RSA key could not be encoded as PKCS#8".to_owned())?;
    // Big-endian without leading zeros, which is what JWK's `n` and `e` must hold (RFC 7518 6.3.1).
    let public = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    let public_jwk =
        json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "e": b64(&public.e), "n": b64(&public.n)});
    Ok(GeneratedKey { private_pkcs8_der: der.as_ref().to_vec(), public_jwk })
}

/// An RS256-signed client assertion (RFC 7523): header {"alg":"RS256","typ":"JWT","kid":kid},
/// claims iss = sub = client_id, aud = audience (the token URL), iat = now_secs, exp = now_secs + 300, jti = random.
pub fn client_assertion(
    private_pkcs8_der: &[u8],
    kid: &str,
    client_id: &str,
    audience: &str,
    now_secs: i64,
) -> Result<String, String> {
    let pair = KeyPair::from_pkcs8(private_pkcs8_der).map_err(|e| format!("the hook key is not usable ({e})"))?;
    let rng = SystemRandom::new();
    // The jti lets the authorization server refuse a replayed assertion.
    let mut jti = [0u8; 16];
    rng.fill(&mut jti).map_err(|_| "no randomness for the assertion's jti".to_owned())?;
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let claims = json!({
        "iss": client_id, "sub": client_id, "aud": audience,
        "iat": now_secs, "exp": now_secs.saturating_add(ASSERTION_LIFETIME_SECS), "jti": b64(jti),
    });
    let signing_input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let mut sig = vec![0u8; pair.public_modulus_len()];
    pair.sign(&RSA_PKCS1_SHA256, &rng, signing_input.as_bytes(), &mut sig)
        .map_err(|_| "signing the client assertion failed".to_owned())?;
    Ok(format!("{signing_input}.{}", b64(&sig)))
}

/// How the server authenticates to the token endpoint.
#[derive(Clone)]
pub enum ClientAuth {
    SecretPost { secret: String },
    PrivateKeyJwt { private_pkcs8_der: Vec<u8>, kid: String },
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAuth::SecretPost { .. } => f.debug_struct("SecretPost").field("secret", &"***").finish(),
            ClientAuth::PrivateKeyJwt { kid, .. } => {
                f.debug_struct("PrivateKeyJwt").field("private_pkcs8_der", &"***").field("kid", kid).finish()
            }
        }
    }
}

/// Access tokens obtained with the client-credentials grant, cached per key until shortly before they expire.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// One token request per key at a time: a burst of calls (an import starts 32 rows at
    /// once) waits for the first request's token instead of each asking the endpoint.
    gates: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.tokens.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("TokenCache").field("cached", &n).finish()
    }
}

/// The body as text with each secret replaced by `***`, cut to `SNIPPET_CHARS` characters
/// (redacted before the cut, so that no prefix of a secret survives at the cut).
fn snippet(body: &[u8], secrets: &[&str]) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(s, "***");
    }
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

impl TokenCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// A cached token for `cache_key`, or a new one from `token_url`: POST application/x-www-form-urlencoded
    /// `grant_type=client_credentials&scope=<scope if any>&client_id=<id>` plus either `client_secret=<secret>` or
    /// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=<jwt>`.
    /// The answer must be 200 JSON with `access_token` (string) and optional `expires_in` (seconds; default 3600);
    /// the token is kept until expires_in minus 30 s (at least 1 s). Errors name the token URL and what was
    /// wrong, and never contain the secret or the assertion.
    #[allow(clippy::too_many_arguments)]
    pub async fn access_token(
        &self,
        client: &OutboundClient,
        cache_key: &str,
        token_url: &str,
        client_id: &str,
        scope: Option<&str>,
        auth: &ClientAuth,
        timeout: Duration,
    ) -> Result<String, String> {
        if let Some(token) = self.cached(cache_key) {
            return Ok(token);
        }
        let gate =
            self.gates.lock().unwrap_or_else(PoisonError::into_inner).entry(cache_key.to_owned()).or_default().clone();
        // Bounded: callers behind a hanging token endpoint give up with their own time budget.
        let Ok(_turn) = tokio::time::timeout(timeout, gate.lock()).await else {
            return Err(format!(
                "token endpoint {token_url}: another call is already waiting for a token for this hook, and it did not \
                 finish within {} ms",
                timeout.as_millis()
            ));
        };
        if let Some(token) = self.cached(cache_key) {
            return Ok(token);
        }
        // The serializer is not Send: build the body in a block that ends before the await.
        let (body, credential) = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = scope.filter(|s| !s.is_empty()) {
                form.append_pair("scope", scope);
            }
            form.append_pair("client_id", client_id);
            let credential = match auth {
                ClientAuth::SecretPost { secret } => {
                    form.append_pair("client_secret", secret);
                    secret.clone()
                }
                ClientAuth::PrivateKeyJwt { private_pkcs8_der, kid } => {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
                    let jwt = client_assertion(private_pkcs8_der, kid, client_id, token_url, now)
                        .map_err(|e| format!("cannot authenticate to token endpoint {token_url}: {e}"))?;
                    form.append_pair("client_assertion_type", JWT_BEARER);
                    form.append_pair("client_assertion", &jwt);
                    jwt
                }
            };
            (form.finish().into_bytes(), credential)
        };
        let req = OutboundRequest {
            method: reqwest::Method::POST,
            url: token_url.to_owned(),
            headers: vec![
                ("Content-Type".into(), "application/x-www-form-urlencoded".into()),
                ("Accept".into(), "application/json".into()),
            ],
            body: Some(body),
            timeout,
            max_response: 64 * 1024,
        };
        // An endpoint may echo the request in its error body: raw, form-encoded, or as a JSON
        // string (quotes, backslashes and other characters escaped).
        let encoded: String = form_urlencoded::byte_serialize(credential.as_bytes()).collect();
        let json_quoted = serde_json::to_string(&credential).unwrap_or_default();
        let json_escaped = json_quoted.trim_matches('"').to_owned();
        let secrets = [credential.as_str(), encoded.as_str(), json_escaped.as_str()];
        // Lifetime counts from before the request: the server's clock started no earlier.
        let started = Instant::now();
        let resp = client.send(req).await.map_err(|e| format!("token endpoint {token_url} did not answer: {e}"))?;
        if resp.status != 200 {
            return Err(format!(
                "token endpoint {token_url} answered {}: {}",
                resp.status,
                snippet(&resp.body, &secrets)
            ));
        }
        let Ok(body) = serde_json::from_slice::<Value>(&resp.body) else {
            let cut = if resp.truncated { " (cut at 64 KiB)" } else { "" };
            return Err(format!(
                "token endpoint {token_url} answered 200 but the body{cut} is not JSON: {}",
                snippet(&resp.body, &secrets)
            ));
        };
        let Some(token) = body.get("access_token").and_then(Value::as_str) else {
            // Name the keys, not the values: the body may hold other credentials.
            let keys: Vec<&str> = body.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
            return Err(format!(
                "token endpoint {token_url} answered 200 without a string \"access_token\" (keys: {})",
                keys.join(", ")
            ));
        };
        // The token goes into an Authorization header; refuse what cannot (RFC 6750 b64token).
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("token endpoint {token_url} answered an empty or malformed \"access_token\""));
        }
        let expires_in = body
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .unwrap_or(DEFAULT_EXPIRES_IN);
        let keep = Duration::from_secs(expires_in.saturating_sub(EXPIRY_MARGIN_SECS).clamp(1, MAX_KEEP_SECS));
        let expires = started + keep;
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        tokens.retain(|_, (_, exp)| *exp > now);
        tokens.insert(cache_key.to_owned(), (token.to_owned(), expires));
        Ok(token.to_owned())
    }

    /// Forgets a cached token (the hook answered 401, or its config changed).
    fn cached(&self, cache_key: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.get(cache_key).filter(|(_, expires)| *expires > Instant::now()).map(|(t, _)| t.clone())
    }

    pub fn invalidate(&self, cache_key: &str) {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner).remove(cache_key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::client::UrlPolicy;

    fn unb64(s: &str) -> Result<Vec<u8>, String> {
        URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())
    }

    /// Verifies `jwt` against the JWK's n and e; returns (header, claims).
    fn verify(jwt: &str, jwk: &Value) -> Result<(Value, Value), String> {
        let (signing_input, sig) = jwt.rsplit_once('.').ok_or("no signature")?;
        let (header, claims) = signing_input.split_once('.').ok_or("no payload")?;
        let field = |k: &str| unb64(jwk[k].as_str().unwrap_or_default());
        let key = RsaPublicKeyComponents { n: field("n")?, e: field("e")? };
        key.verify(&RSA_PKCS1_2048_8192_SHA256, signing_input.as_bytes(), &unb64(sig)?)
            .map_err(|_| "bad signature".to_owned())?;
        let json = |part: &str| serde_json::from_slice::<Value>(&unb64(part)?).map_err(|e| e.to_string());
        Ok((json(header)?, json(claims)?))
    }

    #[test]
    fn generated_key_signs_verifiable_assertions() -> Result<(), String> {
        let key = generate_rsa_key("kid-1")?;
        let jwk = &key.public_jwk;
        assert_eq!((jwk["kty"].as_str(), jwk["alg"].as_str()), (Some("RSA"), Some("RS256")));
        assert_eq!((jwk["use"].as_str(), jwk["kid"].as_str()), (Some("sig"), Some("kid-1")));
        assert_eq!(jwk["e"].as_str(), Some("AQAB"));
        assert_eq!(unb64(jwk["n"].as_str().unwrap_or_default())?.len(), 256);
        assert!(!format!("{key:?}").contains(&format!("{:?}", &key.private_pkcs8_der[..8])));

        let jwt = client_assertion(&key.private_pkcs8_der, "kid-1", "0oaClient", "https://id.example/token", 1_000)?;
        let (header, claims) = verify(&jwt, jwk)?;
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"}));
        assert_eq!((claims["iss"].as_str(), claims["sub"].as_str()), (Some("0oaClient"), Some("0oaClient")));
        assert_eq!(claims["aud"].as_str(), Some("https://id.example/token"));
        assert_eq!((claims["iat"].as_i64(), claims["exp"].as_i64()), (Some(1_000), Some(1_300)));
        assert_eq!(claims["jti"].as_str().map(str::len), Some(22));
        let again = client_assertion(&key.private_pkcs8_der, "kid-1", "0oaClient", "https://id.example/token", 1_000)?;
        assert_ne!(verify(&again, jwk)?.1["jti"], claims["jti"]);

        // A changed payload must not verify.
        let mut tampered = jwt.into_bytes();
        let at = tampered.iter().position(|&b| b == b'.').ok_or("no dot")? + 5;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        assert!(verify(&String::from_utf8_lossy(&tampered), jwk).is_err());
        // A key that is not PKCS#8 is an error, not a panic.
        assert!(client_assertion(b"junk", "k", "c", "a", 0).is_err());
        Ok(())
    }

    /// Answers `(status, body)` for the n-th request (from 1) with the given form body.
    type Handler = fn(usize, &str) -> (u16, String);

    /// A token endpoint on 127.0.0.1 that records each request (head, body).
    async fn token_server(handler: Handler) -> Result<(String, Arc<Mutex<Vec<(String, String)>>>), String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let url = format!("http://{}/oauth2/v1/token", listener.local_addr().map_err(|e| e.to_string())?);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let Some((head, body)) = read_request(&mut sock).await else { continue };
                let n = {
                    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                    log.push((head, body.clone()));
                    log.len()
                };
                let (status, answer) = handler(n, &body);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            }
        });
        Ok((url, seen))
    }

    async fn read_request(sock: &mut TcpStream) -> Option<(String, String)> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return Some((head, String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned()));
                }
            }
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn form(body: &str) -> HashMap<String, String> {
        form_urlencoded::parse(body.as_bytes()).into_owned().collect()
    }

    fn hits(seen: &Mutex<Vec<(String, String)>>) -> usize {
        seen.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn request(seen: &Mutex<Vec<(String, String)>>, i: usize) -> (String, String) {
        seen.lock().unwrap_or_else(PoisonError::into_inner).get(i).cloned().unwrap_or_default()
    }

    fn ok_tokens(n: usize, _: &str) -> (u16, String) {
        (200, format!(r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":3600}}"#))
    }

    fn client() -> Result<OutboundClient, String> {
        OutboundClient::new(UrlPolicy { allow_insecure: true })
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn secret_post_tokens_are_cached_until_invalidated() -> Result<(), String> {
        let (url, seen) = token_server(ok_tokens).await?;
        let (client, cache) = (client()?, TokenCache::new());
        let auth = ClientAuth::SecretPost { secret: "s3cr3t&=x".into() };
        assert_eq!(cache.access_token(&client, "hook-1", &url, "0oaC", Some("okta.hooks a"), &auth, T).await?, "tok-1");
        let (head, body) = request(&seen, 0);
        assert!(head.to_ascii_lowercase().contains("content-type: application/x-www-form-urlencoded"), "{head}");
        let f = form(&body);
        assert_eq!(f.get("grant_type").map(String::as_str), Some("client_credentials"));
        assert_eq!(f.get("client_id").map(String::as_str), Some("0oaC"));
        assert_eq!(f.get("client_secret").map(String::as_str), Some("s3cr3t&=x"));
        assert_eq!(f.get("scope").map(String::as_str), Some("okta.hooks a"));
        assert!(!f.contains_key("client_assertion"));

        assert_eq!(cache.access_token(&client, "hook-1", &url, "0oaC", None, &auth, T).await?, "tok-1");
        assert_eq!(hits(&seen), 1, "the second call must come from the cache");
        assert_eq!(cache.access_token(&client, "hook-2", &url, "0oaC", None, &auth, T).await?, "tok-2");
        cache.invalidate("hook-1");
        assert_eq!(cache.access_token(&client, "hook-1", &url, "0oaC", None, &auth, T).await?, "tok-3");
        assert!(!form(&request(&seen, 2).1).contains_key("scope"));
        assert!(!format!("{auth:?}").contains("s3cr3t"));
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_misses_asks_the_endpoint_once() -> Result<(), String> {
        let (url, seen) = token_server(ok_tokens).await?;
        let (client, cache) = (Arc::new(client()?), Arc::new(TokenCache::new()));
        let auth = ClientAuth::SecretPost { secret: "s".into() };
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let (client, cache, url, auth) = (client.clone(), cache.clone(), url.clone(), auth.clone());
                tokio::spawn(async move { cache.access_token(&client, "burst", &url, "0oaC", None, &auth, T).await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.map_err(|e| e.to_string())??, "tok-1");
        }
        assert_eq!(hits(&seen), 1, "concurrent callers share one token request");
        Ok(())
    }

    #[tokio::test]
    async fn private_key_jwt_sends_a_verifiable_assertion() -> Result<(), String> {
        let (url, seen) = token_server(ok_tokens).await?;
        let key = generate_rsa_key("HKY1")?;
        let auth = ClientAuth::PrivateKeyJwt { private_pkcs8_der: key.private_pkcs8_der.clone(), kid: "HKY1".into() };
        let token = TokenCache::new().access_token(&client()?, "h", &url, "0oaC", Some("okta.hooks"), &auth, T).await?;
        assert_eq!(token, "tok-1");
        let f = form(&request(&seen, 0).1);
        assert_eq!(f.get("client_assertion_type").map(String::as_str), Some(JWT_BEARER));
        assert_eq!(f.get("client_id").map(String::as_str), Some("0oaC"));
        assert!(!f.contains_key("client_secret"));
        let (header, claims) = verify(f.get("client_assertion").ok_or("no client_assertion")?, &key.public_jwk)?;
        assert_eq!(header["kid"].as_str(), Some("HKY1"));
        assert_eq!((claims["sub"].as_str(), claims["aud"].as_str()), (Some("0oaC"), Some(url.as_str())));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs() as i64;
        assert!((claims["iat"].as_i64().unwrap_or(0) - now).abs() < 60);
        assert!(!format!("{auth:?}").contains(&format!("{:?}", &key.private_pkcs8_der[..8])));
        Ok(())
    }

    #[tokio::test]
    async fn short_lived_tokens_expire() -> Result<(), String> {
        fn one_second(n: usize, _: &str) -> (u16, String) {
            (200, format!(r#"{{"access_token":"tok-{n}","expires_in":1}}"#))
        }
        let (url, seen) = token_server(one_second).await?;
        let (client, cache) = (client()?, TokenCache::new());
        let auth = ClientAuth::SecretPost { secret: "s".into() };
        assert_eq!(cache.access_token(&client, "h", &url, "c", None, &auth, T).await?, "tok-1");
        assert_eq!(cache.access_token(&client, "h", &url, "c", None, &auth, T).await?, "tok-1");
        assert_eq!(hits(&seen), 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(cache.access_token(&client, "h", &url, "c", None, &auth, T).await?, "tok-2");
        Ok(())
    }

    #[test]
    fn echoed_secrets_are_redacted_in_every_encoding() {
        let secret = "a\"b\\c/é";
        let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let json_escaped = serde_json::to_string(secret).unwrap_or_default().trim_matches('"').to_owned();
        let body = format!(r#"{{"raw":"{secret}","form":"{encoded}","json":"{json_escaped}"}}"#);
        let out = snippet(body.as_bytes(), &[secret, &encoded, &json_escaped]);
        assert!(!out.contains(secret) && !out.contains(&encoded) && !out.contains(&json_escaped), "{out}");
        assert_eq!(out.matches("***").count(), 3, "{out}");
    }

    #[tokio::test]
    async fn failures_name_the_problem_and_never_the_credentials() -> Result<(), String> {
        // Each answer echoes the request body, as careless endpoints do, to prove the redaction.
        fn failing(n: usize, body: &str) -> (u16, String) {
            match n {
                1 => (401, format!(r#"{{"error":"invalid_client","got":"{body}"}}"#)),
                2 => (200, format!(r#"{{"token_type":"Bearer","got":"{body}"}}"#)),
                3 => (200, format!("<html>{body}</html>")),
                4 => (500, "x".repeat(1000)),
                _ => (401, body.to_owned()),
            }
        }
        let (url, seen) = token_server(failing).await?;
        let (client, cache) = (client()?, TokenCache::new());
        let (secret, encoded) = ("top secret&value", "top+secret%26value");
        let auth = ClientAuth::SecretPost { secret: secret.into() };
        let mut errors = Vec::new();
        for _ in 0..4 {
            match cache.access_token(&client, "h", &url, "c", None, &auth, T).await {
                Ok(t) => return Err(format!("expected an error, got {t}")),
                Err(e) => errors.push(e),
            }
        }
        for e in &errors {
            assert!(e.contains(&url) && !e.contains(secret) && !e.contains(encoded), "{e}");
        }
        assert!(
            errors[0].contains("answered 401") && errors[0].contains(r#"{"error":"invalid_client""#),
            "{}",
            errors[0]
        );
        assert!(errors[1].contains("\"access_token\"") && errors[1].contains("token_type"), "{}", errors[1]);
        assert!(errors[2].contains("not JSON"), "{}", errors[2]);
        assert!(errors[3].contains("answered 500") && errors[3].len() < url.len() + 300, "{}", errors[3]);

        // The assertion is a credential too: it must not come back either.
        let key = generate_rsa_key("k")?;
        let jwt_auth = ClientAuth::PrivateKeyJwt { private_pkcs8_der: key.private_pkcs8_der, kid: "k".into() };
        let Err(e) = cache.access_token(&client, "h", &url, "c", None, &jwt_auth, T).await else {
            return Err("expected an error".into());
        };
        let assertion = form(&request(&seen, 4).1).remove("client_assertion").ok_or("no assertion")?;
        assert!(e.contains("answered 401") && !e.contains(&assertion[..12]), "{e}");

        // Nothing listens on a port just released.
        let closed = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let dead = format!("http://{}/token", closed.local_addr().map_err(|e| e.to_string())?);
        drop(closed);
        let Err(e) = cache.access_token(&client, "h", &dead, "c", None, &auth, T).await else {
            return Err("expected an error".into());
        };
        assert!(e.contains(&dead) && e.contains("did not answer"), "{e}");
        Ok(())
    }
}
