//! Password sign-in (`POST /api/v1/authn`) and the sessions it starts.
//!
//! A user's password is checked against the local Argon2id hash, or, for a user created with
//! `credentials.password.hook`, by the password import hook (spec 4.3): a `VERIFIED` answer
//! stores the password as a local hash in the same transaction as the session, so later
//! sign-ins never ask the hook again. Consecutive failures are counted on the user and lock
//! the account at the configured threshold. Every attempt is written to the System Log;
//! the caller is never told which check failed, so answers cannot be used to find out which
//! usernames exist.
//!
//! The typed password goes to the hook in its request and nowhere else: it is not logged,
//! and anything a handler echoes back into the hook's System Log events is masked.

use haken_core::id::random_base62;
use haken_core::inline_hook::InlineHookType;
use haken_core::log_event::{Actor, EventContext, LogEvent, Target};
use haken_core::session::{SESSION_TTL_MS, Session};
use haken_core::token::hash_token;
use haken_core::{ApiError, ErrorCode, Timestamp, User, UserStatus};
use haken_hooks::inline::commands::{CredentialVerdict, password_import};
use haken_hooks::inline::manage::active_of_type;
use haken_hooks::inline::{Decision, InlineCaller, request_context};
use haken_store::{SignInWrite, Store, StoreError};
use serde_json::{Value, json};

use crate::credentials::{hash_password, verify_password};
use crate::{FlowError, flow_error, store_error};

/// Reasons written to `outcome.reason` of failed sign-ins.
pub mod reason {
    /// Wrong password, unknown username, or the import hook answered `UNVERIFIED`.
    pub const INVALID_CREDENTIALS: &str = "INVALID_CREDENTIALS";
    pub const LOCKED_OUT: &str = "LOCKED_OUT";
    /// The user exists but its status does not allow signing in (staged, suspended, ...).
    pub const USER_NOT_ACTIVE: &str = "USER_NOT_ACTIVE";
    /// The password could not be checked: the import hook failed, none is active, or the
    /// user has no password at all.
    pub const VERIFICATION_ERROR: &str = "VERIFICATION_ERROR";
    /// The password is right but expired; no session was started.
    pub const PASSWORD_EXPIRED: &str = "PASSWORD_EXPIRED";
}

/// Longest username looked up (Okta's logins are at most 100 characters; anything much
/// longer cannot match and is not worth a query or a log line in full).
const MAX_USERNAME_CHARS: usize = 256;
/// Length of a session token: 40 base-62 characters, about 238 bits.
const SESSION_TOKEN_CHARS: usize = 40;

/// What the caller typed.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"***").finish()
    }
}

/// The org's sign-in rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failed sign-ins in a row that lock the account; 0 never locks.
    pub lockout_attempts: u32,
}

/// A sign-in that got past the password check.
#[derive(Debug, Clone)]
pub enum SignedIn {
    /// A session was started; `token` is its only copy (the store keeps a digest).
    Session { user: User, session: Session, token: String },
    /// The password is right but expired: no session until it is changed.
    PasswordExpired { user: User },
}

/// The one answer for every failed sign-in, whatever the cause.
pub fn authentication_failed() -> ApiError {
    ApiError::new(ErrorCode::AuthenticationFailed)
}

/// The outcome of checking the password, before anything is written.
enum Check {
    /// The password is right. `imported`: the hash to store (the import hook vouched for it).
    Verified { imported: Option<String> },
    /// The password is wrong (locally, or the import hook said `UNVERIFIED`): counts
    /// towards the lockout.
    Rejected,
    /// The password could not be checked; says nothing about the password, so it does not
    /// count towards the lockout.
    Unavailable,
}

/// What the transaction decided.
enum Verdict {
    Started,
    Expired,
    Refused,
}

/// Signs a user in with a username and password.
///
/// `ctx` is the request's context; the events name the user as their actor (or, for an
/// unknown username, the typed username as `alternateId`).
pub async fn sign_in(
    store: &Store,
    inline: &InlineCaller,
    ctx: &EventContext,
    creds: Credentials,
    policy: Policy,
    now: Timestamp,
) -> Result<SignedIn, ApiError> {
    let username = creds.username.trim().to_owned();
    let password = creds.password;
    let user = if username.is_empty() || username.chars().count() > MAX_USERNAME_CHARS {
        None
    } else {
        store.user_by_login(&username).await.map_err(|e| store_error(e, "User", "login"))?
    };
    let Some(user) = user else {
        burn_time(password).await;
        let ctx = anonymous_context(ctx, &username);
        let ev = session_start(&ctx, None, now).with_outcome("FAILURE", Some(reason::INVALID_CREDENTIALS));
        append(store, &[ev]).await?;
        return Err(authentication_failed());
    };
    let uctx = user_context(ctx, &user);
    if let Some(why) = refusal(user.status) {
        // Same work as a real check, so the answer's timing does not tell the status either.
        burn_time(password).await;
        let ev = session_start(&uctx, Some(&user), now)
            .with_outcome("FAILURE", Some(why))
            .with_debug("userStatus", Value::String(user.status.as_str().to_owned()));
        append(store, &[ev]).await?;
        return Err(authentication_failed());
    }

    let imported = user.credentials.password_hash.is_none() && user.credentials.password_hook;
    let (check, mut events) = match user.credentials.password_hash.clone() {
        Some(hash) => {
            let ok = verify_password(password, hash).await;
            (if ok { Check::Verified { imported: None } } else { Check::Rejected }, Vec::new())
        }
        None if imported => ask_import_hook(store, inline, &uctx, &user, &username, password, now).await?,
        None => {
            // No password to check against (e.g. a user of an external provider).
            burn_time(password).await;
            (Check::Unavailable, Vec::new())
        }
    };
    let provider = if imported { "IMPORT" } else { "OKTA_CREDENTIAL_PROVIDER" };

    // `Some(import)`: the password is right (with the hash to store if the hook vouched for
    // it); `None`: it is wrong.
    let verified = match check {
        Check::Verified { imported } => Some(imported),
        Check::Rejected => None,
        Check::Unavailable => {
            events.push(
                authenticate(&uctx, &user, provider, now).with_outcome("FAILURE", Some(reason::VERIFICATION_ERROR)),
            );
            events
                .push(session_start(&uctx, Some(&user), now).with_outcome("FAILURE", Some(reason::VERIFICATION_ERROR)));
            append(store, &events).await?;
            return Err(authentication_failed());
        }
    };

    let token = random_base62(SESSION_TOKEN_CHARS);
    let session = Session {
        id: format!("102{}", random_base62(22)),
        user_id: user.id.clone(),
        token_hash: hash_token(&token),
        created: now,
        expires_at: now.plus_millis(SESSION_TTL_MS),
        revoked: false,
    };
    let started = session.clone();
    let (stored, verdict) = store
        .record_sign_in::<Verdict, FlowError, _>(&user.id, move |mut u| {
            // The status may have changed while the password was being checked.
            if let Some(why) = refusal(u.status) {
                if let Some(Some(_)) = verified {
                    events.push(import_event(&uctx, &u, now).with_outcome("FAILURE", Some(why)));
                }
                events.push(session_start(&uctx, Some(&u), now).with_outcome("FAILURE", Some(why)));
                return Ok((SignInWrite { user: None, session: None, events }, Verdict::Refused));
            }
            match verified {
                Some(hash) => {
                    if let Some(hash) = hash {
                        // Okta does not apply the password policy to an imported password.
                        if u.credentials.password_hash.is_none() {
                            u.credentials.password_hash = Some(hash);
                            u.password_changed = Some(now);
                            u.last_updated = now;
                        }
                        u.credentials.password_hook = false;
                        u.credentials.provider_type = "OKTA".to_owned();
                        u.credentials.provider_name = "OKTA".to_owned();
                        events.push(import_event(&uctx, &u, now));
                    }
                    u.failed_sign_ins = 0;
                    events.push(authenticate(&uctx, &u, provider, now));
                    if u.status == UserStatus::PasswordExpired {
                        events.push(
                            session_start(&uctx, Some(&u), now).with_outcome("FAILURE", Some(reason::PASSWORD_EXPIRED)),
                        );
                        return Ok((SignInWrite { user: Some(u), session: None, events }, Verdict::Expired));
                    }
                    u.last_login = Some(now);
                    let mut ev = session_start(&uctx, Some(&u), now);
                    if let Some(ac) = ev.authentication_context.as_mut() {
                        ac.external_session_id = Some(session.id.clone());
                    }
                    events.push(ev);
                    Ok((SignInWrite { user: Some(u), session: Some(session), events }, Verdict::Started))
                }
                None => {
                    events.push(
                        authenticate(&uctx, &u, provider, now)
                            .with_outcome("FAILURE", Some(reason::INVALID_CREDENTIALS)),
                    );
                    events.push(
                        session_start(&uctx, Some(&u), now).with_outcome("FAILURE", Some(reason::INVALID_CREDENTIALS)),
                    );
                    u.failed_sign_ins = u.failed_sign_ins.saturating_add(1);
                    if policy.lockout_attempts > 0 && u.failed_sign_ins >= policy.lockout_attempts {
                        u.status = UserStatus::LockedOut;
                        u.status_changed = Some(now);
                        u.last_updated = now;
                        events.push(
                            uctx.user_event("user.account.lock", "Max sign in attempts exceeded", &u, now)
                                .with_debug("failedSignIns", json!(u.failed_sign_ins)),
                        );
                    }
                    Ok((SignInWrite { user: Some(u), session: None, events }, Verdict::Refused))
                }
            }
        })
        .await
        .map_err(|e| match e {
            // Deleted while the password was being checked: as if it never existed.
            FlowError::Store(StoreError::NotFound) => authentication_failed(),
            other => flow_error(other, "User", &user.id),
        })?;
    match verdict {
        Verdict::Started => Ok(SignedIn::Session { user: stored, session: started, token }),
        Verdict::Expired => Ok(SignedIn::PasswordExpired { user: stored }),
        Verdict::Refused => Err(authentication_failed()),
    }
}

/// The user a session token belongs to, if the session is live and the user may still sign
/// in. Anything else — unknown, expired or revoked token, a user suspended or locked since —
/// is `E0000011`.
pub async fn session_user(store: &Store, token: &str, now: Timestamp) -> Result<User, ApiError> {
    let invalid = || ApiError::new(ErrorCode::InvalidToken);
    let token = token.trim();
    if token.is_empty() || token.len() > 512 {
        return Err(invalid());
    }
    let session = store
        .doc_by_lookup::<Session>(&hash_token(token))
        .await
        .map_err(|e| store_error(e, "Session", "session"))?
        .filter(|s| s.is_live(now))
        .ok_or_else(invalid)?;
    let user = store
        .get_user(&session.user_id)
        .await
        .map_err(|e| store_error(e, "User", &session.user_id))?
        .filter(|u| u.status == UserStatus::Active)
        .ok_or_else(invalid)?;
    Ok(user)
}

/// Why a user in `status` may not sign in at all (checked before the password).
fn refusal(status: UserStatus) -> Option<&'static str> {
    match status {
        UserStatus::Active | UserStatus::PasswordExpired => None,
        UserStatus::LockedOut => Some(reason::LOCKED_OUT),
        UserStatus::Staged
        | UserStatus::Provisioned
        | UserStatus::Recovery
        | UserStatus::Suspended
        | UserStatus::Deprovisioned => Some(reason::USER_NOT_ACTIVE),
    }
}

/// Asks the active password import hook whether `password` is the user's. Returns the check
/// and the events so far: the hook's own and, except for `VERIFIED` (decided when the hash is
/// stored), `user.import.password` with outcome FAILURE.
async fn ask_import_hook(
    store: &Store,
    inline: &InlineCaller,
    ctx: &EventContext,
    user: &User,
    username: &str,
    password: String,
    now: Timestamp,
) -> Result<(Check, Vec<LogEvent>), ApiError> {
    // At most one password import hook exists (the management API enforces it).
    let Some(hook) = active_of_type(store, InlineHookType::PasswordImport).await? else {
        let ev = import_event(ctx, user, now).with_outcome("FAILURE", Some("NO_ACTIVE_HOOK"));
        return Ok((Check::Unavailable, vec![ev]));
    };
    let url = ctx.request_uri.clone().unwrap_or_else(|| "/api/v1/authn".to_owned());
    let data = json!({
        "context": {
            "request": request_context(ctx, "POST", &url),
            "credential": { "username": username, "password": password },
        },
        "action": { "credential": "UNVERIFIED" },
    });
    let payload = inline.envelope(&hook, None, data, now);
    let exec = inline.run(&hook, ctx, &payload, password_import).await;
    let mut events: Vec<LogEvent> = exec.events.into_iter().map(|ev| mask(ev, &password)).collect();
    let (check, failure) = match exec.decision {
        Decision::Apply(CredentialVerdict::Verified) => match hash_password(password).await {
            Ok(hash) => return Ok((Check::Verified { imported: Some(hash) }, events)),
            Err(_) => (Check::Unavailable, "HASH_FAILED".to_owned()),
        },
        Decision::Apply(CredentialVerdict::Unverified) => (Check::Rejected, "UNVERIFIED".to_owned()),
        // Failing open cannot let anyone in: without the hook's word there is no password to
        // accept. Shadow mode records what the handler said and goes on as without a hook.
        Decision::Proceed if hook.shadow => (Check::Unavailable, "SHADOW_MODE".to_owned()),
        Decision::Proceed => (Check::Unavailable, "HOOK_FAILED".to_owned()),
        Decision::Stop(f) => (Check::Unavailable, f.kind.as_str().to_owned()),
    };
    events.push(
        import_event(ctx, user, now)
            .with_outcome("FAILURE", Some(&failure))
            .with_debug("inlineHookId", Value::String(hook.id.clone())),
    );
    Ok((check, events))
}

/// Replaces `secret` wherever a handler got it into an event's debug data (an echoed request
/// in an error body, a careless `debugContext`).
fn mask(mut ev: LogEvent, secret: &str) -> LogEvent {
    fn walk(v: &mut Value, secret: &str) {
        match v {
            Value::String(s) if s.contains(secret) => *s = s.replace(secret, "*****"),
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, secret)),
            Value::Object(m) => {
                // Keys too: a handler may key its debugContext by what it was sent.
                if m.keys().any(|k| k.contains(secret)) {
                    let entries = std::mem::take(m);
                    for (k, v) in entries {
                        m.insert(k.replace(secret, "*****"), v);
                    }
                }
                m.values_mut().for_each(|i| walk(i, secret));
            }
            _ => {}
        }
    }
    if secret.is_empty() {
        return ev;
    }
    if let Some(dc) = ev.debug_context.as_mut() {
        dc.debug_data.values_mut().for_each(|v| walk(v, secret));
    }
    ev
}

/// Spends about as long as checking a real password, so an unknown username or a refused
/// status answers no faster than a wrong password.
async fn burn_time(password: String) {
    static DECOY: tokio::sync::OnceCell<Option<String>> = tokio::sync::OnceCell::const_new();
    let decoy = DECOY.get_or_init(|| async { hash_password(random_base62(32)).await.ok() }).await;
    if let Some(hash) = decoy {
        let _ = verify_password(password, hash.clone()).await;
    }
}

async fn append(store: &Store, events: &[LogEvent]) -> Result<(), ApiError> {
    store.append_events(events).await.map_err(|e| store_error(e, "LogEvent", "sign-in"))
}

/// The request's context with the user as actor: a sign-in is something the user does.
fn user_context(ctx: &EventContext, user: &User) -> EventContext {
    let mut ctx = ctx.clone();
    ctx.actor = Actor {
        id: user.id.clone(),
        kind: "User".to_owned(),
        alternate_id: Some(user.login().to_owned()),
        display_name: Some(user.display_name()),
        detail_entry: None,
    };
    ctx.credential_type = Some("PASSWORD");
    ctx
}

/// The context of an attempt with an unknown username: the typed name is all there is.
fn anonymous_context(ctx: &EventContext, username: &str) -> EventContext {
    let mut ctx = ctx.clone();
    ctx.actor = Actor {
        id: "unknown".to_owned(),
        kind: "User".to_owned(),
        alternate_id: Some(username.chars().take(MAX_USERNAME_CHARS).collect()),
        display_name: Some("unknown".to_owned()),
        detail_entry: None,
    };
    ctx.credential_type = Some("PASSWORD");
    ctx
}

fn session_start(ctx: &EventContext, user: Option<&User>, now: Timestamp) -> LogEvent {
    let ev = ctx.event("user.session.start", "User login to Okta", now);
    let ev = match user {
        Some(u) => ev.with_target(Target::user(u)),
        None => ev,
    };
    with_provider(ev, "OKTA_CREDENTIAL_PROVIDER")
}

fn authenticate(ctx: &EventContext, user: &User, credential_provider: &str, now: Timestamp) -> LogEvent {
    let ev = ctx.user_event("user.authentication.authenticate", "User authentication with password", user, now);
    with_provider(ev, credential_provider)
}

fn import_event(ctx: &EventContext, user: &User, now: Timestamp) -> LogEvent {
    let ev = ctx.user_event("user.import.password", "Import user password", user, now);
    with_provider(ev, "IMPORT")
}

fn with_provider(mut ev: LogEvent, credential_provider: &str) -> LogEvent {
    if let Some(ac) = ev.authentication_context.as_mut() {
        ac.authentication_provider = Some("OKTA_AUTHENTICATION_PROVIDER".to_owned());
        ac.credential_provider = Some(credential_provider.to_owned());
        ac.credential_type = Some("PASSWORD".to_owned());
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use haken_core::log_event::EventContext;

    #[test]
    fn masks_echoed_passwords_in_debug_data() {
        let ctx = EventContext::system("test");
        let ev = ctx
            .event("inline_hook.executed", "Inline hook executed", Timestamp(0))
            .with_debug("failureReason", Value::String("HTTP 500; body: {\"password\":\"Hunter-22\"}".into()))
            .with_debug("debugContext", json!({ "echo": ["x", "Hunter-22"], "seen:Hunter-22": true }));
        let masked = mask(ev, "Hunter-22").to_value().to_string();
        assert!(!masked.contains("Hunter-22"), "{masked}");
        assert!(masked.contains("*****"));
    }

    #[test]
    fn statuses_that_may_sign_in() {
        assert_eq!(refusal(UserStatus::Active), None);
        assert_eq!(refusal(UserStatus::PasswordExpired), None);
        assert_eq!(refusal(UserStatus::LockedOut), Some(reason::LOCKED_OUT));
        for s in [UserStatus::Staged, UserStatus::Provisioned, UserStatus::Suspended, UserStatus::Deprovisioned] {
            assert_eq!(refusal(s), Some(reason::USER_NOT_ACTIVE), "{s:?}");
        }
    }

    #[test]
    fn credentials_do_not_print_the_password() {
        let c = Credentials { username: "lee@example.org".into(), password: "Hunter-22".into() };
        assert!(!format!("{c:?}").contains("Hunter-22"));
    }
}
