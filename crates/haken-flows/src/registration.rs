//! Self-service registration and progressive profiling (spec 4.1), and the profile-enrollment
//! policy that governs both: who may register, which attributes are collected, which groups new
//! users join and which registration inline hook is asked.
//!
//! Both flows validate what the user typed before the hook is called, ask the hook through the
//! shared callout engine, and then either create/update the user — committing the hook's System
//! Log events in the same transaction — or answer a denial in Okta's error shape with the
//! hook's `errorCauses` as it sent them, writing the hook's events on their own.

use haken_core::error::DetailedCause;
use haken_core::hook::HookStatus;
use haken_core::inline_hook::{InlineHook, InlineHookType};
use haken_core::log_event::{Actor, EventContext, LogEvent, Target};
use haken_core::policy::{self, Access, DEFAULT_POLICY_ID, Policy, PolicyRule, ProfileAttribute, ProfileEnrollment};
use haken_core::schema::UserSchema;
use haken_core::{ApiError, ErrorCode, Timestamp, User, UserStatus};
use haken_hooks::inline::commands::{self, RegistrationKind};
use haken_hooks::inline::{Decision, HookError, InlineCaller, request_context};
use haken_store::{Change, Store, StoreError};
use serde_json::{Map, Value, json};

use crate::credentials::check_policy;
use crate::directory::{self, NewUser, UserUpdate};
use crate::{FlowError, flow_error, schema, store_error};

/// What the end user is told (spec 4.1), per flow.
struct Texts {
    /// The hook denied without an `error` object.
    denied: &'static str,
    /// The hook sent an `error` object without an `errorSummary`.
    denied_with_error: &'static str,
    /// The hook could not be asked or answered something unusable (fail closed).
    failed: &'static str,
}

const SSR_TEXTS: Texts = Texts {
    denied: "Registration denied.",
    denied_with_error: "Registration cannot be completed at this time.",
    failed: "There was an error creating your account. Please try registering again.",
};

const PROGRESSIVE_TEXTS: Texts = Texts {
    denied: "Profile update denied.",
    denied_with_error: "We found some errors. Please review the form and make corrections.",
    failed: "There was an error updating your profile. Please try again later.",
};

/// The summary of a registration the hook could not decide (exposed for the sign-up page).
pub const REGISTRATION_FAILED: &str = SSR_TEXTS.failed;

// ---- the policy ----

fn policy_error(e: StoreError) -> ApiError {
    store_error(e, "Policy", DEFAULT_POLICY_ID)
}

/// The profile-enrollment policy and its rule, created on first use. Every node creates them
/// under the same fixed ids, so concurrent first uses end with one policy.
pub async fn enrollment_policy(store: &Store) -> Result<(Policy, PolicyRule), ApiError> {
    let now = Timestamp::now();
    let policy = store.doc_or_insert(&policy::default_policy(now)).await.map_err(policy_error)?;
    let rule = store.doc_or_insert(&policy::default_rule(now)).await.map_err(policy_error)?;
    Ok((policy, rule))
}

/// A policy by id (there is only the default one).
pub async fn get_policy(store: &Store, id: &str) -> Result<(Policy, PolicyRule), ApiError> {
    let (policy, rule) = enrollment_policy(store).await?;
    if id != policy.id {
        return Err(ApiError::not_found(id, "Policy"));
    }
    Ok((policy, rule))
}

/// A rule of a policy.
pub async fn get_rule(store: &Store, policy_id: &str, rule_id: &str) -> Result<(Policy, PolicyRule), ApiError> {
    let (policy, rule) = get_policy(store, policy_id).await?;
    if rule_id != rule.id {
        return Err(ApiError::not_found(rule_id, "PolicyRule"));
    }
    Ok((policy, rule))
}

/// A `PUT` of the rule: fields left out (`None`) keep their value.
#[derive(Debug, Clone, Default)]
pub struct RuleUpdate {
    pub name: Option<String>,
    pub access: Option<Access>,
    /// `preRegistrationInlineHooks` ids; `Some(vec![])` detaches the hook.
    pub inline_hook_ids: Option<Vec<String>>,
    /// Labels may be absent: the schema's title is used.
    pub profile_attributes: Option<Vec<(String, Option<String>, bool)>>,
    pub target_group_ids: Option<Vec<String>>,
    pub unknown_user_action: Option<String>,
    pub email_verification: Option<bool>,
}

const ACTIONS: &str = "actions.profileEnrollment";

fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::validation(&format!("{ACTIONS}.{field}"), message)
}

async fn check_hook(store: &Store, ids: &[String]) -> Result<Option<String>, ApiError> {
    const FIELD: &str = "preRegistrationInlineHooks";
    match ids {
        [] => Ok(None),
        [id] => {
            let hook: Option<InlineHook> = store.get_doc(id).await.map_err(|e| store_error(e, "InlineHook", id))?;
            match hook {
                None => Err(invalid(FIELD, format!("inline hook {id} does not exist"))),
                Some(h) if h.hook_type != InlineHookType::Registration => Err(invalid(
                    FIELD,
                    format!(
                        "inline hook {id} is of type {}; a profile enrollment policy takes {} hooks",
                        h.hook_type.as_str(),
                        InlineHookType::Registration.as_str()
                    ),
                )),
                Some(h) => Ok(Some(h.id)),
            }
        }
        _ => Err(invalid(FIELD, "a profile enrollment policy takes at most one inline hook")),
    }
}

fn check_attributes(
    attrs: Vec<(String, Option<String>, bool)>,
    schema: &UserSchema,
) -> Result<Vec<ProfileAttribute>, ApiError> {
    const FIELD: &str = "profileAttributes";
    let mut out: Vec<ProfileAttribute> = Vec::with_capacity(attrs.len());
    for (name, label, required) in attrs {
        if name == "password" {
            return Err(invalid(FIELD, "the password is always collected; it is not a profile attribute"));
        }
        let Some(attr) = schema.attribute(&name) else {
            return Err(invalid(FIELD, format!("'{name}' is not an attribute of the user profile schema")));
        };
        if out.iter().any(|a| a.name == name) {
            return Err(invalid(FIELD, format!("'{name}' is listed twice")));
        }
        if name == "email" && !required {
            return Err(invalid(FIELD, "email is always collected and required"));
        }
        let label = label.filter(|l| !l.trim().is_empty()).unwrap_or_else(|| attr.title.clone());
        out.push(ProfileAttribute { name, label, required });
    }
    if !out.iter().any(|a| a.name == "email") {
        return Err(invalid(FIELD, "email is always collected and must be listed"));
    }
    // A required schema attribute the form does not ask for would make every registration fail.
    for attr in schema.base.iter().chain(schema.custom.iter()) {
        if attr.required && attr.name != "login" && !out.iter().any(|a| a.name == attr.name) {
            return Err(invalid(
                FIELD,
                format!("the user profile schema requires '{}', so the form must collect it", attr.name),
            ));
        }
    }
    Ok(out)
}

async fn check_groups(store: &Store, ids: Vec<String>) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        let group = store.get_group(&id).await.map_err(|e| store_error(e, "Group", &id))?;
        match group {
            None => return Err(invalid("targetGroupIds", format!("group {id} does not exist"))),
            Some(g) if g.group_type != "OKTA_GROUP" => {
                return Err(invalid("targetGroupIds", format!("group {id} is not an OKTA_GROUP")));
            }
            Some(_) if out.contains(&id) => {}
            Some(_) => out.push(id),
        }
    }
    Ok(out)
}

fn rule_targets(policy: &Policy, rule: &PolicyRule) -> [Target; 2] {
    [
        Target {
            id: policy.id.clone(),
            kind: "PolicyEntity".to_owned(),
            alternate_id: Some(policy.policy_type.clone()),
            display_name: Some(policy.name.clone()),
            detail_entry: None,
            change_details: None,
        },
        Target {
            id: rule.id.clone(),
            kind: "PolicyRule".to_owned(),
            alternate_id: Some(rule.rule_type.clone()),
            display_name: Some(rule.name.clone()),
            detail_entry: None,
            change_details: None,
        },
    ]
}

/// Validates and applies a `PUT` of the rule, with a `policy.rule.update` event.
pub async fn update_rule(
    store: &Store,
    ctx: &EventContext,
    policy_id: &str,
    rule_id: &str,
    req: RuleUpdate,
    now: Timestamp,
) -> Result<(Policy, PolicyRule), ApiError> {
    let (policy, current) = get_rule(store, policy_id, rule_id).await?;
    if let Some(name) = &req.name
        && *name != current.name
    {
        return Err(ApiError::validation("name", "the name of a system rule cannot be changed"));
    }
    if req.email_verification == Some(true) {
        return Err(invalid(
            "activationRequirements.emailVerification",
            "email verification is not supported: Haken sends no email, so new users are activated at once",
        ));
    }
    if let Some(action) = &req.unknown_user_action
        && action != "REGISTER"
        && action != "DENY"
    {
        return Err(invalid("unknownUserAction", "must be REGISTER or DENY"));
    }
    let hook = match &req.inline_hook_ids {
        Some(ids) => Some(check_hook(store, ids).await?),
        None => None,
    };
    let attributes = match req.profile_attributes {
        Some(attrs) => Some(check_attributes(attrs, &*schema::load(store).await?)?),
        None => None,
    };
    let groups = match req.target_group_ids {
        Some(ids) => Some(check_groups(store, ids).await?),
        None => None,
    };
    let ctx = ctx.clone();
    let policy_for_event = policy.clone();
    let access = req.access;
    let unknown = req.unknown_user_action;
    let rule = store
        .update_doc::<PolicyRule, FlowError, _>(&current.id, move |mut rule| {
            let before = rule.enrollment.clone();
            let e: &mut ProfileEnrollment = &mut rule.enrollment;
            if let Some(a) = access {
                e.access = a;
            }
            if let Some(h) = hook {
                e.inline_hook_id = h;
            }
            if let Some(attrs) = attributes {
                e.profile_attributes = attrs;
            }
            if let Some(g) = groups {
                e.target_group_ids = g;
            }
            if let Some(u) = unknown {
                e.unknown_user_action = u;
            }
            if rule.enrollment == before {
                return Ok(None);
            }
            rule.last_updated = now;
            let [p, r] = rule_targets(&policy_for_event, &rule);
            let mut event = ctx.event("policy.rule.update", "Update policy rule", now).with_target(p).with_target(r);
            if before.inline_hook_id != rule.enrollment.inline_hook_id {
                event = event.with_debug("inlineHookId", json!(rule.enrollment.inline_hook_id));
            }
            Ok(Some(Change { value: rule, events: vec![event] }))
        })
        .await
        .map_err(|e| flow_error(e, "PolicyRule", rule_id))?;
    Ok((policy, rule))
}

// ---- asking the hook ----

/// What came of asking the registration hook.
enum Verdict {
    /// Go on, applying these attribute changes (in order; `null` removes).
    Proceed(Map<String, Value>),
    /// The registration or update is refused with this answer.
    Refused(ApiError),
}

fn denial(texts: &Texts, error: Option<HookError>) -> ApiError {
    match error {
        None => ApiError::with_summary(ErrorCode::ValidationFailed, texts.denied),
        Some(err) => {
            let summary = err.error_summary.filter(|s| !s.trim().is_empty()).unwrap_or(texts.denied_with_error.into());
            let causes = err
                .error_causes
                .into_iter()
                .map(|c| DetailedCause {
                    error_summary: c.error_summary,
                    reason: c.reason,
                    location_type: c.location_type,
                    location: c.location,
                    domain: c.domain,
                })
                .collect();
            ApiError::with_summary(ErrorCode::ValidationFailed, summary).with_detailed_causes(causes)
        }
    }
}

/// Asks the rule's hook, if one is attached and active. Returns the verdict and the hook's
/// System Log events, which the caller commits with its change or on their own.
async fn ask_hook(
    store: &Store,
    inline: &InlineCaller,
    ctx: &EventContext,
    rule: &PolicyRule,
    kind: RegistrationKind,
    data: Value,
    schema: &UserSchema,
) -> (Verdict, Vec<LogEvent>) {
    let texts = match kind {
        RegistrationKind::SelfService => &SSR_TEXTS,
        RegistrationKind::Progressive => &PROGRESSIVE_TEXTS,
    };
    let Some(hook_id) = &rule.enrollment.inline_hook_id else {
        return (Verdict::Proceed(Map::new()), Vec::new());
    };
    let hook = match store.get_doc::<InlineHook>(hook_id).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            // Only inactive hooks can be deleted, and an inactive hook is not asked: a hook that
            // is gone is treated the same way.
            tracing::warn!(hook_id = %hook_id, "The profile enrollment policy names an inline hook that no longer exists.");
            return (Verdict::Proceed(Map::new()), Vec::new());
        }
        Err(e) => {
            tracing::error!(hook_id = %hook_id, error = %e, "Could not read the registration inline hook.");
            return (Verdict::Refused(ApiError::internal()), Vec::new());
        }
    };
    if hook.status != HookStatus::Active {
        return (Verdict::Proceed(Map::new()), Vec::new());
    }
    let payload = inline.envelope(&hook, Some(kind.request_type()), data, Timestamp::now());
    let exec = inline.run(&hook, ctx, &payload, |resp| commands::registration(resp, kind, schema)).await;
    let verdict = match exec.decision {
        Decision::Apply(effect) if effect.error.is_some() || !effect.allow => {
            Verdict::Refused(denial(texts, effect.error))
        }
        Decision::Apply(effect) => Verdict::Proceed(effect.profile),
        Decision::Proceed => Verdict::Proceed(Map::new()),
        Decision::Stop(_) => Verdict::Refused(ApiError::with_summary(ErrorCode::ValidationFailed, texts.failed)),
    };
    (verdict, exec.events)
}

/// Commits events that belong to no change; a failure to write them is logged, since the
/// caller's answer (a refusal) stands either way.
async fn write_alone(store: &Store, events: &[LogEvent]) {
    if events.is_empty() {
        return;
    }
    if let Err(e) = store.append_events(events).await {
        tracing::error!(error = %e, "Could not write the inline hook's System Log events.");
    }
}

fn apply_changes(profile: &mut Map<String, Value>, changes: Map<String, Value>) {
    for (k, v) in changes {
        if v.is_null() {
            profile.remove(&k);
        } else {
            profile.insert(k, v);
        }
    }
}

// ---- self-service registration ----

/// What the sign-up form or `POST /api/v1/registration` sent.
#[derive(Debug, Clone)]
pub struct SignUp {
    pub profile: Map<String, Value>,
    pub password: String,
    /// The path that was called, for `data.context.request.url`.
    pub request_url: String,
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// Checks the typed-in profile against the policy: only collected attributes, required ones
/// filled in.
fn check_collected(profile: &Map<String, Value>, enrollment: &ProfileEnrollment) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    for k in profile.keys() {
        if k != "login" && enrollment.attribute(k).is_none() {
            causes.push(format!("{k}: This attribute is not collected at registration"));
        }
    }
    for a in &enrollment.profile_attributes {
        if a.required && profile.get(&a.name).is_none_or(is_blank) {
            causes.push(format!("{}: The field cannot be left blank", a.name));
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    let fields: Vec<&str> = causes.iter().filter_map(|c| c.split(':').next()).collect();
    Err(ApiError::validation_many(&fields.join(", "), causes))
}

/// Registers a new user (spec 4.1, `self.service.registration`). On success the user is
/// `ACTIVE` with the password, in the policy's target groups.
pub async fn register(
    store: &Store,
    inline: &InlineCaller,
    ctx: &EventContext,
    req: SignUp,
    now: Timestamp,
) -> Result<User, ApiError> {
    let (_, rule) = enrollment_policy(store).await?;
    if !rule.enrollment.registration_enabled() {
        return Err(ApiError::with_summary(
            ErrorCode::NoPermission,
            "Self-service registration is not enabled for this organization.",
        ));
    }
    let mut profile = req.profile;
    // Empty fields of a form mean "not given".
    profile.retain(|_, v| !is_blank(v));
    check_collected(&profile, &rule.enrollment)?;
    if !profile.contains_key("login")
        && let Some(email) = profile.get("email").cloned()
    {
        profile.insert("login".into(), email);
    }
    let schema = schema::load(store).await?;
    schema.validate_profile(&profile)?;
    let login = profile.get("login").and_then(Value::as_str).unwrap_or_default().to_owned();
    check_policy(&req.password, &login)?;
    if store.get_user(&login).await.map_err(|e| store_error(e, "User", &login))?.is_some() {
        return Err(login_taken());
    }

    let data = json!({
        "context": { "request": request_context(ctx, "POST", &req.request_url) },
        "userProfile": profile,
        "action": "ALLOW",
    });
    let (verdict, events) = ask_hook(store, inline, ctx, &rule, RegistrationKind::SelfService, data, &schema).await;
    let changes = match verdict {
        Verdict::Refused(err) => {
            write_alone(store, &events).await;
            return Err(err);
        }
        Verdict::Proceed(changes) => changes,
    };
    apply_changes(&mut profile, changes);
    let final_login = profile.get("login").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Err(why) = schema.validate_profile(&profile).and_then(|()| check_policy(&req.password, &final_login)) {
        tracing::warn!(reason = %why, "The registration hook's profile changes leave an invalid profile.");
        write_alone(store, &events).await;
        return Err(ApiError::with_summary(ErrorCode::ValidationFailed, SSR_TEXTS.failed));
    }
    let new_user = NewUser {
        profile,
        password: Some(req.password),
        group_ids: rule.enrollment.target_group_ids.clone(),
        activate: true,
        ..NewUser::default()
    };
    match directory::create_user_with_events(store, ctx, new_user, now, events.clone()).await {
        Ok(user) => Ok(user),
        Err(e) => {
            // Nothing was written with the user: the hook's events go on their own.
            write_alone(store, &events).await;
            Err(e)
        }
    }
}

fn login_taken() -> ApiError {
    ApiError::validation("login", "An object with this field already exists in the current organization")
}

// ---- progressive profile ----

fn user_actor(user: &User) -> Actor {
    Actor {
        id: user.id.clone(),
        kind: "User".to_owned(),
        alternate_id: Some(user.login().to_owned()),
        display_name: Some(user.display_name()),
        detail_entry: None,
    }
}

/// A progressive profile update by the signed-in user (spec 4.1, `progressive.profile`):
/// `delta` holds the attributes the user changes.
pub async fn update_profile(
    store: &Store,
    inline: &InlineCaller,
    ctx: &EventContext,
    session_token: &str,
    delta: Map<String, Value>,
    request_url: &str,
    now: Timestamp,
) -> Result<User, ApiError> {
    let user = crate::signin::session_user(store, session_token, now).await?;
    if !matches!(user.status, UserStatus::Active | UserStatus::PasswordExpired) {
        return Err(ApiError::new(ErrorCode::WrongStatus));
    }
    let mut ctx = ctx.clone();
    ctx.actor = user_actor(&user);
    let (_, rule) = enrollment_policy(store).await?;
    if delta.is_empty() {
        return Err(ApiError::validation("profile", "The field cannot be left blank"));
    }
    let mut causes = Vec::new();
    for k in delta.keys() {
        if k == "login" || k == "email" {
            causes.push(format!("{k}: This attribute cannot be changed by a profile update"));
        } else if rule.enrollment.attribute(k).is_none() {
            causes.push(format!("{k}: This attribute is not collected by the profile enrollment policy"));
        }
    }
    if !causes.is_empty() {
        let fields: Vec<&str> = causes.iter().filter_map(|c| c.split(':').next()).collect();
        return Err(ApiError::validation_many(&fields.join(", "), causes));
    }
    let schema = schema::load(store).await?;
    let mut next = user.profile.clone();
    apply_changes(&mut next, delta.clone());
    schema.validate_profile(&next)?;

    let data = json!({
        "context": {
            "request": request_context(&ctx, "POST", request_url),
            "user": {
                "id": user.id,
                "passwordChanged": user.password_changed,
                "profile": user.profile,
                "_links": {
                    "groups": { "href": format!("/api/v1/users/{}/groups", user.id) },
                    "factors": { "href": format!("/api/v1/users/{}/factors", user.id) },
                },
            },
        },
        "userProfileUpdate": delta,
        "action": "ALLOW",
    });
    let (verdict, events) = ask_hook(store, inline, &ctx, &rule, RegistrationKind::Progressive, data, &schema).await;
    let mut changes = delta;
    match verdict {
        Verdict::Refused(err) => {
            write_alone(store, &events).await;
            return Err(err);
        }
        Verdict::Proceed(hook_changes) => {
            for (k, v) in hook_changes {
                changes.insert(k, v);
            }
        }
    }
    let mut check = user.profile.clone();
    apply_changes(&mut check, changes.clone());
    if let Err(why) = schema.validate_profile(&check) {
        tracing::warn!(reason = %why, "The progressive profile hook's changes leave an invalid profile.");
        write_alone(store, &events).await;
        return Err(ApiError::with_summary(ErrorCode::ValidationFailed, PROGRESSIVE_TEXTS.failed));
    }
    let update = UserUpdate { profile: Some(changes), ..UserUpdate::default() };
    match directory::update_user_with_events(store, &ctx, &user.id, update, now, events.clone()).await {
        Ok(u) => Ok(u),
        Err(e) => {
            write_alone(store, &events).await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haken_hooks::inline::ErrorCause;

    #[test]
    fn denial_texts() {
        let plain = denial(&SSR_TEXTS, None);
        assert_eq!(plain.summary, "Registration denied.");
        assert!(plain.detailed_causes.is_empty());
        let empty = denial(&SSR_TEXTS, Some(HookError::default()));
        assert_eq!(empty.summary, "Registration cannot be completed at this time.");
        let full = denial(
            &PROGRESSIVE_TEXTS,
            Some(HookError {
                error_summary: Some("Nope".into()),
                error_causes: vec![ErrorCause { reason: Some("R".into()), ..ErrorCause::default() }],
            }),
        );
        assert_eq!(full.summary, "Nope");
        assert_eq!(full.code, ErrorCode::ValidationFailed);
        assert_eq!(full.detailed_causes[0].reason.as_deref(), Some("R"));
        assert_eq!(denial(&PROGRESSIVE_TEXTS, None).summary, "Profile update denied.");
    }

    #[test]
    fn collected_attributes() {
        let e = ProfileEnrollment::default_actions();
        let p = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(check_collected(&p(json!({"email":"a@b.co","firstName":"A","lastName":"B"})), &e).is_ok());
        let err = check_collected(&p(json!({"email":"a@b.co","firstName":"A","manager":"x"})), &e).err();
        let causes = err.map(|e| e.causes).unwrap_or_default();
        assert!(causes.iter().any(|c| c.starts_with("manager:")));
        assert!(causes.iter().any(|c| c.starts_with("lastName:")));
    }
}
