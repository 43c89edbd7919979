//! Sign-in (`POST /api/v1/authn`) end to end: local passwords, the password import hook
//! against a real handler (spec 4.3) with every way it can fail, lockout and unlock, the
//! System Log trail (without the typed password), rate limits and session lookup.

use std::time::Duration;

use haken_core::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::harness::{Answer, Backend, TestServer};
use crate::receiver::{Receiver, Reply};

both!(
    local_password_sign_in,
    password_import_verified_once,
    password_import_failures_fail_closed,
    lockout_and_unlock,
    inactive_missing_shadow_and_fail_open_hooks,
    sessions_and_rate_limit,
);

/// The password `TestServer::create_user` sets.
const LOCAL_PW: &str = "Corr3ct-Horse-Battery";
/// What users of the legacy system type; deliberately fails Haken's password policy
/// (no digit), which must not matter for an imported password.
const LEGACY_PW: &str = "legacy-Secret-horse";
const PWD_HOOK: &str = "com.okta.user.credential.password.import";
const VERIFIED: &str = r#"{"commands":[{"type":"com.okta.action.update","value":{"credential":"VERIFIED"}}]}"#;
const UNVERIFIED: &str = r#"{"commands":[{"type":"com.okta.action.update","value":{"credential":"UNVERIFIED"}}]}"#;

async fn authn(s: &TestServer, username: &str, password: &str) -> Answer {
    let body = json!({
        "username": username,
        "password": password,
        "options": { "multiOptionalFactorEnroll": false, "warnBeforePasswordExpired": true },
        "context": { "deviceToken": "26q43Ak9Eh04p7H6Nnx0m69JqYOrfVBY" },
    });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    s.send(Method::POST, "/api/v1/authn", None, Some(bytes), Some("application/json")).await
}

/// The error body without its per-request `errorId`.
fn failure_shape(a: &Answer) -> Value {
    let mut b = a.expect_error(401, "E0000004").clone();
    if let Some(o) = b.as_object_mut() {
        o.remove("errorId");
    }
    b
}

/// An active user whose password the import hook vouches for.
async fn hook_user(s: &TestServer, login: &str) -> String {
    let a = s
        .post(
            "/api/v1/users?activate=true",
            json!({
                "profile": { "login": login, "email": login, "firstName": "Lee", "lastName": "Chen" },
                "credentials": { "password": { "hook": { "type": "default" } } }
            }),
        )
        .await;
    assert_eq!(a.ok()["status"], "ACTIVE");
    a.body["id"].as_str().unwrap_or_default().to_owned()
}

async fn password_hook(s: &TestServer, uri: &str) -> String {
    let h = s.create_inline_hook("Legacy passwords", PWD_HOOK, uri).await;
    h["id"].as_str().unwrap_or_default().to_owned()
}

/// Changes a hook's execution settings (Haken's extension of the Inline Hooks API).
async fn set_execution(s: &TestServer, id: &str, execution: Value) {
    let a = s.post(&format!("/api/v1/inlineHooks/{id}"), json!({ "execution": execution })).await;
    a.ok();
}

fn count(events: &[Value], event_type: &str, result: &str) -> usize {
    events.iter().filter(|e| e["eventType"] == event_type && e["outcome"]["result"] == result).count()
}

fn assert_no_password(events: &[Value], password: &str) {
    for e in events {
        let text = e.to_string();
        assert!(!text.contains(password), "the typed password leaked into {}: {text}", e["eventType"]);
    }
}

async fn local_password_sign_in(backend: Backend) {
    let s = TestServer::start(backend).await;
    let user = s.create_user("ada@example.org", "Ada", "Lovelace").await;
    let id = user["id"].as_str().unwrap_or_default();

    // Usernames ignore case; no API token is needed.
    let ok = authn(&s, "ADA@example.org", LOCAL_PW).await;
    let body = ok.ok().clone();
    assert_eq!(body["status"], "SUCCESS");
    let token = body["sessionToken"].as_str().unwrap_or_default();
    assert!(token.len() >= 40 && token.bytes().all(|b| b.is_ascii_alphanumeric()), "{token}");
    assert!(Timestamp::parse(body["expiresAt"].as_str().unwrap_or_default()).is_some_and(|t| t > Timestamp::now()));
    let u = &body["_embedded"]["user"];
    assert_eq!(u["id"], id);
    assert_eq!(u["passwordChanged"], user["passwordChanged"]);
    assert_eq!(u["profile"]["login"], "ada@example.org");
    assert_eq!(u["profile"]["firstName"], "Ada");
    assert_eq!(u["profile"]["lastName"], "Lovelace");
    assert!(u["profile"]["locale"].is_string() && u["profile"]["timeZone"].is_string());
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    assert!(ok.header("x-rate-limit-remaining").is_some());
    assert!(!body.to_string().contains(LOCAL_PW));
    let after = s.get(&format!("/api/v1/users/{id}")).await;
    assert!(after.ok()["lastLogin"].is_string(), "lastLogin is set");

    // Wrong password, unknown user, a suspended user with the right password, a login that is
    // an id: the same answer.
    let wrong = failure_shape(&authn(&s, "ada@example.org", "Wrong-Password-1").await);
    let unknown = failure_shape(&authn(&s, "nobody@example.org", LOCAL_PW).await);
    let by_id = failure_shape(&authn(&s, id, LOCAL_PW).await);
    let bob = s.create_user("bob@example.org", "Bob", "Stone").await;
    let bob_id = bob["id"].as_str().unwrap_or_default();
    s.post(&format!("/api/v1/users/{bob_id}/lifecycle/suspend"), json!(null)).await.ok();
    let suspended = failure_shape(&authn(&s, "bob@example.org", LOCAL_PW).await);
    assert_eq!(
        wrong,
        json!({ "errorCode": "E0000004", "errorSummary": "Authentication failed", "errorLink": "E0000004", "errorCauses": [] })
    );
    for other in [&unknown, &by_id, &suspended] {
        assert_eq!(&wrong, other, "every failure looks the same");
    }

    // An expired password is right but starts no session (nor counts as a failure).
    let cy = s.create_user("cy@example.org", "Cy", "Young").await;
    let cy_id = cy["id"].as_str().unwrap_or_default();
    s.post(&format!("/api/v1/users/{cy_id}/lifecycle/expire_password"), json!(null)).await.ok();
    let expired = authn(&s, "cy@example.org", LOCAL_PW).await;
    assert_eq!(expired.ok()["status"], "PASSWORD_EXPIRED");
    assert!(expired.body.get("sessionToken").is_none());
    assert_eq!(expired.body["_embedded"]["user"]["id"], cy_id);
    failure_shape(&authn(&s, "cy@example.org", "Wrong-Password-1").await);

    // Bad requests are told what is wrong (without echoing what was sent).
    let missing = s
        .send(
            Method::POST,
            "/api/v1/authn",
            None,
            Some(br#"{"username":"ada@example.org"}"#.to_vec()),
            Some("application/json"),
        )
        .await;
    missing.expect_error(400, "E0000001");
    let typed = s
        .send(
            Method::POST,
            "/api/v1/authn",
            None,
            Some(br#"{"username":"ada@example.org","password":98765}"#.to_vec()),
            Some("application/json"),
        )
        .await;
    assert!(!typed.expect_error(400, "E0000001").to_string().contains("98765"));
    s.send(Method::POST, "/api/v1/authn", None, Some(b"{oops".to_vec()), Some("application/json"))
        .await
        .expect_error(400, "E0000003");

    let events = s.events().await;
    let starts: Vec<&Value> = events.iter().filter(|e| e["eventType"] == "user.session.start").collect();
    let success: Vec<&&Value> = starts.iter().filter(|e| e["outcome"]["result"] == "SUCCESS").collect();
    assert_eq!(success.len(), 1);
    let ev = success[0];
    assert_eq!(ev["actor"]["id"], id);
    assert_eq!(ev["actor"]["type"], "User");
    assert_eq!(ev["authenticationContext"]["credentialType"], "PASSWORD");
    assert!(ev["authenticationContext"]["externalSessionId"].is_string());
    assert!(ev["client"]["ipAddress"].is_string());
    let reasons: Vec<&str> = starts
        .iter()
        .filter(|e| e["outcome"]["result"] == "FAILURE")
        .filter_map(|e| e["outcome"]["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "INVALID_CREDENTIALS",
            "INVALID_CREDENTIALS",
            "INVALID_CREDENTIALS",
            "USER_NOT_ACTIVE",
            "PASSWORD_EXPIRED",
            "INVALID_CREDENTIALS"
        ]
    );
    let unknown_ev = starts.iter().find(|e| e["actor"]["alternateId"] == "nobody@example.org");
    assert!(unknown_ev.is_some_and(|e| e["actor"]["id"] == "unknown"), "the typed username is the actor");
    let auth: Vec<&Value> = events.iter().filter(|e| e["eventType"] == "user.authentication.authenticate").collect();
    assert_eq!(auth.len(), 4, "one per password actually checked");
    assert_eq!(auth[0]["outcome"]["result"], "SUCCESS");
    assert_eq!(auth[0]["authenticationContext"]["credentialProvider"], "OKTA_CREDENTIAL_PROVIDER");
    assert_eq!(auth[1]["outcome"]["reason"], "INVALID_CREDENTIALS");
    assert_no_password(&events, LOCAL_PW);
    assert_no_password(&events, "Wrong-Password-1");
    s.stop().await;
}

async fn password_import_verified_once(backend: Backend) {
    let s = TestServer::start(backend).await;
    let rx = Receiver::start().await;
    rx.respond_with(|r| {
        // A handler that checks what Okta would send before vouching.
        let j = r.json();
        let c = &j["data"]["context"]["credential"];
        let verdict = if c["password"] == LEGACY_PW { VERIFIED } else { UNVERIFIED };
        Reply::Json(200, verdict.to_owned())
    });
    let hook_id = password_hook(&s, &rx.url).await;
    let id = hook_user(&s, "lee.chen@example.org").await;

    let first = authn(&s, "Lee.Chen@example.org", LEGACY_PW).await;
    assert_eq!(first.ok()["status"], "SUCCESS");
    assert!(first.body["sessionToken"].is_string());
    let posts = rx.posts();
    assert_eq!(posts.len(), 1);
    let p = &posts[0];
    assert_eq!(p.header("authorization"), Some("Bearer hook-secret"));
    assert_eq!(p.header("x-test"), Some("yes"));
    assert_eq!(p.header("content-type"), Some("application/json"));
    let j = p.json();
    assert_eq!(j["eventType"], PWD_HOOK);
    assert_eq!(j["eventTypeVersion"], "1.0");
    assert_eq!(j["cloudEventVersion"], "0.1");
    assert_eq!(j["contentType"], "application/json");
    assert_eq!(j["source"], format!("{}/api/v1/inlineHooks/{hook_id}", s.base));
    assert!(j["eventId"].as_str().is_some_and(|e| e.len() == 22));
    assert_eq!(
        j["data"]["context"]["credential"],
        json!({ "username": "Lee.Chen@example.org", "password": LEGACY_PW })
    );
    assert_eq!(j["data"]["action"], json!({ "credential": "UNVERIFIED" }));
    let req = &j["data"]["context"]["request"];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["url"]["value"], "/api/v1/authn");
    assert!(req["id"].is_string() && req["ipAddress"].is_string());

    // The password is now Haken's: the next sign-ins are checked locally.
    let user = s.get(&format!("/api/v1/users/{id}")).await;
    assert!(user.ok()["passwordChanged"].is_string());
    assert_eq!(user.body["credentials"]["provider"]["type"], "OKTA");
    assert_eq!(authn(&s, "lee.chen@example.org", LEGACY_PW).await.ok()["status"], "SUCCESS");
    failure_shape(&authn(&s, "lee.chen@example.org", "not-the-password").await);
    assert_eq!(rx.posts().len(), 1, "the hook is asked only until it vouched once");

    let events = s.events().await;
    assert_eq!(count(&events, "user.import.password", "SUCCESS"), 1);
    assert_eq!(count(&events, "user.import.password", "FAILURE"), 0);
    let import = events.iter().find(|e| e["eventType"] == "user.import.password");
    assert!(import.is_some_and(|e| e["target"][0]["id"] == id.as_str()));
    let auth: Vec<&Value> = events.iter().filter(|e| e["eventType"] == "user.authentication.authenticate").collect();
    assert_eq!(auth[0]["authenticationContext"]["credentialProvider"], "IMPORT");
    assert_eq!(auth[1]["authenticationContext"]["credentialProvider"], "OKTA_CREDENTIAL_PROVIDER");
    assert_eq!(count(&events, "user.session.start", "SUCCESS"), 2);
    let executed = events.iter().find(|e| e["eventType"] == "inline_hook.executed");
    assert!(executed.is_some_and(|e| e["outcome"]["result"] == "SUCCESS"));
    // The import and the hook's events belong to the sign-in request.
    let first_tx = import.map(|e| e["transaction"]["id"].clone());
    assert!(first_tx.is_some());
    for t in ["inline_hook.executed", "inline_hook.response.processed"] {
        let e = events.iter().find(|e| e["eventType"] == t);
        assert_eq!(e.map(|e| e["transaction"]["id"].clone()), first_tx, "{t}");
    }
    assert_no_password(&events, LEGACY_PW);
    s.stop().await;
}

async fn password_import_failures_fail_closed(backend: Backend) {
    let s = TestServer::start(backend).await;
    let rx = Receiver::start().await;
    let hook_id = password_hook(&s, &rx.url).await;
    // Keep the timeout case fast.
    set_execution(&s, &hook_id, json!({ "timeoutMs": 300 })).await;
    let id = hook_user(&s, "sam@example.org").await;
    let big = format!(
        r#"{{"commands":[{{"type":"com.okta.action.update","value":{{"credential":"VERIFIED"}}}}],"debugContext":{{"pad":"{}"}}}}"#,
        "x".repeat(300 * 1024)
    );
    let echo = format!(r#"{{"error":"boom","request":{{"credential":{{"password":"{LEGACY_PW}"}}}}}}"#);
    let slow = Reply::SlowJson(Duration::from_millis(900), 200, VERIFIED.to_owned());
    // (what the handler does, the replies it gives, how many calls that takes)
    let cases: Vec<(&str, Vec<Reply>, usize)> = vec![
        ("UNVERIFIED", vec![Reply::Json(200, UNVERIFIED.into())], 1),
        ("204", vec![Reply::Status(204)], 1),
        ("empty object", vec![Reply::Json(200, "{}".into())], 1),
        ("error object", vec![Reply::Json(200, r#"{"error":{"errorSummary":"legacy store says no"}}"#.into())], 1),
        ("500 echoing the request, retried once", vec![Reply::Json(500, echo.clone()), Reply::Json(500, echo)], 2),
        ("malformed JSON", vec![Reply::Json(200, "{not json".into())], 1),
        ("oversize body", vec![Reply::Json(200, big)], 1),
        (
            "wrong command type",
            vec![Reply::Json(200, r#"{"commands":[{"type":"com.okta.user.profile.update","value":{}}]}"#.into())],
            1,
        ),
        ("timeout, retried once", vec![slow.clone(), slow], 2),
    ];
    let mut calls = 0;
    for (what, replies, n) in &cases {
        rx.script(replies.clone());
        let a = authn(&s, "sam@example.org", LEGACY_PW).await;
        failure_shape(&a);
        calls += n;
        assert_eq!(rx.posts().len(), calls, "{what}: the hook is asked again after a failure");
    }
    // Four UNVERIFIED-like answers counted; the default lockout (10) is not reached.
    let user = s.get(&format!("/api/v1/users/{id}")).await;
    assert_eq!(user.ok()["status"], "ACTIVE");
    assert!(user.body["passwordChanged"].is_null(), "nothing was imported");
    rx.script([Reply::Json(200, VERIFIED.into())]);
    assert_eq!(authn(&s, "sam@example.org", LEGACY_PW).await.ok()["status"], "SUCCESS");

    let events = s.events().await;
    assert_eq!(count(&events, "user.import.password", "FAILURE"), cases.len());
    assert_eq!(count(&events, "user.import.password", "SUCCESS"), 1);
    let failed_calls: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["eventType"] == "inline_hook.executed" && e["outcome"]["result"] == "FAILURE")
        .map(|e| {
            let reason = e["outcome"]["reason"].as_str().unwrap_or_default().to_owned();
            let why = e["debugContext"]["debugData"]["failureReason"].as_str().unwrap_or_default().to_owned();
            (reason, why)
        })
        .collect();
    let reasons: Vec<&str> = failed_calls.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(reasons, ["HTTP_STATUS", "MALFORMED_RESPONSE", "RESPONSE_TOO_LARGE", "TIMEOUT"]);
    assert!(failed_calls.iter().all(|(_, why)| !why.is_empty()), "each failure says why: {failed_calls:?}");
    // The engine never quotes a password import handler's body (it may echo the password).
    assert!(failed_calls[0].1.contains("not shown"), "the echoed body is not quoted: {}", failed_calls[0].1);
    let invalid = events
        .iter()
        .find(|e| e["eventType"] == "inline_hook.response.processed" && e["outcome"]["reason"] == "INVALID_RESPONSE");
    assert!(
        invalid.is_some_and(|e| e["debugContext"]["debugData"]["failureReason"]
            .as_str()
            .is_some_and(|w| w.contains("com.okta.user.profile.update"))),
        "the wrong command is named"
    );
    let import_reasons: Vec<&str> = events
        .iter()
        .filter(|e| e["eventType"] == "user.import.password" && e["outcome"]["result"] == "FAILURE")
        .filter_map(|e| e["outcome"]["reason"].as_str())
        .collect();
    assert_eq!(
        import_reasons,
        [
            "UNVERIFIED",
            "UNVERIFIED",
            "UNVERIFIED",
            "UNVERIFIED",
            "HTTP_STATUS",
            "MALFORMED_RESPONSE",
            "RESPONSE_TOO_LARGE",
            "INVALID_RESPONSE",
            "TIMEOUT"
        ]
    );
    assert_no_password(&events, LEGACY_PW);
    s.stop().await;
}

async fn lockout_and_unlock(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.lockout_attempts = 3).await;
    let id = s.create_user("kim@example.org", "Kim", "Park").await["id"].as_str().unwrap_or_default().to_owned();
    // A success resets the count.
    for _ in 0..2 {
        failure_shape(&authn(&s, "kim@example.org", "Wrong-Password-1").await);
    }
    authn(&s, "kim@example.org", LOCAL_PW).await.ok();
    for _ in 0..2 {
        failure_shape(&authn(&s, "kim@example.org", "Wrong-Password-1").await);
    }
    assert_eq!(s.get(&format!("/api/v1/users/{id}")).await.ok()["status"], "ACTIVE");
    // The third failure in a row locks; the answer stays the same.
    failure_shape(&authn(&s, "kim@example.org", "Wrong-Password-1").await);
    let user = s.get(&format!("/api/v1/users/{id}")).await;
    assert_eq!(user.ok()["status"], "LOCKED_OUT");
    assert!(user.body["_links"]["unlock"].is_object());
    // Locked: even the right password is refused, with the same answer.
    failure_shape(&authn(&s, "kim@example.org", LOCAL_PW).await);
    let events = s.events().await;
    let locks: Vec<&Value> = events.iter().filter(|e| e["eventType"] == "user.account.lock").collect();
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0]["target"][0]["id"], id.as_str());
    let last = events.iter().rev().find(|e| e["eventType"] == "user.session.start");
    assert!(last.is_some_and(|e| e["outcome"]["reason"] == "LOCKED_OUT"));

    s.post(&format!("/api/v1/users/{id}/lifecycle/unlock"), json!(null)).await.ok();
    assert_eq!(authn(&s, "kim@example.org", LOCAL_PW).await.ok()["status"], "SUCCESS");
    // The count started again from zero.
    for _ in 0..2 {
        failure_shape(&authn(&s, "kim@example.org", "Wrong-Password-1").await);
    }
    assert_eq!(s.get(&format!("/api/v1/users/{id}")).await.ok()["status"], "ACTIVE");
    s.stop().await;
}

async fn inactive_missing_shadow_and_fail_open_hooks(backend: Backend) {
    let s = TestServer::start(backend).await;
    hook_user(&s, "max@example.org").await;
    // No hook at all: nobody can vouch, the sign-in fails.
    failure_shape(&authn(&s, "max@example.org", LEGACY_PW).await);

    let rx = Receiver::start().await;
    rx.always_json(200, VERIFIED);
    let hook_id = password_hook(&s, &rx.url).await;
    s.post(&format!("/api/v1/inlineHooks/{hook_id}/lifecycle/deactivate"), json!(null)).await.ok();
    failure_shape(&authn(&s, "max@example.org", LEGACY_PW).await);
    assert!(rx.posts().is_empty(), "an inactive hook is not called");

    // Shadow mode asks the handler and records its verdict but applies nothing: with no
    // verified password there is nothing to let the user in with.
    s.post(&format!("/api/v1/inlineHooks/{hook_id}/lifecycle/activate"), json!(null)).await.ok();
    set_execution(&s, &hook_id, json!({ "shadow": true })).await;
    failure_shape(&authn(&s, "max@example.org", LEGACY_PW).await);
    assert_eq!(rx.posts().len(), 1);
    // Failing open cannot let anyone in either.
    set_execution(&s, &hook_id, json!({ "shadow": false, "failMode": "failOpen" })).await;
    rx.script([Reply::Status(500), Reply::Status(500)]);
    failure_shape(&authn(&s, "max@example.org", LEGACY_PW).await);
    assert_eq!(rx.posts().len(), 3);
    // Back to normal, the hook still decides on the next attempt.
    assert_eq!(authn(&s, "max@example.org", LEGACY_PW).await.ok()["status"], "SUCCESS");

    let events = s.events().await;
    let reasons: Vec<&str> = events
        .iter()
        .filter(|e| e["eventType"] == "user.import.password" && e["outcome"]["result"] == "FAILURE")
        .filter_map(|e| e["outcome"]["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["NO_ACTIVE_HOOK", "NO_ACTIVE_HOOK", "SHADOW_MODE", "HOOK_FAILED"]);
    let shadow = events.iter().find(|e| {
        e["eventType"] == "inline_hook.response.processed" && e["debugContext"]["debugData"]["shadow"] == true
    });
    assert!(
        shadow.is_some_and(|e| e["debugContext"]["debugData"]["shadowEffect"].as_str() == Some("Verified")),
        "shadow mode records what the handler decided"
    );
    let starts: Vec<&str> = events
        .iter()
        .filter(|e| e["eventType"] == "user.session.start" && e["outcome"]["result"] == "FAILURE")
        .filter_map(|e| e["outcome"]["reason"].as_str())
        .collect();
    assert_eq!(starts, ["VERIFICATION_ERROR"; 4]);
    assert_no_password(&events, LEGACY_PW);
    s.stop().await;
}

async fn sessions_and_rate_limit(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.signin_per_minute = 4).await;
    let id = s.create_user("zoe@example.org", "Zoe", "Ray").await["id"].as_str().unwrap_or_default().to_owned();
    let a = authn(&s, "zoe@example.org", LOCAL_PW).await;
    let token = a.ok()["sessionToken"].as_str().unwrap_or_default().to_owned();
    let now = Timestamp::now();
    let user = haken_flows::signin::session_user(s.store(), &token, now).await;
    assert_eq!(user.map(|u| u.id).ok().as_deref(), Some(id.as_str()));
    for bad in ["", "made-up-token", &token[..20], &format!("{token}x")] {
        let e = haken_flows::signin::session_user(s.store(), bad, now).await;
        assert_eq!(e.err().map(|e| e.code.code()), Some("E0000011"), "{bad}");
    }
    // Only the digest is stored.
    let session = s
        .store()
        .doc_by_lookup::<haken_core::session::Session>(&haken_core::token::hash_token(&token))
        .await
        .ok()
        .flatten();
    assert!(session.is_some_and(|ss| ss.user_id == id && !ss.token_hash.contains(&token)));
    // Expired sessions and users who may no longer sign in are refused.
    let later = now.plus_millis(haken_core::session::SESSION_TTL_MS + 1);
    assert!(haken_flows::signin::session_user(s.store(), &token, later).await.is_err());
    s.post(&format!("/api/v1/users/{id}/lifecycle/suspend"), json!(null)).await.ok();
    assert!(haken_flows::signin::session_user(s.store(), &token, now).await.is_err());

    // Four sign-in calls per minute from one address (one made above). The window is the
    // clock minute, so a call may land in the next one: allow for one fresh window.
    let mut limited = None;
    for _ in 0..8 {
        let a = authn(&s, "zoe@example.org", LOCAL_PW).await;
        if a.status == 429 {
            limited = Some(a);
            break;
        }
        assert_eq!(a.status, 401, "{}", a.body);
    }
    let limited = limited.expect("sign-ins are rate-limited");
    limited.expect_error(429, "E0000047");
    assert_eq!(limited.header("x-rate-limit-remaining"), Some("0"));
    s.stop().await;
}
