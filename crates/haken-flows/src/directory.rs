//! Users and groups: creation, profile updates, the lifecycle and Okta's two-step delete,
//! group membership. Each operation commits together with its System Log events.

use haken_core::id::{IdKind, new_id, random_base62};
use haken_core::log_event::{EventContext, LogEvent, Target};
use haken_core::user::{Lifecycle, StoredCredentials, Transition, apply_lifecycle};
use haken_core::{ApiError, Group, Timestamp, User, UserStatus};
use haken_store::{Change, Store, StoreError};
use serde_json::{Map, Value};

use crate::credentials::{check_policy, hash_password};
use crate::{FlowError, flow_error, schema, store_error};

/// The default (and only) user type.
pub const DEFAULT_USER_TYPE: &str = "oty00000000000000000";

/// What `POST /api/v1/users` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub profile: Map<String, Value>,
    pub password: Option<String>,
    /// `credentials.password.hook`: the password comes from the password import hook.
    pub password_hook: bool,
    pub recovery_question: Option<(String, String)>,
    pub group_ids: Vec<String>,
    pub activate: bool,
    /// `provider=true`: the user authenticates with an external provider.
    pub provider: bool,
    /// `nextLogin=changePassword`.
    pub expire_password: bool,
}

/// A change to an existing user (`POST` partial or `PUT` replace of `/api/v1/users/{id}`).
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub profile: Option<Map<String, Value>>,
    pub password: Option<String>,
    pub recovery_question: Option<(String, String)>,
    /// `PUT`: profile attributes not supplied are removed.
    pub replace: bool,
}

fn user_not_found(id: &str) -> ApiError {
    ApiError::not_found(id, "User")
}

fn normalize_profile(profile: &mut Map<String, Value>) {
    // Okta drops attributes set to null instead of storing nulls.
    profile.retain(|_, v| !v.is_null());
}

/// Creates a user.
pub async fn create_user(store: &Store, ctx: &EventContext, req: NewUser, now: Timestamp) -> Result<User, ApiError> {
    create_user_with_events(store, ctx, req, now, Vec::new()).await
}

/// Creates a user, committing `prior` events (what led to the creation, such as an inline
/// hook's call) in the same transaction, before the user's own events.
pub async fn create_user_with_events(
    store: &Store,
    ctx: &EventContext,
    mut req: NewUser,
    now: Timestamp,
    prior: Vec<LogEvent>,
) -> Result<User, ApiError> {
    normalize_profile(&mut req.profile);
    let schema = schema::load(store).await?;
    schema.validate_profile(&req.profile)?;
    if req.password.is_some() && req.password_hook {
        return Err(ApiError::validation(
            "credentials.password",
            "give either a password value or a password hook, not both",
        ));
    }
    let login = req.profile.get("login").and_then(Value::as_str).unwrap_or_default().to_owned();
    let password_hash = match req.password.take() {
        Some(pw) => {
            check_policy(&pw, &login)?;
            Some(hash_password(pw).await?)
        }
        None => None,
    };
    let (recovery_question, recovery_answer_hash) = match req.recovery_question.take() {
        Some((q, a)) => (Some(q), Some(hash_password(a.to_lowercase()).await?)),
        None => (None, None),
    };
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for gid in &req.group_ids {
        let g = store
            .get_group(gid)
            .await
            .map_err(|e| store_error(e, "Group", gid))?
            .ok_or_else(|| ApiError::validation("groupIds", format!("group {gid} does not exist")))?;
        groups.push(g);
    }
    let usable = password_hash.is_some() || req.password_hook || req.provider;
    let status = match (req.activate, usable) {
        (false, _) => UserStatus::Staged,
        (true, false) => UserStatus::Provisioned,
        (true, true) if req.expire_password => UserStatus::PasswordExpired,
        (true, true) => UserStatus::Active,
    };
    let user = User {
        id: new_id(IdKind::User),
        status,
        created: now,
        activated: req.activate.then_some(now),
        status_changed: (status != UserStatus::Staged).then_some(now),
        last_login: None,
        last_updated: now,
        password_changed: password_hash.as_ref().map(|_| now),
        type_id: DEFAULT_USER_TYPE.to_owned(),
        profile: req.profile,
        credentials: StoredCredentials {
            password_hash,
            password_hook: req.password_hook,
            recovery_question,
            recovery_answer_hash,
            provider_type: if req.provider { "FEDERATION" } else { "OKTA" }.to_owned(),
            provider_name: if req.provider { "FEDERATION" } else { "OKTA" }.to_owned(),
            activation_token_hash: None,
        },
        failed_sign_ins: 0,
    };
    let mut events = prior;
    events.push(ctx.user_event("user.lifecycle.create", "Create okta user", &user, now));
    if req.activate {
        events.push(ctx.user_event("user.lifecycle.activate", "Activate Okta user", &user, now));
    }
    for g in &groups {
        events.push(membership_event(ctx, "group.user_membership.add", "Add user to group membership", g, &user, now));
    }
    let group_ids: Vec<String> = groups.iter().map(|g| g.id.clone()).collect();
    store.insert_user(&user, &group_ids, &events).await.map_err(|e| match e {
        StoreError::MissingReference(g) => ApiError::validation("groupIds", format!("group {g} does not exist")),
        other => store_error(other, "User", &user.id),
    })?;
    Ok(user)
}

/// A user by id or login.
pub async fn get_user(store: &Store, id_or_login: &str) -> Result<User, ApiError> {
    store
        .get_user(id_or_login)
        .await
        .map_err(|e| store_error(e, "User", id_or_login))?
        .ok_or_else(|| user_not_found(id_or_login))
}

/// Names of attributes whose values differ between two profiles.
pub fn changed_attributes(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<String> {
    let mut names: Vec<String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(after.keys().filter(|k| !before.contains_key(*k)).cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Partial update or full replace of a user's profile and credentials.
pub async fn update_user(
    store: &Store,
    ctx: &EventContext,
    id: &str,
    req: UserUpdate,
    now: Timestamp,
) -> Result<User, ApiError> {
    update_user_with_events(store, ctx, id, req, now, Vec::new()).await
}

/// [`update_user`], committing `prior` events in the same transaction before the update's own
/// (they are written even when the update changes nothing).
pub async fn update_user_with_events(
    store: &Store,
    ctx: &EventContext,
    id: &str,
    mut req: UserUpdate,
    now: Timestamp,
    prior: Vec<LogEvent>,
) -> Result<User, ApiError> {
    if req.replace && req.profile.is_none() {
        return Err(ApiError::validation("profile", "The field cannot be left blank"));
    }
    let schema = schema::load(store).await?;
    // The common case — an id and no password — needs no read before the locked one.
    let existing = if req.password.is_none() && haken_core::id::looks_like(IdKind::User, id) {
        None
    } else {
        Some(get_user(store, id).await?)
    };
    let password_hash = match req.password.take() {
        Some(pw) => {
            let login = req
                .profile
                .as_ref()
                .and_then(|p| p.get("login"))
                .and_then(Value::as_str)
                .or(existing.as_ref().map(User::login))
                .unwrap_or_default()
                .to_owned();
            check_policy(&pw, &login)?;
            Some(hash_password(pw).await?)
        }
        None => None,
    };
    let recovery = match req.recovery_question.take() {
        Some((q, a)) => Some((q, hash_password(a.to_lowercase()).await?)),
        None => None,
    };
    let user_id = existing.map_or_else(|| id.to_owned(), |u| u.id);
    let ctx = ctx.clone();
    store
        .update_user::<FlowError, _>(&user_id, move |mut user| {
            let before = user.profile.clone();
            if let Some(profile) = &req.profile {
                let mut next = if req.replace { Map::new() } else { user.profile.clone() };
                // Attributes that left the schema are dropped at the next write.
                next.retain(|k, _| schema.attribute(k).is_some());
                for (k, v) in profile {
                    if v.is_null() {
                        next.remove(k);
                    } else {
                        next.insert(k.clone(), v.clone());
                    }
                }
                schema.validate_profile(&next)?;
                user.profile = next;
            }
            let changed = changed_attributes(&before, &user.profile);
            let mut events = prior.clone();
            let prior_len = events.len();
            if !changed.is_empty() {
                let from: Map<String, Value> =
                    changed.iter().map(|k| (k.clone(), before.get(k).cloned().unwrap_or(Value::Null))).collect();
                let to: Map<String, Value> =
                    changed.iter().map(|k| (k.clone(), user.profile.get(k).cloned().unwrap_or(Value::Null))).collect();
                let target = Target::user(&user).with_change_details(Value::Object(from), Value::Object(to));
                events.push(
                    ctx.event("user.account.update_profile", "Update user profile for Okta", now)
                        .with_target(target)
                        .with_debug("changedAttributes", Value::String(changed.join(","))),
                );
            }
            if let Some(hash) = password_hash.clone() {
                user.credentials.password_hash = Some(hash);
                user.credentials.password_hook = false;
                user.password_changed = Some(now);
                if user.status == UserStatus::PasswordExpired {
                    user.status = UserStatus::Active;
                    user.status_changed = Some(now);
                }
                events.push(ctx.user_event(
                    "user.account.update_password",
                    "User update password for Okta",
                    &user,
                    now,
                ));
            }
            let recovery_changed = recovery.is_some();
            if let Some((q, a)) = recovery.clone() {
                user.credentials.recovery_question = Some(q);
                user.credentials.recovery_answer_hash = Some(a);
            }
            if events.len() == prior_len && !recovery_changed {
                if prior_len == 0 {
                    return Ok(None);
                }
                // Nothing changed, but the events that led here are still written.
                return Ok(Some(Change { value: user, events }));
            }
            user.last_updated = now;
            Ok(Some(Change { value: user, events }))
        })
        .await
        .map_err(|e| flow_error(e, "User", id))
}

/// The result of a lifecycle operation.
#[derive(Debug, Clone)]
pub struct LifecycleOutcome {
    pub user: User,
    /// For activate and reactivate: a fresh activation token (only its hash is stored).
    pub activation_token: Option<String>,
}

/// A lifecycle operation (`/lifecycle/activate`, `/suspend`, ...).
pub async fn lifecycle(
    store: &Store,
    ctx: &EventContext,
    id: &str,
    op: Lifecycle,
    now: Timestamp,
) -> Result<LifecycleOutcome, ApiError> {
    let existing = get_user(store, id).await?;
    let ctx = ctx.clone();
    let token = matches!(op, Lifecycle::Activate | Lifecycle::Reactivate).then(|| random_base62(20));
    let token_hash = token.as_deref().map(haken_core::token::hash_token);
    let user = store
        .update_user::<FlowError, _>(&existing.id, move |mut user| match apply_lifecycle(&mut user, op, now)? {
            Transition::Unchanged => Ok(None),
            Transition::Changed => {
                if token_hash.is_some() {
                    user.credentials.activation_token_hash = token_hash.clone();
                }
                let event = ctx.user_event(op.event_type(), op.verb(), &user, now);
                Ok(Some(Change { value: user, events: vec![event] }))
            }
        })
        .await
        .map_err(|e| flow_error(e, "User", id))?;
    Ok(LifecycleOutcome { user, activation_token: token })
}

/// What `DELETE /api/v1/users/{id}` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// First call: the user was deactivated.
    Deactivated,
    /// Second call: the user is gone.
    Deleted,
}

/// Okta's two-step delete: deactivate a user that is not yet deprovisioned, else delete it.
pub async fn delete_user(store: &Store, ctx: &EventContext, id: &str, now: Timestamp) -> Result<Deletion, ApiError> {
    let user = get_user(store, id).await?;
    if user.status != UserStatus::Deprovisioned {
        lifecycle(store, ctx, &user.id, Lifecycle::Deactivate, now).await?;
        return Ok(Deletion::Deactivated);
    }
    let ctx = ctx.clone();
    store
        .delete_user::<FlowError, _>(&user.id, move |user| {
            if user.status != UserStatus::Deprovisioned {
                // Reactivated between our read and the lock: do not delete an active user.
                return Err(ApiError::new(haken_core::ErrorCode::WrongStatus).into());
            }
            Ok(vec![
                ctx.user_event("user.lifecycle.delete.initiated", "Delete Okta user initiated", user, now),
                ctx.user_event("user.lifecycle.delete.completed", "Delete Okta user completed", user, now),
            ])
        })
        .await
        .map_err(|e| flow_error(e, "User", id))?;
    Ok(Deletion::Deleted)
}

// ---- groups ----

fn validate_group_profile(profile: &Map<String, Value>) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    match profile.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.chars().count() <= 255 => {}
        Some(Value::String(_)) => causes.push("name: must be 1 to 255 characters".to_owned()),
        Some(_) => causes.push("name: Expected a value of type string".to_owned()),
        None => causes.push("name: The field cannot be left blank".to_owned()),
    }
    match profile.get("description") {
        None | Some(Value::Null) => {}
        Some(Value::String(d)) if d.chars().count() <= 1024 => {}
        Some(Value::String(_)) => causes.push("description: must be at most 1024 characters".to_owned()),
        Some(_) => causes.push("description: Expected a value of type string".to_owned()),
    }
    for k in profile.keys() {
        if k != "name" && k != "description" {
            causes.push(format!("{k}: Property name '{k}' is not defined in the group profile schema"));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        let fields: Vec<&str> = causes.iter().filter_map(|c| c.split(':').next()).collect();
        Err(ApiError::validation_many(&fields.join(", "), causes))
    }
}

/// Creates an `OKTA_GROUP`.
pub async fn create_group(
    store: &Store,
    ctx: &EventContext,
    mut profile: Map<String, Value>,
    now: Timestamp,
) -> Result<Group, ApiError> {
    normalize_profile(&mut profile);
    validate_group_profile(&profile)?;
    let group = Group {
        id: new_id(IdKind::Group),
        created: now,
        last_updated: now,
        last_membership_updated: now,
        group_type: "OKTA_GROUP".to_owned(),
        profile,
    };
    let event = ctx.group_event("group.lifecycle.create", "Create okta group", &group, now);
    store.insert_group(&group, &[event]).await.map_err(|e| store_error(e, "Group", &group.id))?;
    Ok(group)
}

pub async fn get_group(store: &Store, id: &str) -> Result<Group, ApiError> {
    store.get_group(id).await.map_err(|e| store_error(e, "Group", id))?.ok_or_else(|| ApiError::not_found(id, "Group"))
}

/// Replaces a group's profile.
pub async fn replace_group(
    store: &Store,
    ctx: &EventContext,
    id: &str,
    mut profile: Map<String, Value>,
    now: Timestamp,
) -> Result<Group, ApiError> {
    normalize_profile(&mut profile);
    validate_group_profile(&profile)?;
    let ctx = ctx.clone();
    store
        .update_group::<FlowError, _>(id, move |mut group| {
            if group.group_type != "OKTA_GROUP" {
                return Err(ApiError::validation("type", "only OKTA_GROUP profiles can be changed").into());
            }
            if group.profile == profile {
                return Ok(None);
            }
            let changed = changed_attributes(&group.profile, &profile);
            group.profile = profile;
            group.last_updated = now;
            let event = ctx
                .group_event("group.profile.update", "Update group profile", &group, now)
                .with_debug("changedAttributes", Value::String(changed.join(",")));
            Ok(Some(Change { value: group, events: vec![event] }))
        })
        .await
        .map_err(|e| flow_error(e, "Group", id))
}

pub async fn delete_group(store: &Store, ctx: &EventContext, id: &str, now: Timestamp) -> Result<(), ApiError> {
    let ctx = ctx.clone();
    store
        .delete_group::<FlowError, _>(id, move |group| {
            if group.group_type == "BUILT_IN" {
                return Err(ApiError::validation("type", "built-in groups cannot be deleted").into());
            }
            Ok(vec![ctx.group_event("group.lifecycle.delete", "Delete Okta group", group, now)])
        })
        .await
        .map_err(|e| flow_error(e, "Group", id))
}

fn membership_event(
    ctx: &EventContext,
    event_type: &str,
    message: &str,
    group: &Group,
    user: &User,
    now: Timestamp,
) -> LogEvent {
    ctx.event(event_type, message, now).with_target(Target::user(user)).with_target(Target::group(group))
}

fn membership_error(e: FlowError, group_id: &str) -> ApiError {
    match e {
        FlowError::Store(StoreError::MissingReference(user_id)) => user_not_found(&user_id),
        other => flow_error(other, "Group", group_id),
    }
}

/// The check and events of a membership change: only `OKTA_GROUP` memberships are ours to edit.
fn membership_change(
    ctx: &EventContext,
    event_type: &'static str,
    message: &'static str,
    now: Timestamp,
) -> impl FnOnce(&Group, &User) -> Result<Vec<LogEvent>, FlowError> + Send + use<> {
    let ctx = ctx.clone();
    move |group, user| {
        if group.group_type != "OKTA_GROUP" {
            return Err(ApiError::validation("type", "memberships of this group are managed by its source").into());
        }
        Ok(vec![membership_event(&ctx, event_type, message, group, user, now)])
    }
}

/// Adds a user to a group (no-op when already a member).
pub async fn add_member(
    store: &Store,
    ctx: &EventContext,
    group_id: &str,
    user_id: &str,
    now: Timestamp,
) -> Result<(), ApiError> {
    let change = membership_change(ctx, "group.user_membership.add", "Add user to group membership", now);
    store.add_member(group_id, user_id, now.millis(), change).await.map_err(|e| membership_error(e, group_id))?;
    Ok(())
}

/// Removes a user from a group (no-op when not a member).
pub async fn remove_member(
    store: &Store,
    ctx: &EventContext,
    group_id: &str,
    user_id: &str,
    now: Timestamp,
) -> Result<(), ApiError> {
    let change = membership_change(ctx, "group.user_membership.remove", "Remove user from group membership", now);
    store.remove_member(group_id, user_id, now.millis(), change).await.map_err(|e| membership_error(e, group_id))?;
    Ok(())
}
