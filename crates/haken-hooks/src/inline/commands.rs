//! Command validation per hook type (spec 4.1–4.3): which commands a type allows, what their
//! values must look like, and the effect a valid answer has. A validator either returns the
//! whole effect or says precisely why the answer cannot be applied (which command, which
//! field, what was expected); nothing of an invalid answer is ever applied.

use haken_core::schema::UserSchema;
use serde_json::{Map, Value};

use super::{HookError, HookResponse};

/// `requestType` of a registration hook call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationKind {
    /// `self.service.registration`.
    SelfService,
    /// `progressive.profile`.
    Progressive,
}

impl RegistrationKind {
    pub fn request_type(self) -> &'static str {
        match self {
            RegistrationKind::SelfService => "self.service.registration",
            RegistrationKind::Progressive => "progressive.profile",
        }
    }

    fn update_command(self) -> &'static str {
        match self {
            RegistrationKind::SelfService => "com.okta.user.profile.update",
            RegistrationKind::Progressive => "com.okta.user.progressive.profile.update",
        }
    }
}

/// What a registration hook decided.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationEffect {
    pub allow: bool,
    /// Attributes to set, in the order the handler gave them.
    pub profile: Map<String, Value>,
    /// The handler's `error` object: the registration fails and its causes reach the user.
    pub error: Option<HookError>,
}

fn command_value_object<'a>(i: usize, kind: &str, value: &'a Value) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("commands[{i}] ({kind}): value must be an object of attribute names to values"))
}

fn check_attributes(
    i: usize,
    kind: &str,
    attrs: &Map<String, Value>,
    schema: &UserSchema,
    out: &mut Map<String, Value>,
) -> Result<(), String> {
    for (name, v) in attrs {
        if name == "password" {
            return Err(format!("commands[{i}] ({kind}): the password cannot be set by a hook"));
        }
        let Some(attr) = schema.attribute(name) else {
            return Err(format!(
                "commands[{i}] ({kind}): attribute '{name}' is not defined in the user profile schema"
            ));
        };
        if !v.is_null() {
            let mut problems = Vec::new();
            attr.check(v, &mut problems);
            if let Some(p) = problems.into_iter().next() {
                return Err(format!("commands[{i}] ({kind}): {p}"));
            }
        }
        out.insert(name.clone(), v.clone());
    }
    Ok(())
}

/// Validates a registration hook's answer. An `error` object (even `{}`) denies the
/// registration and no command runs (spec 4.1); commands are still checked so a developer
/// hears about a wrong one.
pub fn registration(
    resp: &HookResponse,
    kind: RegistrationKind,
    schema: &UserSchema,
) -> Result<RegistrationEffect, String> {
    let mut allow = true;
    let mut profile = Map::new();
    for (i, c) in resp.commands.iter().enumerate() {
        match c.kind.as_str() {
            "com.okta.action.update" => {
                let obj = c.value.as_object().ok_or_else(|| {
                    format!("commands[{i}] (com.okta.action.update): value must be {{\"registration\": \"ALLOW\" | \"DENY\"}}")
                })?;
                // Okta's prose says `action`, its examples `registration`: accept both.
                let v = obj.get("registration").or_else(|| obj.get("action")).and_then(Value::as_str);
                match v {
                    Some("ALLOW") => allow = true,
                    Some("DENY") => allow = false,
                    _ => {
                        return Err(format!(
                            "commands[{i}] (com.okta.action.update): value.registration must be \"ALLOW\" or \"DENY\", got {}",
                            obj.get("registration").or_else(|| obj.get("action")).unwrap_or(&Value::Null)
                        ));
                    }
                }
            }
            k if k == kind.update_command() => {
                let attrs = command_value_object(i, k, &c.value)?;
                check_attributes(i, k, attrs, schema, &mut profile)?;
            }
            k @ ("com.okta.user.profile.update" | "com.okta.user.progressive.profile.update") => {
                return Err(format!(
                    "commands[{i}]: {k} is not allowed in a {} response; use {}",
                    kind.request_type(),
                    kind.update_command()
                ));
            }
            other => {
                return Err(format!(
                    "commands[{i}]: '{other}' is not a registration hook command (allowed: com.okta.action.update, {})",
                    kind.update_command()
                ));
            }
        }
    }
    if let Some(err) = &resp.error {
        return Ok(RegistrationEffect { allow: false, profile: Map::new(), error: Some(err.clone()) });
    }
    Ok(RegistrationEffect { allow, profile, error: None })
}

/// The import decision (`data.action.result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportAction {
    CreateUser,
    LinkUser,
}

impl ImportAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportAction::CreateUser => "CREATE_USER",
            ImportAction::LinkUser => "LINK_USER",
        }
    }
}

/// What a user import hook decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImportEffect {
    /// `None`: keep the default action.
    pub action: Option<ImportAction>,
    /// `com.okta.user.update`: the user to link to.
    pub link_to: Option<String>,
    pub app_user_profile: Map<String, Value>,
    pub user_profile: Map<String, Value>,
    /// The handler's `error.errorSummary`: logged; the default action applies.
    pub error_summary: Option<String>,
}

/// Validates a user import hook's answer (spec 4.2). `LINK_USER` needs `com.okta.user.update`
/// with the id of the user to link to.
pub fn import(resp: &HookResponse, schema: &UserSchema) -> Result<ImportEffect, String> {
    let mut eff = ImportEffect::default();
    for (i, c) in resp.commands.iter().enumerate() {
        match c.kind.as_str() {
            "com.okta.action.update" => {
                let r = c.value.get("result").and_then(Value::as_str);
                eff.action = Some(match r {
                    Some("CREATE_USER") => ImportAction::CreateUser,
                    Some("LINK_USER") => ImportAction::LinkUser,
                    _ => {
                        return Err(format!(
                            "commands[{i}] (com.okta.action.update): value.result must be \"CREATE_USER\" or \"LINK_USER\", got {}",
                            c.value.get("result").unwrap_or(&Value::Null)
                        ));
                    }
                });
            }
            "com.okta.user.update" => {
                let id = c.value.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| {
                    format!("commands[{i}] (com.okta.user.update): value.id must be the id of an existing user")
                })?;
                eff.link_to = Some(id.to_owned());
            }
            k @ "com.okta.user.profile.update" => {
                let attrs = command_value_object(i, k, &c.value)?;
                check_attributes(i, k, attrs, schema, &mut eff.user_profile)?;
            }
            k @ "com.okta.appUser.profile.update" => {
                let attrs = command_value_object(i, k, &c.value)?;
                for (name, v) in attrs {
                    eff.app_user_profile.insert(name.clone(), v.clone());
                }
            }
            other => {
                return Err(format!(
                    "commands[{i}]: '{other}' is not a user import hook command (allowed: com.okta.action.update, com.okta.user.update, com.okta.user.profile.update, com.okta.appUser.profile.update)"
                ));
            }
        }
    }
    if eff.action == Some(ImportAction::LinkUser) && eff.link_to.is_none() {
        return Err("LINK_USER needs a com.okta.user.update command naming the user to link to".to_owned());
    }
    if let Some(err) = &resp.error {
        // Only errorSummary is defined for this hook; the commands are skipped.
        return Ok(ImportEffect {
            error_summary: Some(
                err.error_summary.clone().unwrap_or_else(|| "The import hook returned an error".into()),
            ),
            ..ImportEffect::default()
        });
    }
    Ok(eff)
}

/// Whether the password import hook vouched for the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialVerdict {
    Verified,
    Unverified,
}

/// Validates a password import hook's answer (spec 4.3). 204 and `{}` mean `UNVERIFIED`, and so
/// does an `error` object.
pub fn password_import(resp: &HookResponse) -> Result<CredentialVerdict, String> {
    let mut verdict = CredentialVerdict::Unverified;
    for (i, c) in resp.commands.iter().enumerate() {
        match c.kind.as_str() {
            "com.okta.action.update" => {
                verdict = match c.value.get("credential").and_then(Value::as_str) {
                    Some("VERIFIED") => CredentialVerdict::Verified,
                    Some("UNVERIFIED") => CredentialVerdict::Unverified,
                    _ => {
                        return Err(format!(
                            "commands[{i}] (com.okta.action.update): value.credential must be \"VERIFIED\" or \"UNVERIFIED\", got {}",
                            c.value.get("credential").unwrap_or(&Value::Null)
                        ));
                    }
                };
            }
            other => {
                return Err(format!(
                    "commands[{i}]: '{other}' is not a password import hook command (allowed: com.okta.action.update)"
                ));
            }
        }
    }
    if resp.error.is_some() {
        return Ok(CredentialVerdict::Unverified);
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::super::parse_response;
    use super::*;
    use haken_core::Timestamp;

    fn schema() -> UserSchema {
        let mut custom = Map::new();
        custom.insert("department".into(), serde_json::json!({"type": "string", "title": "Department"}));
        UserSchema::from_custom_definitions(&custom, Timestamp(0), Timestamp(0))
    }

    fn resp(body: &str) -> HookResponse {
        parse_response(200, body.as_bytes()).unwrap_or_default()
    }

    #[test]
    fn registration_commands() {
        let s = schema();
        let ok = registration(
            &resp(
                r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"department":"R&D","firstName":"M"}}]}"#,
            ),
            RegistrationKind::SelfService,
            &s,
        );
        let Ok(eff) = ok else { panic!("{ok:?}") };
        assert!(eff.allow);
        assert_eq!(eff.profile.get("department"), Some(&Value::String("R&D".into())));
        let deny = registration(
            &resp(r#"{"commands":[{"type":"com.okta.action.update","value":{"registration":"DENY"}}]}"#),
            RegistrationKind::SelfService,
            &s,
        );
        assert_eq!(deny.map(|e| e.allow), Ok(false));
        let err = registration(&resp(r#"{"error":{}}"#), RegistrationKind::SelfService, &s);
        assert!(err.is_ok_and(|e| !e.allow && e.error.is_some()));
        for (body, needle) in [
            (r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"nope":1}}]}"#, "'nope' is not defined"),
            (r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"password":"x"}}]}"#, "password"),
            (r#"{"commands":[{"type":"com.okta.user.progressive.profile.update","value":{}}]}"#, "not allowed"),
            (r#"{"commands":[{"type":"com.okta.identity.patch","value":[]}]}"#, "not a registration hook command"),
            (r#"{"commands":[{"type":"com.okta.action.update","value":{"registration":"MAYBE"}}]}"#, "ALLOW"),
            (r#"{"commands":[{"type":"com.okta.user.profile.update","value":"x"}]}"#, "must be an object"),
        ] {
            let r = registration(&resp(body), RegistrationKind::SelfService, &s);
            assert!(r.as_ref().err().is_some_and(|m| m.contains(needle)), "{body}: {r:?}");
        }
        let prog = registration(
            &resp(r#"{"commands":[{"type":"com.okta.user.progressive.profile.update","value":{"department":"x"}}]}"#),
            RegistrationKind::Progressive,
            &s,
        );
        assert!(prog.is_ok_and(|e| e.profile.contains_key("department")));
    }

    #[test]
    fn import_commands() {
        let s = schema();
        let link = import(
            &resp(
                r#"{"commands":[{"type":"com.okta.action.update","value":{"result":"LINK_USER"}},{"type":"com.okta.user.update","value":{"id":"00u1"}}]}"#,
            ),
            &s,
        );
        assert!(link.is_ok_and(|e| e.action == Some(ImportAction::LinkUser) && e.link_to.as_deref() == Some("00u1")));
        let bad =
            import(&resp(r#"{"commands":[{"type":"com.okta.action.update","value":{"result":"LINK_USER"}}]}"#), &s);
        assert!(bad.is_err_and(|m| m.contains("com.okta.user.update")));
        let err = import(&resp(r#"{"error":{"errorSummary":"bad row"}},"commands":[]}"#), &s);
        // Not valid JSON above: parse_response turned it into the default (empty) response.
        assert!(err.is_ok_and(|e| e.action.is_none()));
        let err = import(&resp(r#"{"error":{"errorSummary":"bad row"}}"#), &s);
        assert!(err.is_ok_and(|e| e.error_summary.as_deref() == Some("bad row")));
        let upd = import(
            &resp(
                r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"login":"t@example.org"}},{"type":"com.okta.appUser.profile.update","value":{"x":1}}]}"#,
            ),
            &s,
        );
        assert!(upd.is_ok_and(|e| e.user_profile.contains_key("login") && e.app_user_profile.contains_key("x")));
        assert!(
            import(&resp(r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"zzz":1}}]}"#), &s).is_err()
        );
    }

    #[test]
    fn password_import_commands() {
        let v = |b: &str| password_import(&resp(b));
        assert_eq!(
            v(r#"{"commands":[{"type":"com.okta.action.update","value":{"credential":"VERIFIED"}}]}"#),
            Ok(CredentialVerdict::Verified)
        );
        assert_eq!(v("{}"), Ok(CredentialVerdict::Unverified));
        assert_eq!(
            v(r#"{"commands":[{"type":"com.okta.action.update","value":{"credential":"VERIFIED"}}],"error":{}}"#),
            Ok(CredentialVerdict::Unverified)
        );
        assert!(v(r#"{"commands":[{"type":"com.okta.action.update","value":{"credential":"YES"}}]}"#).is_err());
        assert!(v(r#"{"commands":[{"type":"com.okta.user.profile.update","value":{}}]}"#).is_err());
    }
}
