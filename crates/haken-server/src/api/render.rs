//! Wire bodies of the management API, built from the domain types. Domain types are not the
//! wire types: what a client sees is decided here (and secrets never get here).

use haken_core::{Group, User, UserStatus};
use serde_json::{Map, Value, json};

fn href(base: &str, path: &str) -> Value {
    json!({ "href": format!("{base}{path}") })
}

fn href_post(base: &str, path: &str) -> Value {
    json!({ "href": format!("{base}{path}"), "method": "POST" })
}

/// A user as `/api/v1/users` returns it.
pub fn user(u: &User, base: &str) -> Value {
    let mut credentials = Map::new();
    if u.credentials.password_hash.is_some() || u.credentials.password_hook {
        credentials.insert("password".into(), json!({}));
    }
    if let Some(q) = &u.credentials.recovery_question {
        credentials.insert("recovery_question".into(), json!({ "question": q }));
    }
    credentials
        .insert("provider".into(), json!({ "type": u.credentials.provider_type, "name": u.credentials.provider_name }));
    json!({
        "id": u.id,
        "status": u.status.as_str(),
        "created": u.created,
        "activated": u.activated,
        "statusChanged": u.status_changed,
        "lastLogin": u.last_login,
        "lastUpdated": u.last_updated,
        "passwordChanged": u.password_changed,
        "type": { "id": u.type_id },
        "profile": u.profile,
        "credentials": credentials,
        "_links": user_links(u, base),
    })
}

fn user_links(u: &User, base: &str) -> Value {
    let id = &u.id;
    let lc = |op: &str| href_post(base, &format!("/api/v1/users/{id}/lifecycle/{op}"));
    let mut links = Map::new();
    links.insert("self".into(), href(base, &format!("/api/v1/users/{id}")));
    links.insert("schema".into(), href(base, "/api/v1/meta/schemas/user/default"));
    links.insert("type".into(), href(base, &format!("/api/v1/meta/types/user/{}", u.type_id)));
    match u.status {
        UserStatus::Staged => {
            links.insert("activate".into(), lc("activate"));
        }
        UserStatus::Provisioned | UserStatus::Recovery => {
            links.insert("reactivate".into(), lc("reactivate"));
        }
        UserStatus::Active | UserStatus::PasswordExpired => {
            links.insert("suspend".into(), lc("suspend"));
            if u.credentials.password_hash.is_some() {
                links.insert("expirePassword".into(), lc("expire_password"));
            }
        }
        UserStatus::Suspended => {
            links.insert("unsuspend".into(), lc("unsuspend"));
        }
        UserStatus::LockedOut => {
            links.insert("unlock".into(), lc("unlock"));
        }
        UserStatus::Deprovisioned => {
            links.insert("activate".into(), lc("activate"));
        }
    }
    if u.status != UserStatus::Deprovisioned {
        links.insert("deactivate".into(), lc("deactivate"));
    }
    Value::Object(links)
}

/// A group as `/api/v1/groups` returns it.
pub fn group(g: &Group, base: &str) -> Value {
    let id = &g.id;
    json!({
        "id": id,
        "created": g.created,
        "lastUpdated": g.last_updated,
        "lastMembershipUpdated": g.last_membership_updated,
        "objectClass": ["okta:user_group"],
        "type": g.group_type,
        "profile": g.profile,
        "_links": {
            "logo": [
                { "name": "medium", "href": format!("{base}/img/logos/groups/okta-medium.png"), "type": "image/png" },
                { "name": "large", "href": format!("{base}/img/logos/groups/okta-large.png"), "type": "image/png" }
            ],
            "users": href(base, &format!("/api/v1/groups/{id}/users")),
            "apps": href(base, &format!("/api/v1/groups/{id}/apps")),
        },
    })
}
