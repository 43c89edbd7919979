//! Wire bodies of the management API, built from the domain types. Domain types are not the
//! wire types: what a client sees is decided here (and secrets never get here).

use haken_core::{Group, Timestamp, User, UserStatus};
use serde::Serialize;
use serde_json::{Map, Value, json};

fn href(base: &str, path: &str) -> Value {
    json!({ "href": format!("{base}{path}") })
}

/// A user as `/api/v1/users` returns it.
pub fn user(u: &User, base: &str) -> Value {
    serde_json::to_value(UserView::new(u, base)).unwrap_or(Value::Null)
}

/// A user's wire body, serialized straight to text (a single user's answer) or into a
/// [`Value`] by [`user`]. Fields are declared in the order serde_json's maps sort keys, so
/// both give the same text.
#[derive(Serialize)]
pub struct UserView<'a> {
    #[serde(rename = "_links")]
    links: Links,
    activated: Option<Timestamp>,
    created: Timestamp,
    credentials: CredentialsView<'a>,
    id: &'a str,
    #[serde(rename = "lastLogin")]
    last_login: Option<Timestamp>,
    #[serde(rename = "lastUpdated")]
    last_updated: Timestamp,
    #[serde(rename = "passwordChanged")]
    password_changed: Option<Timestamp>,
    profile: &'a Map<String, Value>,
    status: &'static str,
    #[serde(rename = "statusChanged")]
    status_changed: Option<Timestamp>,
    #[serde(rename = "type")]
    user_type: TypeRef<'a>,
}

#[derive(Serialize)]
struct CredentialsView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<Empty>,
    provider: Provider<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_question: Option<Question<'a>>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Provider<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    provider_type: &'a str,
}

#[derive(Serialize)]
struct Question<'a> {
    question: &'a str,
}

#[derive(Serialize)]
struct TypeRef<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct Link {
    href: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'static str>,
}

/// Named links, written in key order.
struct Links(Vec<(&'static str, Link)>);

impl Serialize for Links {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'a> UserView<'a> {
    pub fn new(u: &'a User, base: &str) -> Self {
        let c = &u.credentials;
        UserView {
            links: user_links(u, base),
            activated: u.activated,
            created: u.created,
            credentials: CredentialsView {
                password: (c.password_hash.is_some() || c.password_hook).then_some(Empty {}),
                provider: Provider { name: &c.provider_name, provider_type: &c.provider_type },
                recovery_question: c.recovery_question.as_deref().map(|question| Question { question }),
            },
            id: &u.id,
            last_login: u.last_login,
            last_updated: u.last_updated,
            password_changed: u.password_changed,
            profile: &u.profile,
            status: u.status.as_str(),
            status_changed: u.status_changed,
            user_type: TypeRef { id: &u.type_id },
        }
    }
}

fn user_links(u: &User, base: &str) -> Links {
    let id = &u.id;
    let get = |path: &str| Link { href: format!("{base}{path}"), method: None };
    let lc = |op: &str| Link { href: format!("{base}/api/v1/users/{id}/lifecycle/{op}"), method: Some("POST") };
    let mut links = vec![
        ("self", get(&format!("/api/v1/users/{id}"))),
        ("schema", get("/api/v1/meta/schemas/user/default")),
        ("type", get(&format!("/api/v1/meta/types/user/{}", u.type_id))),
    ];
    match u.status {
        UserStatus::Staged | UserStatus::Deprovisioned => links.push(("activate", lc("activate"))),
        UserStatus::Provisioned | UserStatus::Recovery => links.push(("reactivate", lc("reactivate"))),
        UserStatus::Active | UserStatus::PasswordExpired => {
            links.push(("suspend", lc("suspend")));
            if u.credentials.password_hash.is_some() {
                links.push(("expirePassword", lc("expire_password")));
            }
        }
        UserStatus::Suspended => links.push(("unsuspend", lc("unsuspend"))),
        UserStatus::LockedOut => links.push(("unlock", lc("unlock"))),
    }
    if u.status != UserStatus::Deprovisioned {
        links.push(("deactivate", lc("deactivate")));
    }
    links.sort_unstable_by_key(|(k, _)| *k);
    Links(links)
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

#[cfg(test)]
mod tests {
    use super::*;
    use haken_core::user::StoredCredentials;

    fn sample(status: UserStatus, password: bool, question: bool) -> User {
        sample_with(status, password, false, question)
    }

    fn sample_with(status: UserStatus, password: bool, hook: bool, question: bool) -> User {
        let mut profile = Map::new();
        profile.insert("login".into(), json!("ann@example.org"));
        profile.insert("firstName".into(), json!("Ann \"A\" \u{e9}"));
        profile.insert("nickName".into(), Value::Null);
        User {
            id: "00uAnn".into(),
            status,
            created: Timestamp(1_700_000_000_000),
            activated: password.then_some(Timestamp(1_700_000_000_500)),
            status_changed: None,
            last_login: None,
            last_updated: Timestamp(1_700_000_001_000),
            password_changed: password.then_some(Timestamp(1_700_000_000_250)),
            type_id: "otyDefault".into(),
            profile,
            credentials: StoredCredentials {
                password_hash: password.then(|| "$argon2id$...".to_owned()),
                password_hook: hook,
                recovery_question: question.then(|| "Who?".to_owned()),
                recovery_answer_hash: question.then(|| "secret-answer-hash".to_owned()),
                provider_type: "IMPORT".into(),
                provider_name: "legacy".into(),
                ..Default::default()
            },
            failed_sign_ins: 0,
        }
    }

    #[test]
    fn a_user_renders_as_the_api_documents_it() {
        let u = sample(UserStatus::Active, true, true);
        let text = serde_json::to_string(&UserView::new(&u, "https://h.example")).expect("text");
        let b = "https://h.example/api/v1/users/00uAnn";
        let expected = format!(
            concat!(
                r#"{{"_links":{{"deactivate":{{"href":"{b}/lifecycle/deactivate","method":"POST"}},"#,
                r#""expirePassword":{{"href":"{b}/lifecycle/expire_password","method":"POST"}},"#,
                r#""schema":{{"href":"https://h.example/api/v1/meta/schemas/user/default"}},"self":{{"href":"{b}"}},"#,
                r#""suspend":{{"href":"{b}/lifecycle/suspend","method":"POST"}},"#,
                r#""type":{{"href":"https://h.example/api/v1/meta/types/user/otyDefault"}}}},"#,
                r#""activated":"2023-11-14T22:13:20.500Z","created":"2023-11-14T22:13:20.000Z","#,
                r#""credentials":{{"password":{{}},"provider":{{"name":"legacy","type":"IMPORT"}},"recovery_question":{{"question":"Who?"}}}},"#,
                r#""id":"00uAnn","lastLogin":null,"lastUpdated":"2023-11-14T22:13:21.000Z","#,
                r#""passwordChanged":"2023-11-14T22:13:20.250Z","#,
                r#""profile":{{"firstName":"Ann \"A\" é","login":"ann@example.org","nickName":null}},"#,
                r#""status":"ACTIVE","statusChanged":null,"type":{{"id":"otyDefault"}}}}"#
            ),
            b = b
        );
        assert_eq!(text, expected);
        assert!(!text.contains("argon2") && !text.contains("secret-answer"), "no secret is rendered");
    }

    /// The answer as it was first built, key by key, as a JSON tree: the reference the view
    /// is held to.
    fn reference(u: &User, base: &str) -> Value {
        let mut credentials = Map::new();
        if u.credentials.password_hash.is_some() || u.credentials.password_hook {
            credentials.insert("password".into(), json!({}));
        }
        if let Some(q) = &u.credentials.recovery_question {
            credentials.insert("recovery_question".into(), json!({ "question": q }));
        }
        credentials.insert(
            "provider".into(),
            json!({ "type": u.credentials.provider_type, "name": u.credentials.provider_name }),
        );
        let id = &u.id;
        let get = |path: &str| json!({ "href": format!("{base}{path}") });
        let lc = |op: &str| json!({ "href": format!("{base}/api/v1/users/{id}/lifecycle/{op}"), "method": "POST" });
        let mut links = Map::new();
        links.insert("self".into(), get(&format!("/api/v1/users/{id}")));
        links.insert("schema".into(), get("/api/v1/meta/schemas/user/default"));
        links.insert("type".into(), get(&format!("/api/v1/meta/types/user/{}", u.type_id)));
        let ops: &[&str] = match u.status {
            UserStatus::Staged | UserStatus::Deprovisioned => &["activate"],
            UserStatus::Provisioned | UserStatus::Recovery => &["reactivate"],
            UserStatus::Active | UserStatus::PasswordExpired if u.credentials.password_hash.is_some() => {
                &["suspend", "expirePassword"]
            }
            UserStatus::Active | UserStatus::PasswordExpired => &["suspend"],
            UserStatus::Suspended => &["unsuspend"],
            UserStatus::LockedOut => &["unlock"],
        };
        for op in ops {
            let path = if *op == "expirePassword" { "expire_password" } else { op };
            links.insert((*op).into(), lc(path));
        }
        if u.status != UserStatus::Deprovisioned {
            links.insert("deactivate".into(), lc("deactivate"));
        }
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
            "_links": links,
        })
    }

    #[test]
    fn the_value_and_the_direct_text_agree_for_every_status() {
        for status in UserStatus::ALL {
            for (password, hook, question) in [
                (false, false, false),
                (true, false, false),
                (false, true, false),
                (false, false, true),
                (true, false, true),
            ] {
                let u = sample_with(status, password, hook, question);
                let expected = serde_json::to_string(&reference(&u, "http://127.0.0.1:1")).expect("text");
                let view = UserView::new(&u, "http://127.0.0.1:1");
                let direct = serde_json::to_string(&view).expect("text");
                // A `Value` keeps its keys sorted: the same text means the fields are declared
                // in that order.
                let via_value = serde_json::to_string(&user(&u, "http://127.0.0.1:1")).expect("text");
                assert_eq!(direct, expected, "{status:?} password={password} hook={hook} question={question}");
                assert_eq!(via_value, expected, "{status:?} password={password} hook={hook} question={question}");
                assert_eq!(hook || password, direct.contains(r#""password":{}"#), "{status:?}");
                let links = serde_json::from_str::<Value>(&direct).expect("json")["_links"].clone();
                let has = |k: &str| links.get(k).is_some();
                assert_eq!(has("deactivate"), status != UserStatus::Deprovisioned, "{status:?}");
                assert_eq!(
                    has("activate"),
                    matches!(status, UserStatus::Staged | UserStatus::Deprovisioned),
                    "{status:?}"
                );
                assert_eq!(
                    has("expirePassword"),
                    password && matches!(status, UserStatus::Active | UserStatus::PasswordExpired)
                );
            }
        }
    }
}
