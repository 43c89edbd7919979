//! The Inline Hooks and Hook Keys APIs end to end: shapes, validation, secrets, limits, the
//! lifecycle and its events, `execute` against a real handler (every failure mode), and both
//! OAuth 2.0 channel types against a real token endpoint on 127.0.0.1.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::both;
use crate::harness::{Backend, TestServer};
use crate::receiver::{Receiver, Reply};

both!(
    create_read_list_and_secrets,
    partial_update_replace_and_lifecycle,
    validation_and_limits,
    execute_returns_the_answer_or_says_why_not,
    oauth_client_secret_post_channel,
    hook_keys_and_private_key_jwt_channel,
    every_flow_calls_through_oauth_channels,
    cli_lists_samples_and_previews,
);

const REG: &str = "com.okta.user.pre-registration";
const PWD: &str = "com.okta.user.credential.password.import";

fn http_hook(name: &str, hook_type: &str, uri: &str) -> Value {
    json!({
        "name": name,
        "type": hook_type,
        "version": "1.0.0",
        "channel": { "type": "HTTP", "version": "1.0.0", "config": {
            "uri": uri,
            "headers": [{ "key": "X-Env", "value": "test" }],
            "authScheme": { "type": "HEADER", "key": "Authorization", "value": "Basic c2VjcmV0LXZhbHVl" }
        } }
    })
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

async fn create_read_list_and_secrets(b: Backend) {
    let s = TestServer::start(b).await;
    let a = s
        .post(
            "/api/v1/inlineHooks",
            http_hook("Patient claims", "com.okta.oauth2.tokens.transform", "https://claims.example.org/hook"),
        )
        .await;
    let hook = a.ok().clone();
    let id = id_of(&hook);
    assert!(id.starts_with("cal") && id.len() == 20, "{id}");
    assert_eq!(hook["status"], "ACTIVE");
    assert_eq!(hook["type"], "com.okta.oauth2.tokens.transform");
    assert_eq!(hook["version"], "1.0.0");
    assert_eq!(hook["channel"]["type"], "HTTP");
    assert_eq!(hook["channel"]["config"]["method"], "POST");
    assert_eq!(hook["channel"]["config"]["headers"], json!([{ "key": "X-Env", "value": "test" }]));
    assert_eq!(hook["channel"]["config"]["authScheme"], json!({ "type": "HEADER", "key": "Authorization" }));
    assert_eq!(hook["execution"]["failMode"], "failOpen", "token hooks fail open by default");
    assert!(hook["_links"]["deactivate"]["href"].as_str().is_some_and(|h| h.ends_with("/lifecycle/deactivate")));
    assert_eq!(hook["_links"]["execute"]["hints"]["allow"], json!(["POST"]));
    s.create_inline_hook("Sign-up checks", REG, "https://signup.example.org/hook").await;

    let got = s.get(&format!("/api/v1/inlineHooks/{id}")).await;
    assert_eq!(got.ok(), &hook);
    let all = s.get("/api/v1/inlineHooks").await;
    assert_eq!(all.ok().as_array().map(Vec::len), Some(2));
    let regs = s.get(&format!("/api/v1/inlineHooks?type={REG}")).await;
    let regs = regs.ok().as_array().cloned().unwrap_or_default();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0]["name"], "Sign-up checks");
    assert_eq!(regs[0]["execution"]["failMode"], "failClosed", "registration fails closed by default");
    s.get("/api/v1/inlineHooks?type=com.okta.nope").await.expect_error(400, "E0000053");
    s.get("/api/v1/inlineHooks/calnope000000000000x").await.expect_error(404, "E0000007");

    // The secret is never shown, nor written to the System Log.
    for body in [all.body.to_string(), got.body.to_string()] {
        assert!(!body.contains("c2VjcmV0LXZhbHVl"), "secret leaked: {body}");
    }
    let created = s.events_of("inline_hook.created").await;
    assert_eq!(created.len(), 2);
    assert_eq!(created[0]["target"][0]["id"], id);
    assert_eq!(created[0]["target"][0]["type"], "InlineHook");
    assert!(!s.events().await.iter().any(|e| e.to_string().contains("c2VjcmV0LXZhbHVl")));
    // Unauthenticated callers get nothing.
    let anon = s.send(reqwest::Method::GET, "/api/v1/inlineHooks", None, None, None).await;
    anon.expect_error(401, "E0000011");
    s.stop().await;
}

async fn partial_update_replace_and_lifecycle(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let hook = s.create_inline_hook("reg", REG, &r.url).await;
    let id = id_of(&hook);
    let path = format!("/api/v1/inlineHooks/{id}");

    // POST changes only what it names; the secret survives.
    let upd =
        s.post(&path, json!({ "name": "renamed", "execution": { "failMode": "failOpen", "shadow": true } })).await;
    let upd = upd.ok().clone();
    assert_eq!(upd["name"], "renamed");
    assert_eq!(upd["channel"]["config"]["uri"], r.url);
    assert_eq!(
        upd["execution"],
        json!({ "failMode": "failOpen", "failModeOverridden": true, "shadow": true, "timeoutMs": 3000 })
    );
    s.post(&path, json!({ "type": PWD })).await.expect_error(400, "E0000001");
    // Execute still authenticates with the stored secret.
    r.always_json(200, r#"{"commands":[]}"#);
    let ex = s.post(&format!("{path}/execute"), json!({ "eventType": REG, "data": { "userProfile": {} } })).await;
    assert_eq!(ex.ok(), &json!({ "commands": [] }));
    assert_eq!(
        r.posts().last().and_then(|p| p.header("authorization").map(str::to_owned)).as_deref(),
        Some("Bearer hook-secret")
    );

    // The header secret stays with its server: a new origin needs the value again.
    let other = Receiver::start().await;
    let moved = s.post(&path, json!({ "channel": { "config": { "uri": other.url } } })).await;
    assert!(moved.expect_error(400, "E0000001").to_string().contains("authScheme.value"));
    let same_server = format!("{}/elsewhere", r.url.trim_end_matches("/hook"));
    let kept = s.post(&path, json!({ "channel": { "config": { "uri": same_server } } })).await;
    assert_eq!(kept.ok()["channel"]["config"]["uri"], same_server);
    s.post(&path, json!({ "channel": { "config": { "uri": r.url } } })).await.ok();

    // PUT replaces; a round-tripped GET body (no secret value) keeps the secret.
    let mut whole = s.get(&path).await.ok().clone();
    whole["channel"]["config"]["headers"] = json!([{ "key": "X-Other", "value": "1" }]);
    whole["execution"] = json!({ "failMode": null, "shadow": false, "timeoutMs": 1500 });
    let put = s.put(&path, whole).await;
    let put = put.ok().clone();
    assert_eq!(put["channel"]["config"]["headers"], json!([{ "key": "X-Other", "value": "1" }]));
    assert_eq!(put["execution"]["failMode"], "failClosed", "null restores the type's default");
    assert_eq!(put["execution"]["timeoutMs"], 1500);
    let _ = s.post(&format!("{path}/execute"), json!({ "eventType": REG })).await.ok();
    let last = r.posts().last().cloned().expect("executed");
    assert_eq!(last.header("authorization"), Some("Bearer hook-secret"));
    assert_eq!(last.header("x-other"), Some("1"));
    assert_eq!(last.header("x-test"), None);

    // Delete needs INACTIVE; the lifecycle writes its events.
    s.delete(&path).await.expect_error(400, "E0000001");
    let off = s.post(&format!("{path}/lifecycle/deactivate"), json!(null)).await;
    assert_eq!(off.ok()["status"], "INACTIVE");
    assert!(off.body["_links"]["activate"].is_object());
    let on = s.post(&format!("{path}/lifecycle/activate"), json!(null)).await;
    assert_eq!(on.ok()["status"], "ACTIVE");
    s.post(&format!("{path}/lifecycle/deactivate"), json!(null)).await.ok();
    let del = s.delete(&path).await;
    assert_eq!(del.status, 204);
    s.get(&path).await.expect_error(404, "E0000007");
    let types: Vec<String> = s
        .events()
        .await
        .iter()
        .filter_map(|e| e["eventType"].as_str().filter(|t| t.starts_with("inline_hook.")).map(str::to_owned))
        .collect();
    for t in [
        "inline_hook.created",
        "inline_hook.updated",
        "inline_hook.deactivated",
        "inline_hook.activated",
        "inline_hook.deleted",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} missing in {types:?}");
    }
    s.stop().await;
}

async fn validation_and_limits(b: Backend) {
    let s = TestServer::start(b).await;
    let base = http_hook("v", REG, "https://h.example.org/x");
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "name": "", }), "name"),
        (
            {
                let mut v = base.clone();
                v["type"] = json!("com.okta.other");
                v
            },
            "type",
        ),
        (
            {
                let mut v = base.clone();
                v.as_object_mut().map(|m| m.remove("version"));
                v
            },
            "version",
        ),
        (
            {
                let mut v = base.clone();
                v["channel"]["type"] = json!("SMTP");
                v
            },
            "channel.type",
        ),
        (
            {
                let mut v = base.clone();
                v["channel"]["config"]["uri"] = json!("ftp://h.example.org/");
                v
            },
            "channel.config.uri",
        ),
        (
            {
                let mut v = base.clone();
                v["channel"]["config"]["headers"] = json!([{ "key": "Accept", "value": "x" }]);
                v
            },
            "channel.config.headers",
        ),
        (
            {
                let mut v = base.clone();
                v["channel"]["config"]["method"] = json!("GET");
                v
            },
            "channel.config.method",
        ),
        (
            {
                let mut v = base.clone();
                v["channel"]["config"]["url"] = json!("x");
                v
            },
            "channel.config.url",
        ),
        (
            {
                let mut v = base.clone();
                v["execution"] = json!({ "failMode": "sometimes" });
                v
            },
            "execution.failMode",
        ),
        (
            {
                let mut v = base.clone();
                v["execution"] = json!({ "timeoutMs": 5 });
                v
            },
            "execution.timeoutMs",
        ),
        (
            {
                let mut v = base.clone();
                v["channel"]["config"]["authScheme"]["value"] = json!("");
                v
            },
            "channel.config.authScheme.value",
        ),
        (
            {
                let mut v = base.clone();
                v["channel"]["type"] = json!("OAUTH");
                v
            },
            "channel.config.authScheme",
        ),
        (
            {
                let mut v = base.clone();
                v["type"] = json!("com.okta.telephony.provider");
                v["channel"]["config"]["authScheme"] = json!(null);
                v
            },
            "channel.config.authScheme",
        ),
    ];
    for (body, field) in cases {
        let a = s.post("/api/v1/inlineHooks", body.clone()).await;
        let err = a.expect_error(400, "E0000001");
        assert!(err.to_string().contains(field), "{field} not named for {body}: {err}");
    }
    let malformed = s
        .send(
            reqwest::Method::POST,
            "/api/v1/inlineHooks",
            Some(crate::harness::TOKEN),
            Some(b"{\"name\":".to_vec()),
            Some("application/json"),
        )
        .await;
    malformed.expect_error(400, "E0000003");
    // OAUTH needs its own fields and no header secret.
    let oauth = json!({ "name": "o", "type": REG, "version": "1.0.0", "channel": { "type": "OAUTH", "version": "1.0.0", "config": {
        "uri": "https://h.example.org/x", "authType": "private_key_jwt", "clientId": "c", "tokenUrl": "https://id.example.org/token", "hookKeyId": "HKYnope00000000000000" } } });
    let err = s.post("/api/v1/inlineHooks", oauth).await;
    assert!(err.expect_error(400, "E0000001").to_string().contains("hookKeyId"));
    // The URL policy of a server without --insecure-hooks.
    let strict = TestServer::start_with(b, |c| c.insecure_hooks = false).await;
    for uri in ["http://h.example.org/x", "https://127.0.0.1/x", "https://10.1.2.3/x", "https://[::1]/x"] {
        let a = strict.post("/api/v1/inlineHooks", http_hook("u", REG, uri)).await;
        assert!(a.expect_error(400, "E0000001").to_string().contains("channel.config.uri"), "{uri}");
    }
    strict.stop().await;

    // One password import hook, even when several are created at once; names are unique;
    // 100 hooks at most.
    let racers: Vec<_> = (0..6)
        .map(|i| s.post("/api/v1/inlineHooks", http_hook(&format!("pwd{i}"), PWD, "https://p.example.org/x")))
        .collect();
    let answers = futures_util::future::join_all(racers).await;
    assert_eq!(answers.iter().filter(|a| a.status == 200).count(), 1, "exactly one password import hook");
    for a in answers.iter().filter(|a| a.status != 200) {
        assert!(a.expect_error(400, "E0000001").to_string().contains("password import"), "{}", a.body);
    }
    s.post("/api/v1/inlineHooks", http_hook("dup", REG, "https://p.example.org/x")).await.ok();
    s.post("/api/v1/inlineHooks", http_hook("DUP", REG, "https://p.example.org/x")).await.expect_error(400, "E0000001");
    for i in 2..100 {
        s.post("/api/v1/inlineHooks", http_hook(&format!("h{i}"), REG, "https://p.example.org/x")).await.ok();
    }
    let over = s.post("/api/v1/inlineHooks", http_hook("h100", REG, "https://p.example.org/x")).await;
    assert!(over.expect_error(400, "E0000001").to_string().contains("at most 100"));
    s.stop().await;
}

async fn execute_returns_the_answer_or_says_why_not(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let hook = s.create_inline_hook("exec", REG, &r.url).await;
    let path = format!("/api/v1/inlineHooks/{}/execute", id_of(&hook));
    let request = json!({
        "eventType": REG, "eventTypeVersion": "1.0", "cloudEventVersion": "0.1", "contentType": "application/json",
        "requestType": "self.service.registration",
        "data": { "userProfile": { "email": "a@example.org" }, "action": "ALLOW" }
    });
    let deny = r#"{"commands":[{"type":"com.okta.action.update","value":{"registration":"DENY"}}],"error":{"errorSummary":"no","errorCauses":[{"errorSummary":"Use a work address","reason":"INVALID_EMAIL_DOMAIN","locationType":"body","location":"data.userProfile.email","domain":"end-user"}]}}"#;
    r.script([Reply::Json(200, deny.to_owned())]);
    let a = s.post(&path, request.clone()).await;
    assert_eq!(a.ok(), &serde_json::from_str::<Value>(deny).unwrap_or_default(), "returned verbatim");
    let sent = r.posts().last().map(|p| p.json()).unwrap_or_default();
    assert_eq!(sent, request, "the caller's request is sent as given");
    let seen = r.posts().last().cloned().expect("sent");
    assert_eq!(seen.header("x-test"), Some("yes"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("accept"), Some("application/json"));
    r.script([Reply::Status(204)]);
    assert_eq!(s.post(&path, request.clone()).await.ok(), &json!({}));

    // Every failure is a 400 with a reason a developer can act on.
    let big = format!("{{\"debugContext\":{{\"pad\":\"{}\"}}}}", "x".repeat(300 * 1024));
    let cases: Vec<(Vec<Reply>, &str, usize)> = vec![
        (vec![Reply::Status(500), Reply::Status(503)], "HTTP 503", 2),
        (vec![Reply::Status(400)], "HTTP 400", 1),
        (vec![Reply::Status(302)], "redirects are not followed", 1),
        (vec![Reply::Json(200, "{not json".into())], "not valid JSON", 1),
        (vec![Reply::Json(200, big)], "256 KB", 1),
        (
            vec![Reply::Json(200, r#"{"commands":[{"type":"com.okta.identity.patch","value":[]}]}"#.into())],
            "commands[0]",
            1,
        ),
        (
            vec![Reply::Json(
                200,
                r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"shoeSize":44}}]}"#.into(),
            )],
            "'shoeSize' is not defined",
            1,
        ),
        (
            vec![Reply::Json(
                200,
                r#"{"commands":[{"type":"com.okta.user.progressive.profile.update","value":{}}]}"#.into(),
            )],
            "not allowed",
            1,
        ),
        (vec![Reply::Reset, Reply::Reset], "TRANSPORT", 2),
    ];
    for (replies, needle, calls) in cases {
        let before = r.posts().len();
        r.script(replies);
        let a = s.post(&path, request.clone()).await;
        let err = a.expect_error(400, "E0000001").to_string();
        assert!(err.contains(needle), "{needle} not in {err}");
        assert_eq!(r.posts().len() - before, calls, "calls for {needle}");
    }
    // A timeout (shortened) is retried once, then reported.
    s.post(&format!("/api/v1/inlineHooks/{}", id_of(&hook)), json!({ "execution": { "timeoutMs": 200 } })).await.ok();
    let before = r.posts().len();
    r.script([
        Reply::SlowJson(std::time::Duration::from_millis(600), 200, "{}".into()),
        Reply::SlowJson(std::time::Duration::from_millis(600), 200, "{}".into()),
    ]);
    let t = s.post(&path, request.clone()).await;
    assert!(t.expect_error(400, "E0000001").to_string().contains("TIMEOUT"));
    assert_eq!(r.posts().len() - before, 2);
    // Wrong event type for the hook.
    s.post(&path, json!({ "eventType": PWD })).await.expect_error(400, "E0000001");
    // Each call is in the System Log with its outcome.
    let executed = s.events_of("inline_hook.executed").await;
    assert!(executed.iter().any(|e| e["outcome"]["result"] == "FAILURE" && e["outcome"]["reason"] == "TIMEOUT"));
    assert!(executed.iter().all(|e| e["debugContext"]["debugData"]["preview"] == true));
    let processed = s.events_of("inline_hook.response.processed").await;
    assert!(
        processed
            .iter()
            .any(|e| e["debugContext"]["debugData"]["failureReason"].as_str().is_some_and(|m| m.contains("shoeSize")))
    );
    s.stop().await;
}

/// A token endpoint on 127.0.0.1 that hands out numbered tokens.
fn token_endpoint(r: &Receiver) {
    let n = std::sync::atomic::AtomicUsize::new(0);
    r.respond_with(move |_| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Reply::Json(200, format!(r#"{{"access_token":"tok-{i}","token_type":"Bearer","expires_in":3600}}"#))
    });
}

fn form(body: &[u8]) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

async fn oauth_client_secret_post_channel(b: Backend) {
    let s = TestServer::start(b).await;
    let tokens = Receiver::start().await;
    token_endpoint(&tokens);
    let handler = Receiver::start().await;
    handler.always_json(200, "{}");
    let body = json!({ "name": "oauth", "type": REG, "version": "1.0.0", "channel": { "type": "OAUTH", "version": "1.0.0", "config": {
        "uri": handler.url, "headers": [], "authType": "client_secret_post", "clientId": "hook-client",
        "clientSecret": "very-secret-value", "tokenUrl": tokens.url, "scope": "okta.hooks" } } });
    let hook = s.post("/api/v1/inlineHooks", body).await.ok().clone();
    assert_eq!(hook["channel"]["type"], "OAUTH");
    assert_eq!(hook["channel"]["config"]["authScheme"], Value::Null);
    assert_eq!(hook["channel"]["config"]["clientId"], "hook-client");
    assert_eq!(hook["channel"]["config"]["scope"], "okta.hooks");
    assert!(hook["channel"]["config"].get("clientSecret").is_none());
    assert!(!hook.to_string().contains("very-secret-value"));
    let path = format!("/api/v1/inlineHooks/{}/execute", id_of(&hook));
    for _ in 0..2 {
        s.post(&path, json!({ "eventType": REG })).await.ok();
    }
    assert_eq!(tokens.posts().len(), 1, "the access token is cached");
    let f = form(&tokens.posts()[0].body);
    assert_eq!(f.get("grant_type").map(String::as_str), Some("client_credentials"));
    assert_eq!(f.get("client_id").map(String::as_str), Some("hook-client"));
    assert_eq!(f.get("client_secret").map(String::as_str), Some("very-secret-value"));
    assert_eq!(f.get("scope").map(String::as_str), Some("okta.hooks"));
    assert!(handler.posts().iter().all(|p| p.header("authorization") == Some("Bearer tok-1")));
    // A 401 from the hook drops the cached token; the next call fetches a new one.
    handler.script([Reply::Status(401)]);
    s.post(&path, json!({ "eventType": REG })).await.expect_error(400, "E0000001");
    s.post(&path, json!({ "eventType": REG })).await.ok();
    assert_eq!(tokens.posts().len(), 2);
    assert_eq!(
        handler.posts().last().and_then(|p| p.header("authorization").map(str::to_owned)).as_deref(),
        Some("Bearer tok-2")
    );
    // A token endpoint that refuses: a hook failure that names the endpoint, never the secret.
    let refusing = Receiver::start().await;
    refusing.always_json(401, r#"{"error":"invalid_client"}"#);
    // A kept client secret is never sent to a token URL it was not given for.
    let moved = s
        .post(
            &format!("/api/v1/inlineHooks/{}", id_of(&hook)),
            json!({ "channel": { "config": { "tokenUrl": refusing.url } } }),
        )
        .await;
    assert!(moved.expect_error(400, "E0000001").to_string().contains("clientSecret"));
    let upd = s
        .post(
            &format!("/api/v1/inlineHooks/{}", id_of(&hook)),
            json!({ "channel": { "config": { "tokenUrl": refusing.url, "clientSecret": "very-secret-value" } } }),
        )
        .await;
    upd.ok();
    let err = s.post(&path, json!({ "eventType": REG })).await;
    let err = err.expect_error(400, "E0000001").to_string();
    assert!(err.contains("AUTHENTICATION") && err.contains("invalid_client"), "{err}");
    assert!(!err.contains("very-secret-value"));
    assert!(!s.events().await.iter().any(|e| e.to_string().contains("very-secret-value")));
    s.stop().await;
}

async fn hook_keys_and_private_key_jwt_channel(b: Backend) {
    let s = TestServer::start(b).await;
    let created = s.post("/api/v1/hook-keys", json!({ "name": "signing key" })).await;
    let key = created.ok().clone();
    let key_id = id_of(&key);
    assert!(key_id.starts_with("HKY"));
    assert_eq!(key["isUsed"], "false");
    let alias = key["keyId"].as_str().unwrap_or_default().to_owned();
    assert!(!alias.is_empty());
    let jwk = s.get(&format!("/api/v1/hook-keys/public/{alias}")).await.ok().clone();
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["kid"], alias);
    assert!(jwk.get("d").is_none() && !jwk.to_string().contains("\"p\""), "no private parts: {jwk}");
    let expanded = s.get(&format!("/api/v1/hook-keys/{key_id}?expand=publickey")).await.ok().clone();
    assert_eq!(expanded["_embedded"], jwk);
    assert!(s.get(&format!("/api/v1/hook-keys/{key_id}")).await.ok().get("_embedded").is_none());
    let renamed = s.put(&format!("/api/v1/hook-keys/{key_id}"), json!({ "name": "renamed key" })).await;
    assert_eq!(renamed.ok()["name"], "renamed key");
    s.post("/api/v1/hook-keys", json!({ "name": "RENAMED KEY" })).await.expect_error(400, "E0000001");
    s.post("/api/v1/hook-keys", json!({ "name": "" })).await.expect_error(400, "E0000001");
    assert_eq!(s.get("/api/v1/hook-keys").await.ok().as_array().map(Vec::len), Some(1));

    let tokens = Receiver::start().await;
    token_endpoint(&tokens);
    let handler = Receiver::start().await;
    handler.always_json(200, "{}");
    let body = json!({ "name": "jwt", "type": PWD, "version": "1.0.0", "channel": { "type": "OAUTH", "version": "1.0.0", "config": {
        "uri": handler.url, "authType": "private_key_jwt", "clientId": "hook-client", "hookKeyId": key_id, "tokenUrl": tokens.url } } });
    let hook = s.post("/api/v1/inlineHooks", body).await.ok().clone();
    assert_eq!(hook["channel"]["config"]["hookKeyId"], key_id);
    assert_eq!(hook["channel"]["config"]["scope"], Value::Null);
    s.post(&format!("/api/v1/inlineHooks/{}/execute", id_of(&hook)), json!({ "eventType": PWD })).await.ok();
    let f = form(&tokens.posts()[0].body);
    assert_eq!(
        f.get("client_assertion_type").map(String::as_str),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert!(!f.contains_key("client_secret"));
    let jwt = f.get("client_assertion").cloned().unwrap_or_default();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap_or_default()).unwrap_or_default();
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap_or_default()).unwrap_or_default();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], alias);
    assert_eq!(claims["iss"], "hook-client");
    assert_eq!(claims["sub"], "hook-client");
    assert_eq!(claims["aud"], tokens.url);
    // The assertion verifies with the published public key.
    let n = b64.decode(jwk["n"].as_str().unwrap_or_default()).unwrap_or_default();
    let e = b64.decode(jwk["e"].as_str().unwrap_or_default()).unwrap_or_default();
    let sig = b64.decode(parts[2]).unwrap_or_default();
    let public = aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e };
    let signed = format!("{}.{}", parts[0], parts[1]);
    assert!(public.verify(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &sig).is_ok());
    assert_eq!(handler.posts()[0].header("authorization"), Some("Bearer tok-1"));

    // A key in use cannot be deleted; once free it can.
    assert_eq!(s.get(&format!("/api/v1/hook-keys/{key_id}")).await.ok()["isUsed"], "true");
    s.delete(&format!("/api/v1/hook-keys/{key_id}")).await.expect_error(400, "E0000001");
    let hook_path = format!("/api/v1/inlineHooks/{}", id_of(&hook));
    s.post(&format!("{hook_path}/lifecycle/deactivate"), json!(null)).await.ok();
    assert_eq!(s.delete(&hook_path).await.status, 204);
    assert_eq!(s.delete(&format!("/api/v1/hook-keys/{key_id}")).await.status, 204);
    s.get(&format!("/api/v1/hook-keys/public/{alias}")).await.expect_error(404, "E0000007");
    s.stop().await;
}

fn oauth_hook(name: &str, hook_type: &str, uri: &str, token_url: &str, auth: Value) -> Value {
    let mut config =
        json!({ "uri": uri, "headers": [], "clientId": "flows-client", "tokenUrl": token_url, "scope": "okta.hooks" });
    if let (Some(c), Some(a)) = (config.as_object_mut(), auth.as_object()) {
        c.extend(a.clone());
    }
    json!({ "name": name, "type": hook_type, "version": "1.0.0", "channel": { "type": "OAUTH", "version": "1.0.0", "config": config } })
}

/// The three flows, each with its hook on an OAuth 2.0 channel: registration with
/// `private_key_jwt`, password import and user import with `client_secret_post`.
async fn every_flow_calls_through_oauth_channels(b: Backend) {
    let s = TestServer::start(b).await;
    let tokens = Receiver::start().await;
    token_endpoint(&tokens);
    let key = s.post("/api/v1/hook-keys", json!({ "name": "flows key" })).await.ok().clone();
    let secret = json!({ "authType": "client_secret_post", "clientSecret": "flows-secret" });

    // Registration.
    let reg = Receiver::start().await;
    reg.always_json(200, r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"nickName":"via-oauth"}}]}"#);
    let jwt = json!({ "authType": "private_key_jwt", "hookKeyId": id_of(&key) });
    let hook = s.post("/api/v1/inlineHooks", oauth_hook("reg", REG, &reg.url, &tokens.url, jwt)).await.ok().clone();
    let policy = s.get("/api/v1/policies?type=PROFILE_ENROLLMENT").await.ok()[0].clone();
    let pid = id_of(&policy);
    let mut rule = s.get(&format!("/api/v1/policies/{pid}/rules")).await.ok()[0].clone();
    rule["actions"]["profileEnrollment"]["preRegistrationInlineHooks"] = json!([{ "inlineHookId": id_of(&hook) }]);
    s.put(&format!("/api/v1/policies/{pid}/rules/{}", id_of(&rule)), rule).await.ok();
    let signup = s
        .send(
            reqwest::Method::POST,
            "/api/v1/registration",
            None,
            Some(
                serde_json::to_vec(&json!({
            "userProfile": { "email": "oauth.signup@example.org", "firstName": "O", "lastName": "Auth" },
            "credentials": { "password": { "value": "Tr0ub4dor&3-oauth" } } }))
                .unwrap_or_default(),
            ),
            Some("application/json"),
        )
        .await;
    assert_eq!(signup.ok()["profile"]["nickName"], "via-oauth");
    assert_eq!(reg.posts()[0].header("authorization"), Some("Bearer tok-1"));
    assert!(form(&tokens.posts()[0].body).contains_key("client_assertion"));

    // Password import.
    let pwd = Receiver::start().await;
    pwd.always_json(200, r#"{"commands":[{"type":"com.okta.action.update","value":{"credential":"VERIFIED"}}]}"#);
    s.post("/api/v1/inlineHooks", oauth_hook("pwd", PWD, &pwd.url, &tokens.url, secret.clone())).await.ok();
    s.post("/api/v1/users?activate=true", json!({ "profile": { "login": "migrated@example.org", "email": "migrated@example.org", "firstName": "M", "lastName": "G" },
        "credentials": { "password": { "hook": { "type": "default" } } } })).await.ok();
    let authn = s
        .send(
            reqwest::Method::POST,
            "/api/v1/authn",
            None,
            Some(
                serde_json::to_vec(&json!({
            "username": "migrated@example.org", "password": "legacy-Pa55" }))
                .unwrap_or_default(),
            ),
            Some("application/json"),
        )
        .await;
    assert_eq!(authn.ok()["status"], "SUCCESS");
    assert_eq!(pwd.posts()[0].header("authorization"), Some("Bearer tok-2"));
    assert_eq!(form(&tokens.posts()[1].body).get("client_secret").map(String::as_str), Some("flows-secret"));

    // User import.
    let imp = Receiver::start().await;
    imp.always_json(200, r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"nickName":"imported"}}]}"#);
    let ihook = s
        .post("/api/v1/inlineHooks", oauth_hook("imp", "com.okta.import.transform", &imp.url, &tokens.url, secret))
        .await
        .ok()
        .clone();
    let app = s
        .post(
            "/api/v1/apps",
            json!({ "name": "haken_import", "label": "OAuth source", "signOnMode": "BOOKMARK",
        "settings": { "import": { "inlineHookId": id_of(&ihook), "matching": ["LOGIN"] } } }),
        )
        .await
        .ok()
        .clone();
    let app_id = id_of(&app);
    let started = s
        .send(reqwest::Method::POST, &format!("/api/v1/apps/{app_id}/imports"), Some(crate::harness::TOKEN),
            Some(b"userName,email,firstName,lastName\nrow1@example.org,row1@example.org,R,One\nrow2@example.org,row2@example.org,R,Two\n".to_vec()), Some("text/csv"))
        .await;
    assert_eq!(started.status, 202, "{}", started.body);
    let path = format!("/api/v1/apps/{app_id}/imports/{}", id_of(&started.body));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let job = loop {
        let j = s.get(&path).await.ok().clone();
        if j["status"] != "RUNNING" {
            break j;
        }
        assert!(std::time::Instant::now() < deadline, "import did not finish: {j}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(job["counts"]["created"], 2, "{job}");
    assert_eq!(s.get("/api/v1/users/row1@example.org").await.ok()["profile"]["nickName"], "imported");
    assert_eq!(imp.posts().len(), 2);
    assert!(
        imp.posts().iter().all(|p| p.header("authorization") == Some("Bearer tok-3")),
        "one token for the whole job"
    );
    assert_eq!(tokens.posts().len(), 3);
    s.stop().await;
}

/// Runs `haken inline <args>` against the server.
async fn inline_cli(s: &TestServer, args: &[&str]) -> (bool, String, String) {
    let dir = crate::harness::tempdir::Dir::new("inline-cli");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_haken"));
    cmd.arg("inline").args(args).args(["--url", &s.base, "--token", crate::harness::TOKEN]);
    cmd.current_dir(&dir.0).env_remove("HAKEN_URL").env_remove("HAKEN_TOKEN").stdin(std::process::Stdio::null());
    let out = cmd.output().await.expect("haken runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn cli_lists_samples_and_previews(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let hook = s.create_inline_hook("cli preview", "com.okta.import.transform", &r.url).await;
    let id = id_of(&hook);
    let (ok, out, err) = inline_cli(&s, &["list"]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&id) && out.contains("com.okta.import.transform") && out.contains("failOpen"), "{out}");

    // The sample of the type goes out, and a good answer comes back as JSON.
    let answer = r#"{"commands":[{"type":"com.okta.action.update","value":{"result":"CREATE_USER"}}]}"#;
    r.script([Reply::Json(200, answer.to_owned())]);
    let (ok, out, err) = inline_cli(&s, &["preview", &id, "--json"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap_or_default(),
        serde_json::from_str::<Value>(answer).unwrap_or_default()
    );
    let sent = r.posts().last().map(|p| p.json()).unwrap_or_default();
    assert_eq!(sent["eventType"], "com.okta.import.transform");
    assert_eq!(sent["data"]["action"]["result"], "CREATE_USER");

    // A bad answer fails the command with the reason.
    r.script([Reply::Json(
        200,
        r#"{"commands":[{"type":"com.okta.action.update","value":{"result":"MERGE"}}]}"#.to_owned(),
    )]);
    let (ok, _, err) = inline_cli(&s, &["preview", &id]).await;
    assert!(!ok);
    assert!(err.contains("value.result must be") && err.contains("commands[0]"), "{err}");

    // Your own request from a file; `sample` prints one to start from.
    let (ok, sample, _) = inline_cli(&s, &["sample", "com.okta.import.transform"]).await;
    assert!(ok);
    let mut edited: Value = serde_json::from_str(&sample).unwrap_or_default();
    edited["data"]["appUser"]["profile"]["userName"] = json!("edited");
    let dir = crate::harness::tempdir::Dir::new("inline-file");
    let file = dir.0.join("request.json");
    std::fs::write(&file, edited.to_string()).expect("write");
    r.script([Reply::Status(204)]);
    let (ok, out, err) = inline_cli(&s, &["preview", &id, "--file", &file.display().to_string()]).await;
    assert!(ok, "{err}");
    assert!(out.contains("meets the contract"), "{out}");
    assert_eq!(
        r.posts().last().map(|p| p.json()["data"]["appUser"]["profile"]["userName"].clone()),
        Some(json!("edited"))
    );
    let (ok, _, err) = inline_cli(&s, &["sample", "com.okta.nope"]).await;
    assert!(!ok && err.contains("not an inline hook type"), "{err}");
    s.stop().await;
}
