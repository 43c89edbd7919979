//! Applications: create, replace, activate, deactivate and delete (only inactive apps, as in
//! Okta), each with its `application.lifecycle.*` event, and the checks on an app's import
//! settings (the hook exists and is a user import hook, mapped attributes are in the profile
//! schema).

use haken_core::app::{App, AppStatus, ImportSettings, SIGN_ON_MODES};
use haken_core::id::{IdKind, new_id};
use haken_core::inline_hook::{InlineHook, InlineHookType};
use haken_core::log_event::{EventContext, LogEvent, Target};
use haken_core::{ApiError, Timestamp};
use haken_store::{Change, Store};
use serde_json::{Map, Value};

use crate::{FlowError, flow_error, schema, store_error};

/// What a client gives for an app (create and replace).
#[derive(Debug, Clone, Default)]
pub struct AppInput {
    pub name: String,
    pub label: String,
    pub sign_on_mode: String,
    pub features: Vec<String>,
    /// `settings` without `settings.import`.
    pub settings: Map<String, Value>,
    pub import: Option<ImportSettings>,
    pub profile: Map<String, Value>,
}

/// The System Log target of an app (Okta's `AppInstance`).
pub fn app_target(app: &App) -> Target {
    Target {
        id: app.id.clone(),
        kind: "AppInstance".to_owned(),
        alternate_id: Some(app.label.clone()),
        display_name: Some(app.label.clone()),
        detail_entry: None,
        change_details: None,
    }
}

fn app_event(ctx: &EventContext, event_type: &str, message: &str, app: &App, now: Timestamp) -> LogEvent {
    ctx.event(event_type, message, now).with_target(app_target(app))
}

async fn check(store: &Store, input: &AppInput) -> Result<(), ApiError> {
    let name_ok = !input.name.is_empty()
        && input.name.len() <= 100
        && input.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !name_ok {
        return Err(ApiError::validation("name", "must be 1 to 100 characters of a-z, 0-9 and _ (the app type key)"));
    }
    let label = input.label.trim();
    if label.is_empty() || label.chars().count() > 100 {
        return Err(ApiError::validation("label", "must be 1 to 100 characters"));
    }
    if !SIGN_ON_MODES.contains(&input.sign_on_mode.as_str()) {
        return Err(ApiError::validation(
            "signOnMode",
            format!("'{}' is not a sign-on mode (one of {})", input.sign_on_mode, SIGN_ON_MODES.join(", ")),
        ));
    }
    if let Some(imp) = &input.import {
        check_import(store, imp).await?;
    }
    Ok(())
}

/// Checks `settings.import` against the hooks and the profile schema.
pub async fn check_import(store: &Store, imp: &ImportSettings) -> Result<(), ApiError> {
    if let Some(hook_id) = &imp.inline_hook_id {
        let hook: Option<InlineHook> =
            store.get_doc(hook_id).await.map_err(|e| store_error(e, "InlineHook", hook_id))?;
        match hook {
            None => {
                return Err(ApiError::validation(
                    "settings.import.inlineHookId",
                    format!("inline hook {hook_id} does not exist"),
                ));
            }
            Some(h) if h.hook_type != InlineHookType::Import => {
                return Err(ApiError::validation(
                    "settings.import.inlineHookId",
                    format!(
                        "inline hook {hook_id} has type {}; an import hook has type {}",
                        h.hook_type.as_str(),
                        InlineHookType::Import.as_str()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if imp.matching.is_empty() {
        return Err(ApiError::validation("settings.import.matching", "name at least one matching rule"));
    }
    for (i, r) in imp.matching.iter().enumerate() {
        if imp.matching[..i].contains(r) {
            return Err(ApiError::validation("settings.import.matching", format!("{} is listed twice", r.as_str())));
        }
    }
    let schema = schema::load(store).await?;
    for (attr, column) in &imp.mapping {
        if attr == "password" || schema.attribute(attr).is_none() {
            return Err(ApiError::validation(
                "settings.import.mapping",
                format!("'{attr}' is not an attribute of the user profile schema"),
            ));
        }
        if column.trim().is_empty() {
            return Err(ApiError::validation(
                "settings.import.mapping",
                format!("the source column of '{attr}' is empty"),
            ));
        }
    }
    Ok(())
}

/// Creates an app, `ACTIVE` unless `activate` is false.
pub async fn create_app(
    store: &Store,
    ctx: &EventContext,
    input: AppInput,
    activate: bool,
    now: Timestamp,
) -> Result<App, ApiError> {
    check(store, &input).await?;
    let app = App {
        id: new_id(IdKind::App),
        name: input.name,
        label: input.label.trim().to_owned(),
        status: if activate { AppStatus::Active } else { AppStatus::Inactive },
        sign_on_mode: input.sign_on_mode,
        created: now,
        last_updated: now,
        features: input.features,
        settings: input.settings,
        profile: input.profile,
        import: input.import,
    };
    let mut events = vec![app_event(ctx, "application.lifecycle.create", "Add application", &app, now)];
    if activate {
        events.push(app_event(ctx, "application.lifecycle.activate", "Activate application", &app, now));
    }
    store.insert_doc(&app, &events).await.map_err(|e| store_error(e, "App", &app.id))?;
    Ok(app)
}

pub async fn get_app(store: &Store, id: &str) -> Result<App, ApiError> {
    store.get_doc::<App>(id).await.map_err(|e| store_error(e, "App", id))?.ok_or_else(|| ApiError::not_found(id, "App"))
}

/// Replaces an app's label, features, settings and profile. The name (the app type) and the
/// sign-on mode are fixed at creation.
pub async fn replace_app(
    store: &Store,
    ctx: &EventContext,
    id: &str,
    input: AppInput,
    now: Timestamp,
) -> Result<App, ApiError> {
    let current = get_app(store, id).await?;
    if input.name != current.name {
        return Err(ApiError::validation("name", "the app type of an app cannot be changed"));
    }
    if input.sign_on_mode != current.sign_on_mode {
        return Err(ApiError::validation("signOnMode", "the sign-on mode of an app cannot be changed"));
    }
    check(store, &input).await?;
    let ctx = ctx.clone();
    store
        .update_doc::<App, FlowError, _>(id, move |mut app| {
            app.label = input.label.trim().to_owned();
            app.features = input.features;
            app.settings = input.settings;
            app.profile = input.profile;
            app.import = input.import;
            app.last_updated = now;
            let ev = app_event(&ctx, "application.lifecycle.update", "Update application", &app, now);
            Ok(Some(Change { value: app, events: vec![ev] }))
        })
        .await
        .map_err(|e| flow_error(e, "App", id))
}

/// Activates or deactivates an app; no change (and no event) when it already has that status.
pub async fn set_status(
    store: &Store,
    ctx: &EventContext,
    id: &str,
    active: bool,
    now: Timestamp,
) -> Result<App, ApiError> {
    let ctx = ctx.clone();
    let status = if active { AppStatus::Active } else { AppStatus::Inactive };
    store
        .update_doc::<App, FlowError, _>(id, move |mut app| {
            if app.status == status {
                return Ok(None);
            }
            app.status = status;
            app.last_updated = now;
            let (t, m) = if active {
                ("application.lifecycle.activate", "Activate application")
            } else {
                ("application.lifecycle.deactivate", "Deactivate application")
            };
            let ev = app_event(&ctx, t, m, &app, now);
            Ok(Some(Change { value: app, events: vec![ev] }))
        })
        .await
        .map_err(|e| flow_error(e, "App", id))
}

/// Deletes an inactive app (Okta refuses to delete an active one).
pub async fn delete_app(store: &Store, ctx: &EventContext, id: &str, now: Timestamp) -> Result<(), ApiError> {
    if crate::import::is_running(id) {
        return Err(ApiError::validation("id", "an import of this app is running; wait for it to finish"));
    }
    let ctx = ctx.clone();
    store
        .delete_doc::<App, FlowError, _>(id, move |app| {
            if app.status != AppStatus::Inactive {
                return Err(ApiError::validation(
                    "status",
                    "only an INACTIVE app can be deleted; deactivate it first (lifecycle/deactivate)",
                )
                .into());
            }
            Ok(vec![app_event(&ctx, "application.lifecycle.delete", "Delete application", app, now)])
        })
        .await
        .map_err(|e| flow_error(e, "App", id))
}
