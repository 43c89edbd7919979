//! Self-service registration, progressive profiling and the profile-enrollment policy, end to
//! end: the policy API, the registration inline hook against real handlers on 127.0.0.1 (its
//! payload, commands, denials, every failure mode, fail-open and shadow), the rate limit, the
//! hosted sign-up page, and progressive profile updates with a session token.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::harness::{Answer, Backend, TestServer};
use crate::receiver::{Receiver, Reply};

both!(
    policy_shapes_and_validation,
    concurrent_first_use_makes_one_policy,
    registration_without_hook,
    hook_payload_and_profile_update,
    hook_denials,
    hook_failures_deny_and_create_nothing,
    fail_open_and_shadow,
    registration_is_rate_limited,
    signup_page,
    progressive_profile,
);

const REGISTRATION_HOOK: &str = "com.okta.user.pre-registration";
const FAILED: &str = "There was an error creating your account. Please try registering again.";

async fn rule_path(s: &TestServer) -> String {
    let policies = s.get("/api/v1/policies?type=PROFILE_ENROLLMENT").await;
    let pid = policies.ok()[0]["id"].as_str().unwrap_or_default().to_owned();
    let rules = s.get(&format!("/api/v1/policies/{pid}/rules")).await;
    let rid = rules.ok()[0]["id"].as_str().unwrap_or_default().to_owned();
    format!("/api/v1/policies/{pid}/rules/{rid}")
}

/// PUTs the rule with `enrollment` merged over its current `actions.profileEnrollment`.
async fn put_enrollment(s: &TestServer, enrollment: Value) -> Answer {
    let path = rule_path(s).await;
    let mut rule = s.get(&path).await.ok().clone();
    if let (Some(pe), Some(patch)) = (rule["actions"]["profileEnrollment"].as_object_mut(), enrollment.as_object()) {
        for (k, v) in patch {
            pe.insert(k.clone(), v.clone());
        }
    }
    s.put(&path, rule).await
}

/// Creates a registration hook calling `url` and attaches it to the policy; returns its id.
async fn attach_hook(s: &TestServer, url: &str) -> String {
    let hook = s.create_inline_hook("Registration gate", REGISTRATION_HOOK, url).await;
    let id = hook["id"].as_str().unwrap_or_default().to_owned();
    put_enrollment(s, json!({ "preRegistrationInlineHooks": [ { "inlineHookId": id } ] })).await.ok();
    id
}

fn signup(email: &str) -> Value {
    json!({
        "userProfile": { "email": email, "firstName": "Maya", "lastName": "Ortiz" },
        "credentials": { "password": { "value": "Tr0ub4dor&3-long" } }
    })
}

/// `POST /api/v1/registration` without any credentials.
async fn register(s: &TestServer, body: Value) -> Answer {
    let bytes = serde_json::to_vec(&body).expect("json");
    s.send(Method::POST, "/api/v1/registration", None, Some(bytes), Some("application/json")).await
}

async fn user_count(s: &TestServer) -> usize {
    s.get("/api/v1/users").await.ok().as_array().map(Vec::len).unwrap_or(0)
}

async fn add_custom_attribute(s: &TestServer, name: &str) {
    s.post(
        "/api/v1/meta/schemas/user/default",
        json!({ "definitions": { "custom": { "id": "#custom", "type": "object", "properties": {
            name: { "title": name, "type": "string" }
        } } } }),
    )
    .await
    .ok();
}

async fn policy_shapes_and_validation(b: Backend) {
    let s = TestServer::start(b).await;
    let list = s.get("/api/v1/policies?type=PROFILE_ENROLLMENT").await;
    let policies = list.ok().as_array().cloned().unwrap_or_default();
    assert_eq!(policies.len(), 1);
    let p = &policies[0];
    let pid = p["id"].as_str().unwrap_or_default();
    assert!(pid.starts_with("00p") && pid.len() == 20, "{pid}");
    assert_eq!(p["status"], "ACTIVE");
    assert_eq!(p["name"], "Default Policy");
    assert_eq!(p["priority"], 1);
    assert_eq!(p["system"], true);
    assert_eq!(p["type"], "PROFILE_ENROLLMENT");
    assert!(p["conditions"].is_null());
    assert!(p["created"].as_str().is_some() && p["lastUpdated"].as_str().is_some());
    assert!(p["_links"]["self"]["href"].as_str().is_some_and(|h| h.ends_with(&format!("/api/v1/policies/{pid}"))));
    assert!(p["_links"]["rules"]["href"].as_str().is_some_and(|h| h.ends_with("/rules")));

    assert_eq!(s.get(&format!("/api/v1/policies/{pid}")).await.ok()["id"], pid);
    assert_eq!(s.get("/api/v1/policies?type=OKTA_SIGN_ON").await.ok(), &json!([]));
    s.get("/api/v1/policies?type=NONSENSE").await.expect_error(400, "E0000001");
    s.get("/api/v1/policies").await.expect_error(400, "E0000001");
    s.get("/api/v1/policies/00pnotapolicy0000001").await.expect_error(404, "E0000007");
    let unauth = s.send(Method::GET, "/api/v1/policies?type=PROFILE_ENROLLMENT", None, None, None).await;
    unauth.expect_error(401, "E0000011");

    let rules = s.get(&format!("/api/v1/policies/{pid}/rules")).await.ok().clone();
    assert_eq!(rules.as_array().map(Vec::len), Some(1));
    let path = rule_path(&s).await;
    let rule = s.get(&path).await.ok().clone();
    assert_eq!(rule, rules[0]);
    assert!(rule["id"].as_str().is_some_and(|i| i.starts_with("0pr") && i.len() == 20));
    assert_eq!(rule["name"], "Catch-all Rule");
    assert_eq!(rule["priority"], 99);
    assert_eq!(rule["system"], true);
    assert_eq!(rule["status"], "ACTIVE");
    assert_eq!(rule["type"], "PROFILE_ENROLLMENT");
    let pe = &rule["actions"]["profileEnrollment"];
    assert_eq!(pe["access"], "ALLOW");
    assert!(pe["preRegistrationInlineHooks"].is_null());
    assert!(pe["targetGroupIds"].is_null());
    assert_eq!(pe["unknownUserAction"], "REGISTER");
    assert_eq!(pe["activationRequirements"]["emailVerification"], false);
    let names: Vec<&str> =
        pe["profileAttributes"].as_array().into_iter().flatten().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(names, ["email", "firstName", "lastName"]);
    assert_eq!(pe["profileAttributes"][0], json!({ "name": "email", "label": "Email", "required": true }));
    s.get(&format!("/api/v1/policies/{pid}/rules/0prnotarule000000001")).await.expect_error(404, "E0000007");

    // The hook must exist, be a registration hook, and be alone.
    let bad =
        put_enrollment(&s, json!({ "preRegistrationInlineHooks": [ { "inlineHookId": "calnothere0000000001" } ] }))
            .await;
    bad.expect_error(400, "E0000001");
    assert!(
        bad.body["errorSummary"].as_str().is_some_and(|m| m.contains("preRegistrationInlineHooks")),
        "{}",
        bad.body
    );
    let import = s.create_inline_hook("Importer", "com.okta.import.transform", "http://127.0.0.1:9/x").await;
    let wrong = put_enrollment(&s, json!({ "preRegistrationInlineHooks": [ { "inlineHookId": import["id"] } ] })).await;
    wrong.expect_error(400, "E0000001");
    assert!(wrong.causes().iter().any(|c| c.contains("com.okta.import.transform")), "{:?}", wrong.causes());
    let h1 = s.create_inline_hook("Gate one", REGISTRATION_HOOK, "http://127.0.0.1:9/a").await;
    let h2 = s.create_inline_hook("Gate two", REGISTRATION_HOOK, "http://127.0.0.1:9/b").await;
    let two = put_enrollment(
        &s,
        json!({ "preRegistrationInlineHooks": [ { "inlineHookId": h1["id"] }, { "inlineHookId": h2["id"] } ] }),
    )
    .await;
    two.expect_error(400, "E0000001");
    assert!(two.causes().iter().any(|c| c.contains("at most one")));

    let attached = put_enrollment(&s, json!({ "preRegistrationInlineHooks": [ { "inlineHookId": h1["id"] } ] })).await;
    assert_eq!(
        attached.ok()["actions"]["profileEnrollment"]["preRegistrationInlineHooks"],
        json!([{ "inlineHookId": h1["id"] }])
    );
    assert_eq!(
        s.get(&path).await.ok()["actions"]["profileEnrollment"]["preRegistrationInlineHooks"][0]["inlineHookId"],
        h1["id"]
    );
    let updates = s.events_of("policy.rule.update").await;
    assert_eq!(updates.len(), 1, "one event per change");
    let targets: Vec<&str> =
        updates[0]["target"].as_array().into_iter().flatten().filter_map(|t| t["type"].as_str()).collect();
    assert_eq!(targets, ["PolicyEntity", "PolicyRule"]);
    assert_eq!(updates[0]["actor"]["type"], "ApiToken");

    let detached = put_enrollment(&s, json!({ "preRegistrationInlineHooks": [] })).await;
    assert!(detached.ok()["actions"]["profileEnrollment"]["preRegistrationInlineHooks"].is_null());
    put_enrollment(&s, json!({ "preRegistrationInlineHooks": [ { "inlineHookId": h1["id"] } ] })).await.ok();
    let nulled = put_enrollment(&s, json!({ "preRegistrationInlineHooks": null })).await;
    assert!(nulled.ok()["actions"]["profileEnrollment"]["preRegistrationInlineHooks"].is_null());

    // Attributes must be in the schema; email is always collected; the schema's required ones too.
    for attrs in [
        json!([{ "name": "email", "required": true }, { "name": "firstName", "required": true }, { "name": "lastName", "required": true }, { "name": "shoeSize" }]),
        json!([{ "name": "firstName", "required": true }, { "name": "lastName", "required": true }]),
        json!([{ "name": "email", "required": true }, { "name": "lastName", "required": true }]),
        json!([{ "name": "email", "required": false }, { "name": "firstName", "required": true }, { "name": "lastName", "required": true }]),
    ] {
        put_enrollment(&s, json!({ "profileAttributes": attrs })).await.expect_error(400, "E0000001");
    }
    let more = put_enrollment(
        &s,
        json!({ "profileAttributes": [
            { "name": "email", "label": "Work email", "required": true },
            { "name": "firstName", "required": true },
            { "name": "lastName", "label": "Surname", "required": true },
            { "name": "mobilePhone", "required": false }
        ] }),
    )
    .await;
    let attrs = more.ok()["actions"]["profileEnrollment"]["profileAttributes"].clone();
    assert_eq!(attrs[1]["label"], "First name", "a missing label takes the schema's title");
    assert_eq!(attrs[3], json!({ "name": "mobilePhone", "label": "Mobile phone", "required": false }));

    let mut rule = s.get(&path).await.ok().clone();
    rule["actions"]["profileEnrollment"]["somethingElse"] = json!(true);
    s.put(&path, rule).await.expect_error(400, "E0000001");
    put_enrollment(&s, json!({ "activationRequirements": { "emailVerification": true } }))
        .await
        .expect_error(400, "E0000001");
    put_enrollment(&s, json!({ "access": "MAYBE" })).await.expect_error(400, "E0000001");
    put_enrollment(&s, json!({ "targetGroupIds": ["00gnotagroup00000001"] })).await.expect_error(400, "E0000001");

    // DENY turns registration off.
    put_enrollment(&s, json!({ "access": "DENY" })).await.ok();
    register(&s, signup("nobody@example.org")).await.expect_error(403, "E0000006");
    assert_eq!(user_count(&s).await, 0);
    put_enrollment(&s, json!({ "access": "ALLOW" })).await.ok();
    register(&s, signup("somebody@example.org")).await.ok();
    s.stop().await;
}

async fn concurrent_first_use_makes_one_policy(b: Backend) {
    let s = TestServer::start(b).await;
    // Every request below may be the first use and try to create the default policy.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let http = s.http.clone();
            let url = if i % 2 == 0 {
                format!("{}/api/v1/policies?type=PROFILE_ENROLLMENT", s.base)
            } else {
                format!("{}/api/v1/policies/00pdefaultenroll0001/rules", s.base)
            };
            tokio::spawn(async move {
                let resp =
                    http.get(url).header("Authorization", format!("SSWS {}", crate::harness::TOKEN)).send().await;
                resp.map(|r| r.status().as_u16()).unwrap_or(0)
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap_or(0), 200);
    }
    let store = s.store();
    assert_eq!(store.count_docs::<haken_core::policy::Policy>().await.ok(), Some(1));
    assert_eq!(store.count_docs::<haken_core::policy::PolicyRule>().await.ok(), Some(1));
    s.stop().await;
}

async fn registration_without_hook(b: Backend) {
    let s = TestServer::start(b).await;
    let group = s.post("/api/v1/groups", json!({ "profile": { "name": "Self-registered" } })).await.ok().clone();
    put_enrollment(&s, json!({ "targetGroupIds": [group["id"]] })).await.ok();

    let a = register(&s, signup("maya@example.org")).await;
    let user = a.ok().clone();
    assert_eq!(user["status"], "ACTIVE");
    assert_eq!(user["profile"]["login"], "maya@example.org", "the login defaults to the email");
    assert!(user["credentials"]["password"].is_object());
    assert!(!a.body.to_string().contains("Tr0ub4dor"), "the password never comes back");
    let id = user["id"].as_str().unwrap_or_default();
    assert_eq!(&s.get(&format!("/api/v1/users/{id}")).await.ok().clone(), &user, "same JSON as GET /users/{{id}}");
    let groups = s.get(&format!("/api/v1/users/{id}/groups")).await.ok().clone();
    assert_eq!(groups[0]["id"], group["id"]);
    assert!(a.header("x-rate-limit-limit").is_some());

    let events = s.events().await;
    let tx = |t: &str| -> Vec<Value> {
        events.iter().filter(|e| e["eventType"] == t).map(|e| e["transaction"]["id"].clone()).collect()
    };
    assert_eq!(tx("user.lifecycle.create").len(), 1);
    assert_eq!(tx("user.lifecycle.create"), tx("user.lifecycle.activate"));
    assert_eq!(tx("user.lifecycle.create"), tx("group.user_membership.add"));
    assert!(s.events_of("inline_hook.executed").await.is_empty(), "no hook, no call");

    // Bad input, all before anything is written.
    let mut unknown = signup("x1@example.org");
    unknown["groupIds"] = json!([]);
    register(&s, unknown).await.expect_error(400, "E0000001");
    let mut no_pw = signup("x2@example.org");
    no_pw["credentials"] = json!({});
    register(&s, no_pw).await.expect_error(400, "E0000001");
    let mut weak = signup("x3@example.org");
    weak["credentials"]["password"]["value"] = json!("password");
    let w = register(&s, weak).await;
    w.expect_error(400, "E0000001");
    assert!(w.causes().iter().any(|c| c.starts_with("password:")));
    let mut extra = signup("x4@example.org");
    extra["userProfile"]["department"] = json!("Finance");
    let e = register(&s, extra).await;
    e.expect_error(400, "E0000001");
    assert!(e.causes().iter().any(|c| c.starts_with("department:")), "only collected attributes: {:?}", e.causes());
    let mut missing = signup("x5@example.org");
    missing["userProfile"]["lastName"] = json!("");
    let m = register(&s, missing).await;
    m.expect_error(400, "E0000001");
    assert!(m.causes().iter().any(|c| c.starts_with("lastName:")));
    let mut bad_email = signup("x6@example.org");
    bad_email["userProfile"]["email"] = json!("not-an-email");
    register(&s, bad_email).await.expect_error(400, "E0000001");
    let dup = register(&s, signup("MAYA@example.org")).await;
    dup.expect_error(400, "E0000001");
    assert!(dup.causes().iter().any(|c| c.starts_with("login:")));
    let raw =
        s.send(Method::POST, "/api/v1/registration", None, Some(b"{nope".to_vec()), Some("application/json")).await;
    raw.expect_error(400, "E0000003");
    assert_eq!(user_count(&s).await, 1);
    s.stop().await;
}

async fn hook_payload_and_profile_update(b: Backend) {
    let s = TestServer::start(b).await;
    add_custom_attribute(&s, "tier").await;
    let r = Receiver::start().await;
    r.always_json(
        200,
        r#"{"commands":[
            {"type":"com.okta.user.profile.update","value":{"tier":"gold","firstName":"Mia"}},
            {"type":"com.okta.user.profile.update","value":{"tier":"platinum"}}
        ],"debugContext":{"rule":"vip"}}"#,
    );
    let hook_id = attach_hook(&s, &r.url).await;
    let a = register(&s, signup("vip@example.org")).await;
    let user = a.ok().clone();
    assert_eq!(user["profile"]["tier"], "platinum", "commands apply in order");
    assert_eq!(user["profile"]["firstName"], "Mia");
    assert_eq!(user["profile"]["lastName"], "Ortiz");

    let posts = r.posts();
    assert_eq!(posts.len(), 1);
    let p = posts[0].json();
    assert_eq!(p["eventType"], REGISTRATION_HOOK);
    assert_eq!(p["eventTypeVersion"], "1.0");
    assert_eq!(p["cloudEventVersion"], "0.1");
    assert_eq!(p["contentType"], "application/json");
    assert_eq!(p["requestType"], "self.service.registration");
    assert!(p["source"].as_str().is_some_and(|src| src.ends_with(&format!("/api/v1/inlineHooks/{hook_id}"))));
    assert!(p["eventId"].as_str().is_some_and(|e| e.len() == 22));
    assert_eq!(p["data"]["action"], "ALLOW");
    assert_eq!(
        p["data"]["userProfile"],
        json!({ "email": "vip@example.org", "login": "vip@example.org", "firstName": "Maya", "lastName": "Ortiz" })
    );
    assert!(!posts[0].json().to_string().contains("Tr0ub4dor"), "the password is never sent to the hook");
    let req = &p["data"]["context"]["request"];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["url"]["value"], "/api/v1/registration");
    assert_eq!(req["ipAddress"], "127.0.0.1");
    assert_eq!(req["id"], a.header("x-okta-request-id").unwrap_or_default());
    assert_eq!(posts[0].header("authorization"), Some("Bearer hook-secret"));
    assert_eq!(posts[0].header("x-test"), Some("yes"));
    assert_eq!(posts[0].header("content-type"), Some("application/json"));

    // The hook's events commit with the user, in one transaction.
    let events = s.events().await;
    let of = |t: &str| events.iter().filter(|e| e["eventType"] == t).cloned().collect::<Vec<_>>();
    let created = of("user.lifecycle.create");
    let executed = of("inline_hook.executed");
    let processed = of("inline_hook.response.processed");
    assert_eq!((created.len(), executed.len(), processed.len()), (1, 1, 1));
    assert_eq!(executed[0]["transaction"]["id"], created[0]["transaction"]["id"]);
    assert_eq!(executed[0]["outcome"]["result"], "SUCCESS");
    assert_eq!(processed[0]["debugContext"]["debugData"]["debugContext"], json!({ "rule": "vip" }));

    // 204 means allow without changes.
    r.always_json(204, "");
    let plain = register(&s, signup("plain@example.org")).await;
    assert!(plain.ok()["profile"].get("tier").is_none());
    r.always_json(200, r#"{"commands":[{"type":"com.okta.action.update","value":{"registration":"ALLOW"}}]}"#);
    register(&s, signup("allowed@example.org")).await.ok();
    // An inactive hook is not asked.
    s.post(&format!("/api/v1/inlineHooks/{hook_id}/lifecycle/deactivate"), json!(null)).await.ok();
    let before = r.posts().len();
    register(&s, signup("quiet@example.org")).await.ok();
    assert_eq!(r.posts().len(), before);
    // Deleting it (only inactive hooks can be) leaves the policy pointing nowhere: not asked either.
    s.delete(&format!("/api/v1/inlineHooks/{hook_id}")).await.ok();
    register(&s, signup("after-delete@example.org")).await.ok();
    assert_eq!(r.posts().len(), before);
    s.stop().await;
}

async fn hook_denials(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    attach_hook(&s, &r.url).await;
    let causes = json!([
        {
            "errorSummary": "Use your example.org work address.",
            "reason": "INVALID_EMAIL_DOMAIN",
            "locationType": "body",
            "location": "data.userProfile.email",
            "domain": "end-user"
        },
        { "errorSummary": "Second cause", "reason": "OTHER" }
    ]);
    r.always_json(
        200,
        &json!({
            "commands": [ { "type": "com.okta.action.update", "value": { "registration": "DENY" } } ],
            "error": { "errorSummary": "We could not register this address.", "errorCauses": causes }
        })
        .to_string(),
    );
    let a = register(&s, signup("deny@elsewhere.net")).await;
    a.expect_error(400, "E0000001");
    assert_eq!(a.body["errorSummary"], "We could not register this address.");
    assert_eq!(a.body["errorCauses"], causes, "causes reach the caller exactly as sent");
    assert_eq!(user_count(&s).await, 0, "nothing was created");
    let processed = s.events_of("inline_hook.response.processed").await;
    assert_eq!(processed.len(), 1, "the hook's events are written without a user");
    assert_eq!(s.events_of("inline_hook.executed").await.len(), 1);
    assert!(s.events_of("user.lifecycle.create").await.is_empty());

    r.always_json(200, r#"{"commands":[{"type":"com.okta.action.update","value":{"registration":"DENY"}}]}"#);
    let plain = register(&s, signup("deny2@elsewhere.net")).await;
    plain.expect_error(400, "E0000001");
    assert_eq!(plain.body["errorSummary"], "Registration denied.");
    assert_eq!(plain.body["errorCauses"], json!([]));

    // Any error object denies, and its commands do not run.
    r.always_json(
        200,
        r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"firstName":"X"}}],"error":{}}"#,
    );
    let empty = register(&s, signup("deny3@elsewhere.net")).await;
    empty.expect_error(400, "E0000001");
    assert_eq!(empty.body["errorSummary"], "Registration cannot be completed at this time.");
    assert_eq!(user_count(&s).await, 0);
    s.stop().await;
}

async fn hook_failures_deny_and_create_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let hook_id = attach_hook(&s, &r.url).await;
    s.post(&format!("/api/v1/inlineHooks/{hook_id}"), json!({ "execution": { "timeoutMs": 300 } })).await.ok();
    let big = format!(r#"{{"debugContext":{{"pad":"{}"}}}}"#, "x".repeat(300 * 1024));
    let cases: Vec<(&str, Reply, usize, &str)> = vec![
        ("timeout", Reply::SlowJson(Duration::from_millis(800), 200, "{}".into()), 2, "TIMEOUT"),
        ("500", Reply::Json(500, r#"{"oops":true}"#.into()), 2, "HTTP_STATUS"),
        ("malformed", Reply::Json(200, "{not json".into()), 1, "MALFORMED_RESPONSE"),
        ("oversize", Reply::Json(200, big), 1, "RESPONSE_TOO_LARGE"),
        (
            "unknown command",
            Reply::Json(200, r#"{"commands":[{"type":"com.okta.identity.patch","value":[]}]}"#.into()),
            1,
            "INVALID_RESPONSE",
        ),
        (
            "progressive command",
            Reply::Json(
                200,
                r#"{"commands":[{"type":"com.okta.user.progressive.profile.update","value":{"firstName":"X"}}]}"#
                    .into(),
            ),
            1,
            "INVALID_RESPONSE",
        ),
        (
            "attribute not in schema",
            Reply::Json(
                200,
                r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"shoeSize":"44"}}]}"#.into(),
            ),
            1,
            "INVALID_RESPONSE",
        ),
    ];
    for (i, (name, reply, calls, reason)) in cases.into_iter().enumerate() {
        let before = r.posts().len();
        r.respond_with(move |_| reply.clone());
        let a = register(&s, signup(&format!("fail{i}@example.org"))).await;
        a.expect_error(400, "E0000001");
        assert_eq!(a.body["errorSummary"], FAILED, "{name}: {}", a.body);
        assert_eq!(r.posts().len() - before, calls, "{name}: attempts");
        assert_eq!(user_count(&s).await, 0, "{name}: nothing created");
        let events = s.events().await;
        let failed = events
            .iter()
            .filter(|e| e["eventType"] == "inline_hook.executed" || e["eventType"] == "inline_hook.response.processed")
            .filter(|e| e["outcome"]["result"] == "FAILURE")
            .filter(|e| e["transaction"]["id"] == a.header("x-okta-request-id").unwrap_or_default())
            .cloned()
            .collect::<Vec<_>>();
        assert_eq!(failed.len(), 1, "{name}: one failure event: {failed:?}");
        assert_eq!(failed[0]["outcome"]["reason"], reason, "{name}");
        assert!(failed[0]["debugContext"]["debugData"]["failureReason"].as_str().is_some_and(|m| !m.is_empty()));
    }
    s.stop().await;
}

async fn fail_open_and_shadow(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let hook_id = attach_hook(&s, &r.url).await;
    let path = format!("/api/v1/inlineHooks/{hook_id}");
    s.post(&path, json!({ "execution": { "failMode": "failOpen" } })).await.ok();
    r.always_json(500, "{}");
    let open = register(&s, signup("open@example.org")).await;
    assert_eq!(open.ok()["profile"]["firstName"], "Maya", "fail open: registered without the hook");

    s.post(&path, json!({ "execution": { "failMode": null, "shadow": true } })).await.ok();
    r.always_json(200, r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"firstName":"Shadowed"}}]}"#);
    let shadow = register(&s, signup("shadow@example.org")).await;
    assert_eq!(shadow.ok()["profile"]["firstName"], "Maya", "shadow mode applies nothing");
    let processed = s.events_of("inline_hook.response.processed").await;
    let last = processed.last().cloned().unwrap_or_default();
    assert_eq!(last["debugContext"]["debugData"]["shadow"], true);
    assert!(last["debugContext"]["debugData"]["shadowEffect"].as_str().is_some_and(|e| e.contains("Shadowed")));
    // A denial in shadow mode is recorded, not enforced.
    r.always_json(200, r#"{"error":{"errorSummary":"no"}}"#);
    register(&s, signup("shadow2@example.org")).await.ok();
    s.stop().await;
}

async fn registration_is_rate_limited(b: Backend) {
    let s = TestServer::start_with(b, |c| c.registration_per_minute = 2).await;
    // The budget is a window of the clock's minute: start early in one, so the requests below
    // cannot straddle two (the third would then find a fresh budget).
    let into_minute = haken_core::Timestamp::now().millis().rem_euclid(60_000);
    if into_minute > 40_000 {
        tokio::time::sleep(std::time::Duration::from_millis((60_000 - into_minute + 200) as u64)).await;
    }
    let first = register(&s, signup("r1@example.org")).await;
    first.ok();
    assert_eq!(first.header("x-rate-limit-limit"), Some("2"));
    assert_eq!(first.header("x-rate-limit-remaining"), Some("1"));
    register(&s, signup("r2@example.org")).await.ok();
    let third = register(&s, signup("r3@example.org")).await;
    third.expect_error(429, "E0000047");
    assert_eq!(third.header("x-rate-limit-remaining"), Some("0"));
    assert!(third.header("x-rate-limit-reset").and_then(|r| r.parse::<u64>().ok()).is_some());
    assert_eq!(user_count(&s).await, 2);
    // The hosted page shares the budget.
    let page = post_form(&s, "email=r4%40example.org&firstName=A&lastName=B&password=Tr0ub4dor%263-long").await;
    assert_eq!(page.0, 429);
    // The management API does not.
    s.get("/api/v1/users").await.ok();
    s.stop().await;
}

async fn post_form(s: &TestServer, body: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = s
        .http
        .post(format!("{}/signup", s.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .expect("answered");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap_or_default())
}

async fn signup_page(b: Backend) {
    let s = TestServer::start(b).await;
    let resp = s.http.get(format!("{}/signup", s.base)).send().await.expect("answered");
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert!(h.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html")));
    assert_eq!(
        h.get("content-security-policy").and_then(|v| v.to_str().ok()),
        Some("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
    );
    assert_eq!(h.get("x-frame-options").and_then(|v| v.to_str().ok()), Some("DENY"));
    let html = resp.text().await.unwrap_or_default();
    for name in ["email", "firstName", "lastName", "password"] {
        assert!(html.contains(&format!("name=\"{name}\"")), "field {name} in {html}");
    }
    assert!(!html.contains("<script"), "no script");

    let r = Receiver::start().await;
    attach_hook(&s, &r.url).await;
    r.always_json(
        200,
        r#"{"error":{"errorSummary":"Not this address.","errorCauses":[
            {"errorSummary":"Use your <b>work</b> address.","reason":"INVALID_EMAIL_DOMAIN","location":"data.userProfile.email"},
            {"errorSummary":"Try again tomorrow.","reason":"OTHER"}]}}"#,
    );
    let (status, headers, html) = post_form(
        &s,
        "email=lee%40elsewhere.net&firstName=Lee%22%3E%3Cscript%3E&lastName=Kim&password=Tr0ub4dor%263-long",
    )
    .await;
    assert_eq!(status, 400);
    assert!(headers.get("content-security-policy").is_some());
    // The email cause sits right after the email input; the other cause and the summary at the top.
    let email_input = html.find("name=\"email\"").expect("email input");
    let first_name_input = html.find("name=\"firstName\"").expect("firstName input");
    let cause = html.find("Use your &lt;b&gt;work&lt;/b&gt; address.").expect("escaped email cause");
    assert!(email_input < cause && cause < first_name_input, "cause next to the email field: {html}");
    let top = html.find("Try again tomorrow.").expect("other cause");
    assert!(top < email_input);
    assert!(html.find("Not this address.").is_some_and(|i| i < email_input));
    assert!(html.contains("value=\"lee@elsewhere.net\""), "typed values are kept");
    assert!(html.contains("value=\"Lee&quot;&gt;&lt;script&gt;\""), "and escaped: {html}");
    assert!(!html.contains("Tr0ub4dor"), "the password is not kept");
    assert!(!html.contains("<script"));
    assert_eq!(user_count(&s).await, 0);

    r.always_json(204, "");
    let (status, _, html) =
        post_form(&s, "email=lee%40example.org&firstName=Lee&lastName=Kim&password=Tr0ub4dor%263-long").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Your account was created"));
    let p = r.posts().last().map(|p| p.json()).unwrap_or_default();
    assert_eq!(p["data"]["context"]["request"]["url"]["value"], "/signup");
    assert_eq!(user_count(&s).await, 1);

    // Validation errors land next to their fields too.
    let (status, _, html) = post_form(&s, "email=nope&firstName=Lee&lastName=&password=x").await;
    assert_eq!(status, 400);
    assert!(html.contains("data-field=\"lastName\""), "{html}");
    let wrong_type = s
        .http
        .post(format!("{}/signup", s.base))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(wrong_type.status(), 415);
    s.stop().await;
}

/// A live session for `user_id`, as `POST /api/v1/authn` would leave it; returns the token.
async fn session_for(s: &TestServer, user_id: &str) -> String {
    let token = haken_core::id::random_base62(32);
    let now = haken_core::Timestamp::now();
    let session = haken_core::session::Session {
        id: haken_core::id::new_id(haken_core::id::IdKind::Request),
        user_id: user_id.to_owned(),
        token_hash: haken_core::token::hash_token(&token),
        created: now,
        expires_at: now.plus_millis(haken_core::session::SESSION_TTL_MS),
        revoked: false,
    };
    s.store().insert_doc(&session, &[]).await.expect("session stored");
    token
}

async fn update_profile(s: &TestServer, token: &str, body: Value) -> Answer {
    let url = format!("{}/api/v1/registration/profile", s.base);
    let resp = s.http.post(url).bearer_auth(token).json(&body).send().await.expect("answered");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    Answer { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

async fn progressive_profile(b: Backend) {
    let s = TestServer::start(b).await;
    add_custom_attribute(&s, "badge").await;
    put_enrollment(
        &s,
        json!({ "profileAttributes": [
            { "name": "email", "required": true },
            { "name": "firstName", "required": true },
            { "name": "lastName", "required": true },
            { "name": "employeeNumber", "required": false }
        ] }),
    )
    .await
    .ok();
    let user = s.create_user("pp@example.org", "Pat", "Park").await;
    let uid = user["id"].as_str().unwrap_or_default().to_owned();
    let token = session_for(&s, &uid).await;

    // Without a hook the update applies directly.
    let plain = update_profile(&s, &token, json!({ "profile": { "employeeNumber": "1" } })).await;
    assert_eq!(plain.ok()["profile"]["employeeNumber"], "1");

    let r = Receiver::start().await;
    attach_hook(&s, &r.url).await;
    r.always_json(200, r#"{"commands":[{"type":"com.okta.user.progressive.profile.update","value":{"badge":"B-7"}}]}"#);
    let a = update_profile(&s, &token, json!({ "profile": { "employeeNumber": "4821" } })).await;
    let updated = a.ok().clone();
    assert_eq!(updated["profile"]["employeeNumber"], "4821");
    assert_eq!(updated["profile"]["badge"], "B-7", "the hook may set attributes beyond the delta");
    let p = r.posts().last().map(|p| p.json()).unwrap_or_default();
    assert_eq!(p["requestType"], "progressive.profile");
    assert_eq!(p["data"]["action"], "ALLOW");
    assert_eq!(p["data"]["userProfileUpdate"], json!({ "employeeNumber": "4821" }));
    assert_eq!(p["data"]["context"]["user"]["id"], uid);
    assert_eq!(p["data"]["context"]["user"]["profile"]["employeeNumber"], "1", "the profile before the update");
    assert!(p["data"]["context"]["user"]["passwordChanged"].as_str().is_some());
    assert_eq!(p["data"]["context"]["user"]["_links"]["groups"]["href"], format!("/api/v1/users/{uid}/groups"));
    assert_eq!(p["data"]["context"]["user"]["_links"]["factors"]["href"], format!("/api/v1/users/{uid}/factors"));
    assert_eq!(p["data"]["context"]["request"]["url"]["value"], "/api/v1/registration/profile");
    let events = s.events().await;
    let upd: Vec<&Value> = events.iter().filter(|e| e["eventType"] == "user.account.update_profile").collect();
    let last = upd.last().copied().cloned().unwrap_or_default();
    assert_eq!(last["actor"]["id"], uid, "the user acted");
    let executed: Vec<&Value> = events.iter().filter(|e| e["eventType"] == "inline_hook.executed").collect();
    assert_eq!(executed.last().map(|e| e["transaction"]["id"].clone()), Some(last["transaction"]["id"].clone()));

    // Denials and failures leave the profile alone.
    r.always_json(
        200,
        r#"{"error":{"errorCauses":[{"errorSummary":"Numbers start with 4","location":"data.userProfileUpdate.employeeNumber"}]}}"#,
    );
    let deny = update_profile(&s, &token, json!({ "profile": { "employeeNumber": "9" } })).await;
    deny.expect_error(400, "E0000001");
    assert_eq!(deny.body["errorSummary"], "We found some errors. Please review the form and make corrections.");
    assert_eq!(deny.body["errorCauses"][0]["location"], "data.userProfileUpdate.employeeNumber");
    r.always_json(200, r#"{"commands":[{"type":"com.okta.action.update","value":{"registration":"DENY"}}]}"#);
    let deny = update_profile(&s, &token, json!({ "profile": { "employeeNumber": "9" } })).await;
    assert_eq!(deny.body["errorSummary"], "Profile update denied.");
    r.always_json(200, r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"badge":"x"}}]}"#);
    let fail = update_profile(&s, &token, json!({ "profile": { "employeeNumber": "9" } })).await;
    fail.expect_error(400, "E0000001");
    assert_eq!(fail.body["errorSummary"], "There was an error updating your profile. Please try again later.");
    let now = s.get(&format!("/api/v1/users/{uid}")).await.ok().clone();
    assert_eq!(now["profile"]["employeeNumber"], "4821");

    // Only the policy's attributes, never login or email, and only with a live session.
    update_profile(&s, &token, json!({ "profile": { "email": "new@example.org" } }))
        .await
        .expect_error(400, "E0000001");
    update_profile(&s, &token, json!({ "profile": { "department": "x" } })).await.expect_error(400, "E0000001");
    update_profile(&s, "not-a-session", json!({ "profile": { "employeeNumber": "9" } }))
        .await
        .expect_error(401, "E0000011");
    let bytes = serde_json::to_vec(&json!({ "profile": { "employeeNumber": "9" } })).expect("json");
    s.send(Method::POST, "/api/v1/registration/profile", None, Some(bytes), Some("application/json"))
        .await
        .expect_error(401, "E0000011");
    s.stop().await;
}
