//! The event-type catalog: every System Log event type Haken knows, whether an event hook may
//! subscribe to it (spec section 1.8 and Appendix A), and a one-line description.
//!
//! The catalog is data, not code: `data/event_types.tsv` (columns `event_type`, `eligible`,
//! `description`) is compiled into the binary and parsed once, on first use. Adding an event
//! type Okta makes hook-eligible is a one-line change to that file.
//!
//! [`sample_event`] builds a realistic event of any catalogued type, shaped exactly like the
//! events Haken writes (it goes through [`EventContext`]), for `haken hooks trigger` and hook
//! previews.

use std::sync::OnceLock;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::group::Group;
use crate::id::{self, IdKind};
use crate::log_event::{Actor, EventContext, LogEvent, SecurityContext, Target};
use crate::time::Timestamp;
use crate::user::{StoredCredentials, User, UserStatus};

/// The catalog file, embedded at compile time.
const DATA: &str = include_str!("../data/event_types.tsv");

/// One catalogued event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct EventTypeInfo {
    /// The `eventType` value, e.g. `user.lifecycle.create` (case-sensitive).
    pub name: &'static str,
    /// Whether an event hook may subscribe to this type.
    pub eligible: bool,
    /// One short sentence saying when the event is written.
    pub description: &'static str,
}

/// The parsed catalog, sorted by name, without duplicates.
fn catalog() -> &'static [EventTypeInfo] {
    static CATALOG: OnceLock<Vec<EventTypeInfo>> = OnceLock::new();
    CATALOG.get_or_init(|| parse(DATA))
}

/// Parses the catalog file. Malformed lines are skipped (a unit test asserts there are none);
/// of duplicate names the first line wins.
fn parse(data: &'static str) -> Vec<EventTypeInfo> {
    let mut entries: Vec<EventTypeInfo> = data.lines().filter(|l| is_record(l)).filter_map(parse_line).collect();
    // Stable sort, so `dedup_by` keeps the earliest line of each name.
    entries.sort_by(|a, b| a.name.cmp(b.name));
    entries.dedup_by(|later, earlier| later.name == earlier.name);
    entries
}

/// Whether a line holds an entry (not blank, not a `#` comment).
fn is_record(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty() && !line.starts_with('#')
}

/// One `event_type<TAB>eligible<TAB>description` line.
fn parse_line(line: &'static str) -> Option<EventTypeInfo> {
    let mut cols = line.split('\t');
    let name = cols.next()?.trim();
    let eligible = match cols.next()?.trim() {
        "true" => true,
        "false" => false,
        _ => return None,
    };
    let description = cols.next()?.trim();
    let name_ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    if !name_ok || description.is_empty() || cols.next().is_some() {
        return None;
    }
    Some(EventTypeInfo { name, eligible, description })
}

/// The catalog entry of `name` (exact, case-sensitive match), if Haken knows the type.
pub fn lookup(name: &str) -> Option<&'static EventTypeInfo> {
    let all = catalog();
    all.binary_search_by(|e| e.name.cmp(name)).ok().and_then(|i| all.get(i))
}

/// Whether an event hook may subscribe to `name`. Unknown types are not eligible.
pub fn is_hook_eligible(name: &str) -> bool {
    lookup(name).is_some_and(|e| e.eligible)
}

/// Every hook-eligible event type, in name order.
pub fn eligible() -> impl Iterator<Item = &'static EventTypeInfo> {
    catalog().iter().filter(|e| e.eligible)
}

/// Every catalogued event type, eligible or not, in name order.
pub fn all() -> impl Iterator<Item = &'static EventTypeInfo> {
    catalog().iter()
}

/// A realistic sample LogEvent of `event_type` (for `haken hooks trigger` and hook previews):
/// the actor, targets, outcome, displayMessage and debugData that such an event has in Okta
/// (e.g. user.* events target a User; group.user_membership.* target a User and a UserGroup;
/// application.* an AppInstance; user.session.start has authenticationContext.externalSessionId,
/// an outcome that may carry a reason, client IP and user agent; user.account.update_profile has
/// debugData.changedAttributes; policy/system events have sensible targets). Use made-up but
/// well-formed ids with Okta prefixes (00u…, 00g…, 0oa…) generated via crate::id, a fresh uuid,
/// published = `now`. Returns None for unknown types.
pub fn sample_event(event_type: &str, now: Timestamp) -> Option<LogEvent> {
    let info = lookup(event_type)?;
    let name = info.name;
    let cast = Cast::new(now);
    let shape = shape(name, &cast);

    let actor = if shape.by_user { cast.user_actor() } else { cast.admin.clone() };
    let ctx = EventContext {
        actor,
        transaction_type: "WEB",
        request_id: id::new_id(IdKind::Request),
        request_uri: shape.uri,
        client_ip: Some(SAMPLE_IP.to_owned()),
        user_agent: Some(SAMPLE_USER_AGENT.to_owned()),
        api_token_id: None,
        client_id: None,
        credential_type: shape.credential_type,
    };
    let mut event = ctx.event(name, &display_message(info), now);
    for target in shape.targets {
        event = event.with_target(target);
    }
    for (key, value) in shape.debug {
        event = event.with_debug(key, value);
    }
    if let Some((result, reason)) = shape.outcome {
        event = event.with_outcome(result, reason);
    }
    if shape.by_user {
        // Events a signed-in user causes share the session's correlation id.
        if let Some(auth) = event.authentication_context.as_mut() {
            auth.external_session_id = Some(cast.session_id.clone());
            auth.authentication_provider = shape.auth_provider.map(str::to_owned);
            if shape.auth_provider.is_some() {
                auth.credential_provider = Some("OKTA_CREDENTIAL_PROVIDER".to_owned());
            }
        }
        event.security_context = Some(SecurityContext {
            as_number: Some(64500),
            as_org: Some("example networks".to_owned()),
            isp: Some("example broadband".to_owned()),
            domain: Some("example.net".to_owned()),
            is_proxy: Some(false),
        });
    }
    Some(event)
}

/// Client address of samples: TEST-NET-2 (RFC 5737), never a real host.
const SAMPLE_IP: &str = "198.51.100.23";
const SAMPLE_USER_AGENT: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 \
                                 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

/// The people and objects a sample event is about; fresh ids every time.
struct Cast {
    /// The administrator who performs admin actions.
    admin: Actor,
    /// The end user most events are about (and who acts in self-service events).
    user: User,
    group: Group,
    /// The app integration app events are about.
    app: Target,
    /// `authenticationContext.externalSessionId` of the user's session.
    session_id: String,
}

impl Cast {
    fn new(now: Timestamp) -> Self {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        let created = now.plus_millis(-90 * DAY_MS);
        let mut profile = Map::new();
        for (k, v) in [
            ("login", "jordan.lee@example.com"),
            ("email", "jordan.lee@example.com"),
            ("firstName", "Jordan"),
            ("lastName", "Lee"),
            ("title", "Senior Analyst"),
            ("mobilePhone", "+1 555 0100"),
        ] {
            profile.insert(k.to_owned(), Value::String(v.to_owned()));
        }
        let user = User {
            id: id::new_id(IdKind::User),
            status: UserStatus::Active,
            created,
            activated: Some(created),
            status_changed: Some(created),
            last_login: Some(now.plus_millis(-DAY_MS)),
            last_updated: now.plus_millis(-7 * DAY_MS),
            password_changed: Some(created),
            type_id: okta_id("oty"),
            profile,
            credentials: StoredCredentials::default(),
            failed_sign_ins: 0,
        };
        let mut group_profile = Map::new();
        group_profile.insert("name".to_owned(), Value::String("Finance".to_owned()));
        group_profile.insert("description".to_owned(), Value::String("Finance department".to_owned()));
        let group = Group {
            id: id::new_id(IdKind::Group),
            created,
            last_updated: created,
            last_membership_updated: now,
            group_type: "OKTA_GROUP".to_owned(),
            profile: group_profile,
        };
        Cast {
            admin: Actor {
                id: id::new_id(IdKind::User),
                kind: "User".to_owned(),
                alternate_id: Some("avery.admin@example.com".to_owned()),
                display_name: Some("Avery Admin".to_owned()),
                detail_entry: None,
            },
            user,
            group,
            app: object("AppInstance", id::new_id(IdKind::App), "Expense Tracker"),
            session_id: format!("idx{}", id::random_base62(22)),
        }
    }

    fn user_actor(&self) -> Actor {
        Actor {
            id: self.user.id.clone(),
            kind: "User".to_owned(),
            alternate_id: Some(self.user.login().to_owned()),
            display_name: Some(self.user.display_name()),
            detail_entry: None,
        }
    }

    fn user_target(&self) -> Target {
        Target::user(&self.user)
    }

    fn group_target(&self) -> Target {
        Target::group(&self.group)
    }

    fn app_target(&self) -> Target {
        self.app.clone()
    }
}

/// What distinguishes one event type's sample from another's.
#[derive(Default)]
struct Shape {
    /// The end user acts (self-service, sign-in) rather than the administrator.
    by_user: bool,
    uri: Option<String>,
    targets: Vec<Target>,
    debug: Vec<(&'static str, Value)>,
    outcome: Option<(&'static str, Option<&'static str>)>,
    credential_type: Option<&'static str>,
    auth_provider: Option<&'static str>,
}

impl Shape {
    fn admin(targets: Vec<Target>) -> Self {
        Shape { targets, ..Shape::default() }
    }

    fn user(targets: Vec<Target>) -> Self {
        Shape { by_user: true, targets, ..Shape::default() }
    }

    fn uri(mut self, uri: String) -> Self {
        self.uri = Some(uri);
        self
    }

    fn debug(mut self, key: &'static str, value: Value) -> Self {
        self.debug.push((key, value));
        self
    }

    fn outcome(mut self, result: &'static str, reason: Option<&'static str>) -> Self {
        self.outcome = Some((result, reason));
        self
    }

    fn signed_in_with(mut self, provider: &'static str, credential: Option<&'static str>) -> Self {
        self.auth_provider = Some(provider);
        self.credential_type = credential;
        self
    }
}

/// A fresh 20-character id with an Okta-style prefix, for kinds [`IdKind`] does not cover.
fn okta_id(prefix: &str) -> String {
    let mut s = String::with_capacity(20);
    s.push_str(prefix);
    id::random_base62_into(&mut s, 20usize.saturating_sub(prefix.len()));
    s
}

/// A target of `kind` whose alternate id and display name are both `name`.
fn object(kind: &str, id: String, name: &str) -> Target {
    Target {
        id,
        kind: kind.to_owned(),
        alternate_id: Some(name.to_owned()),
        display_name: Some(name.to_owned()),
        detail_entry: None,
        change_details: None,
    }
}

fn policy() -> Target {
    object("PolicyEntity", id::new_id(IdKind::Policy), "Finance app sign-on policy")
}

fn policy_rule() -> Target {
    object("PolicyRule", id::new_id(IdKind::PolicyRule), "Require MFA off the corporate network")
}

fn auth_server() -> Target {
    object("AuthorizationServer", id::new_id(IdKind::AuthServer), "default")
}

fn enrollment(name: &str) -> Target {
    let prefix = if name == "Password" { "lae" } else { "pfd" };
    let mut t = object("AuthenticatorEnrollment", okta_id(prefix), name);
    t.alternate_id = Some("unknown".to_owned());
    t
}

fn identity_provider() -> Target {
    object("IdentityProvider", id::new_id(IdKind::App), "Partner SAML IdP")
}

fn device() -> Target {
    object("Device", okta_id("guo"), "Jordan's MacBook Pro")
}

/// The last segment of an event type (`activate` for `policy.lifecycle.activate`).
fn action(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// The targets, actor, outcome and extra debug data of a sample of `name`.
fn shape(name: &str, c: &Cast) -> Shape {
    let uid = &c.user.id;
    let gid = &c.group.id;
    let app_id = &c.app.id;
    match name {
        // ---- sign-in, sessions and authentication: the user acts ----
        "user.session.start" => {
            Shape::user(vec![enrollment("Password"), object("AppInstance", id::new_id(IdKind::App), "Okta Dashboard")])
                .uri("/idp/idx/identify".to_owned())
                .outcome("SUCCESS", None)
                .signed_in_with("OKTA_AUTHENTICATION_PROVIDER", Some("PASSWORD"))
                .debug("threatSuspected", json!("false"))
                .debug("deviceFingerprint", json!(id::random_base62(32)))
        }
        "user.session.end" => Shape::user(vec![c.user_target()]).uri("/login/signout".to_owned()),
        "user.session.access_admin_app" => {
            Shape::user(vec![object("AppInstance", id::new_id(IdKind::App), "Okta Admin Console")])
        }
        "user.session.clear" => Shape::admin(vec![c.user_target()]).uri(format!("/api/v1/users/{uid}/sessions")),
        n if n.starts_with("user.session.") => Shape::user(vec![c.user_target()]),
        "user.authentication.sso" => {
            let app_user = object("AppUser", okta_id("0ua"), c.user.login());
            Shape::user(vec![c.app_target(), app_user]).signed_in_with("OKTA_AUTHENTICATION_PROVIDER", None)
        }
        "user.authentication.auth_via_mfa" => Shape::user(vec![c.user_target(), enrollment("Okta Verify")])
            .outcome("SUCCESS", None)
            .signed_in_with("FACTOR_PROVIDER", Some("OTP"))
            .debug("factor", json!("OKTA_VERIFY_PUSH"))
            .debug("factorIntent", json!("AUTHENTICATION")),
        "user.authentication.auth_via_IDP" => {
            Shape::user(vec![c.user_target(), identity_provider()]).signed_in_with("FEDERATION", Some("ASSERTION"))
        }
        "user.authentication.auth_via_social" => {
            Shape::user(vec![c.user_target(), object("IdentityProvider", id::new_id(IdKind::App), "Google")])
                .signed_in_with("SOCIAL", Some("OAUTH2"))
        }
        "user.authentication.authenticate" | "user.credential.enroll" => {
            Shape::user(vec![c.user_target(), object("Certificate", okta_id("crt"), "Device trust certificate")])
                .signed_in_with("OKTA_AUTHENTICATION_PROVIDER", Some("CERTIFICATE"))
        }
        "user.authentication.universal_logout" => Shape::admin(vec![c.user_target(), c.app_target()]),
        "user.authentication.universal_logout.scheduled" => Shape::admin(vec![c.user_target()]),
        n if n.starts_with("user.authentication.") => {
            Shape::user(vec![c.user_target()]).signed_in_with("OKTA_AUTHENTICATION_PROVIDER", Some("PASSWORD"))
        }

        // ---- factors ----
        "user.mfa.factor.reset_all" => {
            Shape::admin(vec![c.user_target()]).uri(format!("/api/v1/users/{uid}/lifecycle/reset_factors"))
        }
        n if n.starts_with("user.mfa.") => Shape::user(vec![c.user_target(), enrollment("Okta Verify")])
            .debug("factor", json!("OKTA_VERIFY_PUSH"))
            .debug("factorIntent", json!("ENROLLMENT")),

        // ---- user account and lifecycle ----
        "user.account.update_profile" => {
            let target = c.user_target().with_change_details(
                json!({ "title": "Analyst", "mobilePhone": "+1 555 0199" }),
                json!({ "title": "Senior Analyst", "mobilePhone": "+1 555 0100" }),
            );
            Shape::admin(vec![target])
                .uri(format!("/api/v1/users/{uid}"))
                .debug("changedAttributes", json!("title,mobilePhone"))
        }
        "user.account.update_password"
        | "user.account.lock"
        | "user.account.unlock"
        | "user.account.report_suspicious_activity_by_enduser"
        | "user.identity_verification"
        | "user.identity_verification.start" => Shape::user(vec![c.user_target()]),
        "user.import.password" => Shape::user(vec![c.user_target()])
            .outcome("SUCCESS", None)
            .signed_in_with("OKTA_AUTHENTICATION_PROVIDER", Some("PASSWORD")),
        "user.account.privilege.grant" => {
            Shape::admin(vec![c.user_target()]).debug("privilegeGranted", json!("Help Desk Administrator"))
        }
        "user.account.privilege.revoke" => {
            Shape::admin(vec![c.user_target()]).debug("privilegeRevoked", json!("Help Desk Administrator"))
        }
        "user.account.unlock_by_admin" => {
            Shape::admin(vec![c.user_target()]).uri(format!("/api/v1/users/{uid}/lifecycle/unlock"))
        }
        "user.lifecycle.create" => Shape::admin(vec![c.user_target()]).uri("/api/v1/users?activate=false".to_owned()),
        "user.lifecycle.delete.initiated" | "user.lifecycle.delete.completed" => {
            Shape::admin(vec![c.user_target()]).uri(format!("/api/v1/users/{uid}"))
        }
        n if n.starts_with("user.lifecycle.") || n == "user.account.expire_password" => {
            let op = n.trim_start_matches("user.lifecycle.").trim_start_matches("user.account.");
            Shape::admin(vec![c.user_target()]).uri(format!("/api/v1/users/{uid}/lifecycle/{op}"))
        }
        "user.risk.detect" | "user.risk.change" => {
            Shape::admin(vec![c.user_target()]).debug("risk", json!("{previousLevel=LOW, level=HIGH}"))
        }
        "user.chrome.data.clear" => Shape::admin(vec![c.user_target(), device()]),
        n if n.starts_with("user.") => Shape::admin(vec![c.user_target()]),

        // ---- groups ----
        n if n.starts_with("group.user_membership.") => {
            Shape::admin(vec![c.user_target(), c.group_target()]).uri(format!("/api/v1/groups/{gid}/users/{uid}"))
        }
        n if n.starts_with("group.application_assignment.") => {
            Shape::admin(vec![c.app_target(), c.group_target()]).uri(format!("/api/v1/apps/{app_id}/groups/{gid}"))
        }
        "group.privilege.grant" => {
            Shape::admin(vec![c.group_target()]).debug("privilegeGranted", json!("Read-only Administrator"))
        }
        "group.privilege.revoke" => {
            Shape::admin(vec![c.group_target()]).debug("privilegeRevoked", json!("Read-only Administrator"))
        }
        "group.lifecycle.create" => Shape::admin(vec![c.group_target()]).uri("/api/v1/groups".to_owned()),
        "group.profile.update" => Shape::admin(vec![c.group_target()])
            .uri(format!("/api/v1/groups/{gid}"))
            .debug("changedAttributes", json!("description")),
        n if n.starts_with("group.") => Shape::admin(vec![c.group_target()]).uri(format!("/api/v1/groups/{gid}")),

        // ---- app integrations ----
        "application.policy.sign_on.deny_access" => Shape::user(vec![c.app_target(), policy_rule()])
            .outcome("DENY", Some("Sign-on policy requires a managed device"))
            .signed_in_with("OKTA_AUTHENTICATION_PROVIDER", None),
        "application.provision.group_push.mapping.update.or.delete.failed.with.error" => {
            Shape::admin(vec![c.app_target(), c.group_target()])
                .outcome("FAILURE", Some("The downstream app rejected the group update"))
        }
        n if n.starts_with("application.user_membership.")
            || n.starts_with("application.provision.user.")
            || n.starts_with("application.account.") =>
        {
            let app_user = object("AppUser", okta_id("0ua"), c.user.login());
            Shape::admin(vec![app_user, c.app_target(), c.user_target()])
                .uri(format!("/api/v1/apps/{app_id}/users/{uid}"))
        }
        "application.lifecycle.create" => Shape::admin(vec![c.app_target()]).uri("/api/v1/apps".to_owned()),
        n if n.starts_with("application.lifecycle.") => {
            let op = action(n);
            let uri = if matches!(op, "activate" | "deactivate") {
                format!("/api/v1/apps/{app_id}/lifecycle/{op}")
            } else {
                format!("/api/v1/apps/{app_id}")
            };
            Shape::admin(vec![c.app_target()]).uri(uri)
        }
        n if n.starts_with("application.") => Shape::admin(vec![c.app_target()]),

        // ---- OAuth clients, consent and other app.* ----
        "app.oauth2.as.consent.grant" => Shape::user(vec![c.user_target(), c.app_target(), auth_server()])
            .debug("grantedScopes", json!("openid profile email"))
            .signed_in_with("OKTA_AUTHENTICATION_PROVIDER", None),
        n if n.starts_with("app.oauth2.as.consent.revoke") => {
            Shape::admin(vec![c.user_target(), c.app_target(), auth_server()])
                .debug("revokedScopes", json!("openid profile email"))
        }
        n if n.starts_with("app.oauth2.trusted_server.") => Shape::admin(vec![
            auth_server(),
            object("AuthorizationServer", id::new_id(IdKind::AuthServer), "Partner API"),
        ]),
        n if n.contains("interclient") => {
            Shape::admin(vec![c.app_target(), object("AppInstance", id::new_id(IdKind::App), "Reporting Service")])
        }
        n if n.starts_with("app.access_request.") => {
            let shape = Shape::admin(vec![c.user_target(), c.app_target()]);
            if n == "app.access_request.request" { Shape { by_user: true, ..shape } } else { shape }
        }
        "app.ad.password_migration_campaign.user.migrate.end" => {
            Shape::user(vec![c.user_target(), object("AppInstance", id::new_id(IdKind::App), "corp.example.com")])
        }
        n if n.starts_with("app.ai_agent_provider.") => {
            Shape::admin(vec![object("AppInstance", id::new_id(IdKind::App), "Example AI Agent Platform")])
        }
        n if n.starts_with("app.user_management") => {
            Shape::admin(vec![c.app_target(), c.group_target()]).debug("importJobId", json!(okta_id("ij0")))
        }
        n if n.starts_with("app.") => Shape::admin(vec![c.app_target()]),

        // ---- policies ----
        "policy.auth_reevaluate.fail" => Shape::user(vec![c.user_target(), c.app_target(), policy_rule()])
            .outcome("FAILURE", Some("Session no longer satisfies the authentication policy"))
            .signed_in_with("OKTA_AUTHENTICATION_PROVIDER", None),
        "policy.lifecycle.update" => {
            let target = policy().with_change_details(json!({ "priority": 2 }), json!({ "priority": 1 }));
            Shape::admin(vec![target])
        }
        n if n.starts_with("policy.rule.") || n.starts_with("policy.branch.rule.") => {
            Shape::admin(vec![policy(), policy_rule()])
        }
        n if n.starts_with("policy.branch.") => {
            Shape::admin(vec![policy(), object("PolicyBranch", okta_id("pbr"), "Staged MFA changes")])
        }
        n if n.starts_with("policy.") => Shape::admin(vec![policy()]),

        // ---- security ----
        n if n.starts_with("security.authenticator.") => {
            Shape::admin(vec![object("Authenticator", okta_id("aut"), "Okta Verify")])
        }
        n if n.starts_with("security.trusted_origin.") => {
            Shape::admin(vec![object("TrustedOrigin", okta_id("tos"), "https://portal.example.com")])
        }
        n if n.starts_with("security.") => Shape::user(vec![c.user_target()]).debug("threatSuspected", json!("true")),

        // ---- system ----
        "system.api_token.create" | "system.api_token.revoke" => {
            let token_id = id::new_id(IdKind::ApiToken);
            let uri = if name.ends_with("create") {
                "/api/internal/tokens".to_owned()
            } else {
                format!("/api/v1/api-tokens/{token_id}")
            };
            Shape::admin(vec![Target::token(&token_id, "provisioning-script")]).uri(uri)
        }
        "system.api_token.request_outside_allowed_range" => {
            Shape::admin(vec![Target::token(&id::new_id(IdKind::ApiToken), "provisioning-script")])
                .outcome("DENY", Some("Request came from outside the token's network zone"))
        }
        "system.oauth2.token.request_outside_allowed_range" => Shape::admin(vec![c.app_target()])
            .outcome("DENY", Some("Request came from outside the token's network zone")),
        n if n.starts_with("system.idp.key.") => Shape::admin(vec![
            identity_provider(),
            object("JsonWebKey", okta_id("kid"), "Partner SAML IdP signing key"),
        ]),
        n if n.starts_with("system.idp.") => Shape::admin(vec![identity_provider()]),
        n if n.starts_with("system.import.group.") => Shape::admin(vec![c.group_target(), c.app_target()]),
        n if n.starts_with("system.import.") => {
            Shape::admin(vec![object("AppInstance", id::new_id(IdKind::App), "corp.example.com")])
                .debug("importJobId", json!(okta_id("ij0")))
        }
        n if n.starts_with("system.log_stream.") => {
            Shape::admin(vec![object("LogStream", id::new_id(IdKind::App), "Security analytics stream")])
        }
        n if n.starts_with("system.org.rate_limit.") => {
            Shape::admin(vec![object("URL Pattern", okta_id("0rl"), "/api/v1/users")])
                .debug("threshold", json!(600))
                .debug("timeSpan", json!(1))
                .debug("timeUnit", json!("MINUTES"))
        }
        "system.sms.send_phone_verification_message" | "system.voice.send_phone_verification_call" => {
            Shape::user(vec![c.user_target()]).debug("phoneNumber", json!("+1 555 01XX"))
        }
        "system.email.delivery" => Shape::admin(vec![c.user_target()])
            .debug("deliveryStatus", json!("bounced"))
            .debug("emailType", json!("activation")),
        n if n.starts_with("system.") => Shape::admin(vec![c.user_target()]),

        // ---- hooks (Haken writes these) ----
        "event_hook.delivery" => {
            let hook_id = id::new_id(IdKind::EventHook);
            Shape::admin(vec![object("EventHook", hook_id.clone(), "Provisioning listener")])
                .debug("targetEventHookIds", json!(hook_id))
        }
        n if n.starts_with("event_hook.") => {
            Shape::admin(vec![object("EventHook", id::new_id(IdKind::EventHook), "Provisioning listener")])
        }
        "inline_hook.executed" => {
            Shape::admin(vec![object("InlineHook", id::new_id(IdKind::InlineHook), "Token enrichment")])
                .outcome("FAILURE", Some("The hook endpoint did not answer in time"))
        }
        n if n.starts_with("inline_hook.") => {
            Shape::admin(vec![object("InlineHook", id::new_id(IdKind::InlineHook), "Token enrichment")])
        }

        // ---- devices ----
        "device.enrollment.create" => Shape::user(vec![device()]),
        n if n.starts_with("device.user.") => Shape::admin(vec![device(), c.user_target()]),
        n if n.starts_with("device.") => Shape::admin(vec![device()]),

        // ---- admin roles ----
        n if n.starts_with("iam.resourceset.") => {
            Shape::admin(vec![object("ResourceSet", okta_id("iam"), "Finance resources")])
        }
        n if n.starts_with("iam.role.") => Shape::admin(vec![object("CustomRole", okta_id("cr0"), "Finance admin")]),
        n if n.starts_with("iam.") => {
            Shape::admin(vec![object("PolicyEntity", okta_id("00p"), "Admin console policy")])
        }

        // ---- identity governance ----
        "access.request.create" => {
            Shape::user(vec![object("AccessRequest", okta_id("req"), "Access to Expense Tracker")])
        }
        n if n.starts_with("access.request.condition.") => Shape::admin(vec![
            c.app_target(),
            object("AccessRequestCondition", okta_id("rcn"), "Finance staff may request access"),
        ]),
        n if n.starts_with("access.request.sequence.") => {
            Shape::admin(vec![object("AccessRequestSequence", okta_id("rsq"), "Manager then app owner")])
        }
        "access.request.settings.update" => Shape::admin(vec![c.app_target()]),
        n if n.starts_with("access.request.") => {
            Shape::admin(vec![object("AccessRequest", okta_id("req"), "Access to Expense Tracker"), c.user_target()])
        }
        n if n.starts_with("access.review.") => {
            Shape::admin(vec![object("AccessReview", okta_id("rev"), "Quarterly finance review"), c.user_target()])
        }
        n if n.starts_with("certification.") => {
            Shape::admin(vec![object("CertificationCampaign", okta_id("icc"), "Quarterly finance review")])
        }
        n if n.starts_with("entitlement.migration.") => {
            let shape = Shape::admin(vec![c.app_target()]);
            if n.ends_with(".fail") {
                shape.outcome("FAILURE", Some("Entitlement data could not be read from the app"))
            } else {
                shape
            }
        }
        "governance.principal.settings.update" => Shape::admin(vec![c.user_target()]),
        n if n.starts_with("governance.") => Shape::admin(vec![object("Org", okta_id("00o"), "example")]),
        n if n.starts_with("resource.collection.") => {
            Shape::admin(vec![object("Collection", okta_id("col"), "Finance tools")])
        }
        n if n.starts_with("resource.entitlement_bundle.") => {
            Shape::admin(vec![c.app_target(), object("EntitlementBundle", okta_id("enb"), "Approver bundle")])
        }
        n if n.starts_with("resource.entitlement_policy.") => {
            Shape::admin(vec![c.app_target(), object("EntitlementPolicy", okta_id("enp"), "Expense Tracker policy")])
        }
        n if n.starts_with("resource.entitlement.") => {
            Shape::admin(vec![c.app_target(), object("Entitlement", okta_id("ent"), "Approver role")])
        }
        n if n.starts_with("resource.label.") => {
            Shape::admin(vec![c.app_target(), object("Label", okta_id("lbl"), "Sensitive")])
        }
        n if n.starts_with("resource.risk_rule.") => {
            Shape::admin(vec![object("RiskRule", okta_id("rsk"), "Separation of duties")])
        }
        n if n.starts_with("resource.owner.") || n.starts_with("resource.user_entitlements.") => {
            Shape::admin(vec![c.app_target(), c.user_target()])
        }
        n if n.starts_with("resource.") => Shape::admin(vec![c.app_target()]),

        // ---- resource servers ----
        n if n.starts_with("resource_servers.") => {
            let kind = match n.split('.').nth(1) {
                Some("a2a_server") => "A2AServer",
                Some("api_server") => "ApiServer",
                Some("mcp_server") => "McpServer",
                Some("virtual_mcp_server") => "VirtualMcpServer",
                _ => "ResourceServer",
            };
            let mut targets = vec![object(kind, okta_id("rsv"), "Expense API")];
            if n.contains(".auth_server.") || n.contains("client_authentication") {
                targets.push(auth_server());
            }
            Shape::admin(targets)
        }

        // ---- workload principals and AI agents ----
        n if n.starts_with("workload_principal.") => {
            let principal = if n.starts_with("workload_principal.ai_agent.") {
                object("AIAgent", okta_id("wlp"), "Expense assistant")
            } else {
                object("WorkloadPrincipal", okta_id("wlp"), "Nightly reconciliation job")
            };
            let mut targets = vec![principal];
            if n.contains(".credential.") {
                targets.push(object("Credential", okta_id("crd"), "Signing key"));
            } else if n.contains(".sign_on_provider.") {
                targets.push(c.app_target());
            } else if n.contains(".delegation_link.") {
                targets.push(c.user_target());
            } else if n.contains(".resource_connection.") {
                targets.push(object("ResourceConnection", okta_id("rcx"), "Expense API connection"));
            }
            Shape::admin(targets)
        }

        _ => Shape::admin(Vec::new()),
    }
}

/// The `displayMessage` of a sample: Haken's own wording for the types it writes, else the
/// catalog description.
fn display_message(info: &EventTypeInfo) -> String {
    let fixed = match info.name {
        "user.lifecycle.create" => "Create okta user",
        "user.lifecycle.activate" => "Activate Okta user",
        "user.lifecycle.reactivate" => "Reactivate user",
        "user.lifecycle.deactivate" => "Deactivate user",
        "user.lifecycle.suspend" => "Suspend user",
        "user.lifecycle.unsuspend" => "Unsuspend user",
        "user.lifecycle.delete.initiated" => "Delete Okta user initiated",
        "user.lifecycle.delete.completed" => "Delete Okta user completed",
        "user.account.unlock_by_admin" => "Unlock user by admin",
        "user.account.expire_password" => "Expire user password",
        "user.account.update_profile" => "Update user profile for Okta",
        "user.account.update_password" => "User update password for Okta",
        "user.session.start" => "User login to Okta",
        "user.session.end" => "User logout from Okta",
        "group.user_membership.add" => "Add user to group membership",
        "group.user_membership.remove" => "Remove user from group membership",
        "group.lifecycle.create" => "Create okta group",
        "group.lifecycle.delete" => "Delete Okta group",
        "group.profile.update" => "Update group profile",
        "system.api_token.create" => "Create API token",
        "system.api_token.revoke" => "Revoke API token",
        _ => "",
    };
    if fixed.is_empty() {
        let text = info.description.trim_end_matches('.');
        // displayMessage is at most 255 characters; descriptions are far shorter, but be safe.
        text.chars().take(255).collect()
    } else {
        fixed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hook-eligible types per first name segment, as Appendix A groups them.
    const APPENDIX_GROUPS: [(&str, usize); 16] = [
        ("access", 22),
        ("app", 38),
        ("application", 26),
        ("certification", 5),
        ("device", 8),
        ("entitlement", 3),
        ("governance", 2),
        ("group", 10),
        ("iam", 18),
        ("inline_hook", 1),
        ("policy", 18),
        ("resource", 26),
        ("resource_servers", 29),
        ("security", 10),
        ("system", 30),
        ("user", 43),
    ];

    /// Spot checks across every group of Appendix A.
    const ELIGIBLE: [&str; 48] = [
        "access.request.create",
        "access.request.condition.invalidate",
        "access.review.remediate",
        "app.oauth2.as.consent.grant",
        "app.oauth2.as.consent.revoke.user.client",
        "app.oauth2.trusted_server.add",
        "app.ai_agent_provider.import_staging.confirm",
        "app.user_management.user_group_import.upsert_success",
        "application.lifecycle.create",
        "application.user_membership.add",
        "application.provision.user.push_profile",
        "application.provision.group_push.mapping.update.or.delete.failed.with.error",
        "application.policy.sign_on.deny_access",
        "certification.campaign.launch",
        "device.enrollment.create",
        "device.user.remove",
        "entitlement.migration.fail",
        "governance.settings.update",
        "group.user_membership.add",
        "group.user_membership.remove",
        "group.lifecycle.create",
        "group.application_assignment.update",
        "iam.role.permission.conditions.add",
        "iam.resourceset.bindings.add",
        "inline_hook.executed",
        "policy.lifecycle.update",
        "policy.rule.add",
        "policy.branch.lifecycle.rollback",
        "policy.auth_reevaluate.fail",
        "resource.entitlement_policy.draft.create",
        "resource.user_entitlements.drift.detect",
        "resource_servers.mcp_server.capability.discover",
        "resource_servers.virtual_mcp_server.capability.update",
        "security.authenticator.lifecycle.create",
        "security.trusted_origin.delete",
        "security.breached_credential.detected",
        "system.api_token.create",
        "system.api_token.request_outside_allowed_range",
        "system.idp.lifecycle.read_client_secret",
        "system.org.rate_limit.violation",
        "user.lifecycle.create",
        "user.lifecycle.delete.initiated",
        "user.account.update_profile",
        "user.session.start",
        "user.authentication.auth_via_mfa",
        "user.authentication.auth_via_IDP",
        "workload_principal.ai_agent.credential.create",
        "workload_principal.resource_connection.update",
    ];

    const NOT_ELIGIBLE: [&str; 23] = [
        "user.lifecycle.delete.completed",
        "user.account.expire_password",
        "event_hook.created",
        "event_hook.updated",
        "event_hook.activated",
        "event_hook.deactivated",
        "event_hook.deleted",
        "event_hook.verified",
        "event_hook.delivery",
        "inline_hook.created",
        "inline_hook.updated",
        "inline_hook.activated",
        "inline_hook.deactivated",
        "inline_hook.deleted",
        "inline_hook.response.processed",
        "user.session.expire",
        "user.session.access_admin_app",
        "user.account.update_primary_email",
        "user.account.update_secondary_email",
        "user.authentication.auth",
        "user.authentication.verify",
        "policy.lifecycle.create",
        "policy.lifecycle.delete",
    ];

    #[test]
    fn every_line_of_the_file_parses_and_names_are_unique() {
        let records: Vec<&str> = DATA.lines().filter(|l| is_record(l)).collect();
        for line in &records {
            assert!(parse_line(line).is_some(), "malformed catalog line: {line:?}");
        }
        let mut names: Vec<&str> = records.iter().filter_map(|l| l.split('\t').next()).collect();
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total, "duplicate event types in the catalog");
        assert_eq!(all().count(), total);
        assert!(DATA.lines().next().is_some_and(|l| l.starts_with('#')), "the file starts with a header");
    }

    #[test]
    fn exactly_the_appendix_types_are_eligible() {
        assert_eq!(eligible().count(), 314);
        for (group, count) in APPENDIX_GROUPS {
            let n = eligible().filter(|e| e.name.split('.').next() == Some(group)).count();
            assert_eq!(n, count, "eligible {group}.* types");
        }
        for name in ELIGIBLE {
            assert!(is_hook_eligible(name), "{name} should be eligible");
            assert_eq!(lookup(name).map(|e| e.name), Some(name));
        }
    }

    #[test]
    fn haken_only_types_are_catalogued_but_not_eligible() {
        for name in NOT_ELIGIBLE {
            let info = lookup(name);
            assert!(info.is_some(), "{name} missing from the catalog");
            assert!(!is_hook_eligible(name), "{name} must not be eligible");
        }
        assert_eq!(all().filter(|e| !e.eligible).count(), NOT_ELIGIBLE.len());
    }

    #[test]
    fn lookup_is_exact() {
        assert!(lookup("user.lifecycle.create").is_some_and(|e| !e.description.is_empty()));
        assert!(lookup("User.Lifecycle.Create").is_none());
        assert!(lookup("user.lifecycle").is_none());
        assert!(lookup("").is_none());
        assert!(!is_hook_eligible("user.authentication.auth_via_idp"));
        assert!(!is_hook_eligible("no.such.type"));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(parse_line("a.b\tyes\tdescription").is_none());
        assert!(parse_line("a.b\ttrue").is_none());
        assert!(parse_line("a.b\ttrue\t").is_none());
        assert!(parse_line("a b\ttrue\tx").is_none());
        assert!(parse_line("a..b\ttrue\tx").is_none());
        assert!(parse_line("a.b\ttrue\tx\textra").is_none());
        assert_eq!(
            parse_line("a.b\tfalse\tSomething happens."),
            Some(EventTypeInfo { name: "a.b", eligible: false, description: "Something happens." })
        );
        let parsed = parse("# header\n\nb.c\ttrue\tfirst\nbad line\na.b\tfalse\tx\nb.c\tfalse\tsecond\n");
        assert_eq!(parsed.iter().map(|e| e.name).collect::<Vec<_>>(), ["a.b", "b.c"]);
        assert_eq!(parsed.get(1).map(|e| e.description), Some("first"));
    }

    fn target_types(ev: &LogEvent) -> Vec<&str> {
        ev.target.iter().flatten().map(|t| t.kind.as_str()).collect()
    }

    #[test]
    fn every_type_has_a_well_formed_sample() {
        let now = Timestamp(1_741_944_411_120);
        for info in all() {
            let Some(ev) = sample_event(info.name, now) else { panic!("no sample for {}", info.name) };
            assert_eq!(ev.event_type, info.name);
            assert_eq!(ev.published, now);
            assert_eq!(ev.uuid.len(), 36);
            assert_eq!(ev.actor.kind, "User");
            assert!(id::looks_like(IdKind::User, &ev.actor.id), "{}: actor id {}", info.name, ev.actor.id);
            assert!(ev.display_message.as_ref().is_some_and(|m| !m.is_empty() && m.len() <= 255));
            assert_eq!(ev.transaction.as_ref().and_then(|t| t.kind.as_deref()), Some("WEB"));
            let client = ev.client.as_ref();
            assert!(client.and_then(|c| c.ip_address.as_deref()).is_some_and(|ip| ip.starts_with("198.51.100.")));
            assert!(client.and_then(|c| c.user_agent.as_ref()).and_then(|u| u.raw_user_agent.as_ref()).is_some());
            let targets = ev.target.as_deref().unwrap_or_default();
            if info.name.starts_with("user.") || info.name.starts_with("group.") {
                assert!(!targets.is_empty(), "{} has no target", info.name);
            }
            for t in targets {
                assert!(!t.id.is_empty() && !t.kind.is_empty(), "{}: empty target", info.name);
            }
            let json = ev.to_value();
            assert_eq!(json["eventType"], info.name);
            assert!(json["debugContext"]["debugData"]["requestId"].is_string());
        }
    }

    #[test]
    fn samples_match_okta_shapes() {
        let now = Timestamp(1_741_944_411_120);

        let add = sample_event("group.user_membership.add", now);
        let add = add.as_ref().map(target_types).unwrap_or_default();
        assert_eq!(add, ["User", "UserGroup"]);

        let create = sample_event("user.lifecycle.create", now).map(|e| e.to_value()).unwrap_or_default();
        assert_eq!(create["target"][0]["type"], "User");
        assert!(create["target"][0]["id"].as_str().is_some_and(|i| id::looks_like(IdKind::User, i)));
        assert_eq!(create["target"][0]["alternateId"], "jordan.lee@example.com");
        assert_eq!(create["displayMessage"], "Create okta user");

        let start = sample_event("user.session.start", now).map(|e| e.to_value()).unwrap_or_default();
        assert!(start["authenticationContext"]["externalSessionId"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(start["outcome"]["result"], "SUCCESS");
        assert!(start["outcome"].as_object().is_some_and(|o| o.contains_key("reason")));
        assert_eq!(start["actor"]["alternateId"], "jordan.lee@example.com", "the user signs themselves in");
        assert_eq!(start["client"]["ipAddress"], SAMPLE_IP);
        assert_eq!(start["request"]["ipChain"][0]["ip"], SAMPLE_IP);

        let update = sample_event("user.account.update_profile", now).map(|e| e.to_value()).unwrap_or_default();
        assert_eq!(update["debugContext"]["debugData"]["changedAttributes"], "title,mobilePhone");
        assert_eq!(update["target"][0]["changeDetails"]["to"]["title"], "Senior Analyst");

        let app = sample_event("application.lifecycle.create", now);
        let app_target = app.as_ref().and_then(|e| e.target.as_ref()).and_then(|t| t.first());
        assert!(app_target.is_some_and(|t| t.kind == "AppInstance" && t.id.starts_with("0oa")));

        let assign = sample_event("application.user_membership.add", now);
        let assign = assign.as_ref().map(target_types).unwrap_or_default();
        assert!(assign.contains(&"AppInstance") && assign.contains(&"User"));

        let token = sample_event("system.api_token.create", now);
        let token = token.as_ref().and_then(|e| e.target.as_ref()).and_then(|t| t.first());
        assert!(token.is_some_and(|t| t.kind == "Token" && id::looks_like(IdKind::ApiToken, &t.id)));

        let rule = sample_event("policy.rule.add", now);
        assert_eq!(rule.as_ref().map(target_types).unwrap_or_default(), ["PolicyEntity", "PolicyRule"]);

        let denied = sample_event("application.policy.sign_on.deny_access", now);
        assert_eq!(denied.as_ref().map(|e| e.severity.as_str()), Some("WARN"));

        // Two samples never share ids.
        let a = sample_event("user.lifecycle.activate", now).map(|e| e.uuid).unwrap_or_default();
        let b = sample_event("user.lifecycle.activate", now).map(|e| e.uuid).unwrap_or_default();
        assert_ne!(a, b);
    }

    #[test]
    fn unknown_types_have_no_sample() {
        let now = Timestamp(0);
        for name in ["", "user", "user.lifecycle", "nope.nope", "USER.SESSION.START", "user.session.start ", "\u{0}"] {
            assert!(sample_event(name, now).is_none(), "{name:?}");
        }
    }
}
