//! Loading and changing the user profile schema, kept in the store's settings as the custom
//! attribute definitions (the base attributes are fixed).

use std::sync::{Arc, Mutex};

use haken_core::schema::{Attribute, UserSchema};
use haken_core::{ApiError, Timestamp};
use haken_store::{Change, Store};
use serde_json::{Map, Value, json};

use crate::{FlowError, flow_error, store_error};

const KEY: &str = "user_schema";

fn from_setting(v: Option<Value>) -> UserSchema {
    let v = v.unwrap_or(Value::Null);
    let custom = v.get("custom").and_then(Value::as_object).cloned().unwrap_or_default();
    let created = v.get("created").and_then(Value::as_i64).map(Timestamp).unwrap_or_default();
    let updated = v.get("lastUpdated").and_then(Value::as_i64).map(Timestamp).unwrap_or(created);
    UserSchema::from_custom_definitions(&custom, created, updated)
}

/// The current schema. Most requests read it, so the last one built is kept with the stored
/// text it came from and built again only when that text changes.
pub async fn load(store: &Store) -> Result<Arc<UserSchema>, ApiError> {
    static LAST: Mutex<Option<(Option<String>, Arc<UserSchema>)>> = Mutex::new(None);
    let raw = store.get_setting(KEY).await.map_err(|e| store_error(e, "UserSchema", "default"))?;
    if let Ok(last) = LAST.lock()
        && let Some((text, schema)) = last.as_ref()
        && *text == raw
    {
        return Ok(Arc::clone(schema));
    }
    let value = raw.as_deref().and_then(|s| serde_json::from_str(s).ok());
    let schema = Arc::new(from_setting(value));
    if let Ok(mut last) = LAST.lock() {
        *last = Some((raw, Arc::clone(&schema)));
    }
    Ok(schema)
}

/// Applies a schema document as `POST /api/v1/meta/schemas/user/default` takes it: each
/// property under `definitions.custom.properties` is added or replaced; a property set to
/// `null` is removed. Base attributes cannot be redefined.
pub async fn update(store: &Store, body: &Value, now: Timestamp) -> Result<UserSchema, ApiError> {
    let props = body
        .pointer("/definitions/custom/properties")
        .map(|p| {
            p.as_object()
                .cloned()
                .ok_or_else(|| ApiError::validation("definitions.custom.properties", "must be an object"))
        })
        .transpose()?
        .unwrap_or_default();
    if let Some(base) = body.pointer("/definitions/base/properties").and_then(Value::as_object)
        && !base.is_empty()
    {
        return Err(ApiError::validation("definitions.base", "base attributes cannot be changed"));
    }
    // Validate every definition before touching the store.
    let base_names: Vec<String> = haken_core::schema::base_attributes().into_iter().map(|a| a.name).collect();
    for (name, def) in &props {
        if base_names.iter().any(|b| b == name) {
            return Err(ApiError::validation(
                &format!("definitions.custom.properties.{name}"),
                "a base attribute of that name exists",
            ));
        }
        if !def.is_null() {
            Attribute::from_definition(name, def)?;
        }
    }
    let result = store
        .update_setting::<FlowError, _>(KEY, move |current| {
            let current = current.unwrap_or(Value::Null);
            let mut custom: Map<String, Value> =
                current.get("custom").and_then(Value::as_object).cloned().unwrap_or_default();
            let created = current.get("created").and_then(Value::as_i64).unwrap_or(now.millis());
            for (name, def) in props {
                if def.is_null() {
                    custom.remove(&name);
                } else {
                    custom.insert(name, def);
                }
            }
            Ok(Change {
                value: json!({ "custom": custom, "created": created, "lastUpdated": now.millis() }),
                events: Vec::new(),
            })
        })
        .await
        .map_err(|e| flow_error(e, "UserSchema", "default"))?;
    Ok(from_setting(Some(result)))
}
