//! `haken inline`: the developer loop for inline hooks. `list` shows the server's inline hooks;
//! `preview` sends a request to a hook through the server's `execute` endpoint — the caller's
//! own file, or a realistic sample of the hook's type — and prints the handler's answer if it
//! meets the type's contract, or why it does not.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::hooks_cli::{Api, ApiFlags};

#[derive(Debug, Subcommand)]
pub enum InlineAction {
    /// List inline hooks (id, name, type, status, channel, fail mode).
    List,
    /// Call a hook with a request and check its answer against the hook type's contract.
    Preview(PreviewArgs),
    /// Print the sample request `preview` sends for a hook type (to edit and send with --file).
    Sample {
        /// An inline hook type, e.g. com.okta.user.pre-registration.
        #[arg(value_name = "TYPE")]
        hook_type: String,
    },
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The inline hook's id (`haken inline list`).
    #[arg(value_name = "HOOK_ID")]
    hook_id: String,
    /// A whole request envelope (JSON) to send instead of the sample for the hook's type.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Print only the handler's answer, as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(flags: ApiFlags, action: InlineAction) -> anyhow::Result<()> {
    if let InlineAction::Sample { hook_type } = &action {
        let sample = sample_request(hook_type).with_context(|| format!("'{hook_type}' is not an inline hook type"))?;
        println!("{}", serde_json::to_string_pretty(&sample)?);
        return Ok(());
    }
    let api = Api::new(flags)?;
    match action {
        InlineAction::List => list(&api).await,
        InlineAction::Preview(args) => preview(&api, args).await,
        InlineAction::Sample { .. } => Ok(()),
    }
}

async fn list(api: &Api) -> anyhow::Result<()> {
    let (_, hooks) = api.get(api.url(&["inlineHooks"])?).await?;
    let hooks = hooks.as_array().cloned().unwrap_or_default();
    if hooks.is_empty() {
        eprintln!("No inline hooks.");
        return Ok(());
    }
    println!("{:<20}  {:<8}  {:<42}  {:<6}  {:<10}  NAME", "ID", "STATUS", "TYPE", "CHAN", "FAIL MODE");
    for h in hooks {
        let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
        let mode = format!(
            "{}{}",
            s(&h["execution"]["failMode"]),
            if h["execution"]["shadow"] == true { "+shadow" } else { "" }
        );
        println!(
            "{:<20}  {:<8}  {:<42}  {:<6}  {:<10}  {}",
            s(&h["id"]),
            s(&h["status"]),
            s(&h["type"]),
            s(&h["channel"]["type"]),
            mode,
            s(&h["name"])
        );
    }
    Ok(())
}

async fn preview(api: &Api, args: PreviewArgs) -> anyhow::Result<()> {
    let (_, hook) = api.get(api.url(&["inlineHooks", &args.hook_id])?).await?;
    let hook_type = hook["type"].as_str().unwrap_or_default().to_owned();
    let request = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<Value>(&text).with_context(|| format!("{} is not JSON", path.display()))?
        }
        None => sample_request(&hook_type).with_context(|| format!("no sample for hook type {hook_type}"))?,
    };
    if !args.json {
        eprintln!(
            "Calling {} ({hook_type}) at {} …",
            args.hook_id,
            hook["channel"]["config"]["uri"].as_str().unwrap_or("?")
        );
    }
    let answer = match api.post(api.url(&["inlineHooks", &args.hook_id, "execute"])?, Some(request)).await {
        Ok(a) => a,
        Err(e) => bail!("the hook's answer cannot be used:\n{e}"),
    };
    if args.json {
        println!("{}", serde_json::to_string(&answer)?);
        return Ok(());
    }
    println!("The answer meets the contract of {hook_type}:");
    println!("{}", serde_json::to_string_pretty(&answer)?);
    for c in answer["commands"].as_array().into_iter().flatten() {
        eprintln!("  command {}: {}", c["type"].as_str().unwrap_or("?"), c["value"]);
    }
    if let Some(e) = answer.get("error").filter(|e| !e.is_null()) {
        eprintln!("  error object: {} — the flow treats this as the type's error case", e["errorSummary"]);
    }
    Ok(())
}

/// A realistic request of each type, shaped as spec section 4 shows them.
fn sample_request(hook_type: &str) -> Option<Value> {
    let request = |url: &str| json!({ "id": "reqPreview0000000000001", "method": "POST", "url": { "value": url }, "ipAddress": "203.0.113.9" });
    let (request_type, data) = match hook_type {
        "com.okta.user.pre-registration" => (
            Some("self.service.registration"),
            json!({ "context": { "request": request("/api/v1/registration") },
                    "userProfile": { "firstName": "Maya", "lastName": "Ortiz", "login": "maya.ortiz@example.net", "email": "maya.ortiz@example.net" },
                    "action": "ALLOW" }),
        ),
        "com.okta.import.transform" => (
            None,
            json!({ "context": { "conflicts": [], "application": { "name": "haken_import", "id": "0oahr000000000000001", "label": "HR Source", "status": "ACTIVE" },
                                 "job": { "id": "ijb00000000000000001", "type": "import:users" }, "matches": [], "policy": ["LOGIN", "EMAIL"] },
                    "action": { "result": "CREATE_USER" },
                    "appUser": { "profile": { "userName": "tkato", "firstName": "Taro", "lastName": "Kato", "email": "taro.kato@example.org" } },
                    "user": { "profile": { "login": "taro.kato@example.org", "email": "taro.kato@example.org", "firstName": "Taro", "lastName": "Kato" } } }),
        ),
        "com.okta.user.credential.password.import" => (
            None,
            json!({ "context": { "request": request("/api/v1/authn"),
                                 "credential": { "username": "lee.chen@example.org", "password": "correct horse battery staple" } },
                    "action": { "credential": "UNVERIFIED" } }),
        ),
        "com.okta.oauth2.tokens.transform" => (
            None,
            json!({ "context": { "request": request("/oauth2/default/v1/token"), "protocol": { "type": "OAUTH2.0", "request": { "scope": "openid profile", "grant_type": "authorization_code" } } },
                    "identity": { "claims": { "sub": "00u0000000000000001" } }, "access": { "claims": { "ver": 1 }, "scopes": { "openid": { "id": "scp1" } } } }),
        ),
        "com.okta.saml.tokens.transform" => (
            None,
            json!({ "context": { "request": request("/app/haken_saml/0oa1/sso/saml") },
                    "assertion": { "subject": { "nameId": "lee.chen@example.org" }, "claims": {}, "lifetime": { "expiration": 300 } } }),
        ),
        "com.okta.telephony.provider" => (
            Some("com.okta.user.telephony.mfa-verification"),
            json!({ "context": { "request": request("/idp/idx/challenge") },
                    "userProfile": { "firstName": "Lee", "lastName": "Chen", "login": "lee.chen@example.org", "userId": "00u0000000000000001" },
                    "messageProfile": { "msgTemplate": "Your code is 123456", "phoneNumber": "+15555550100", "otpExpires": "2026-12-01T10:05:00.000Z", "deliveryChannel": "SMS", "otpCode": "123456", "locale": "EN-US" } }),
        ),
        _ => return None,
    };
    let mut v = json!({
        "eventId": "pRvW0aB1cD2eF3gH4iJ5kL",
        "eventTime": haken_core::Timestamp::now().to_rfc3339(),
        "eventType": hook_type,
        "eventTypeVersion": "1.0",
        "contentType": "application/json",
        "cloudEventVersion": "0.1",
        "source": "https://haken.local/api/v1/inlineHooks/preview",
        "data": data,
    });
    if let Some(rt) = request_type {
        v["requestType"] = Value::String(rt.to_owned());
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_sample_in_the_envelope() {
        for t in haken_core::inline_hook::InlineHookType::ALL {
            let Some(s) = sample_request(t.as_str()) else { panic!("no sample for {}", t.as_str()) };
            assert_eq!(s["eventType"], t.as_str());
            assert_eq!(s["cloudEventVersion"], "0.1");
            assert!(s["data"].is_object());
        }
        assert!(sample_request("com.okta.nope").is_none());
    }
}
