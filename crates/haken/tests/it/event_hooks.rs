//! Event hooks end to end: the API, verification, the envelope, filters, retries, dead
//! letters, replay, backfill, signatures and metrics, against real receivers on 127.0.0.1.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::harness::{Backend, TestServer};
use crate::receiver::{Receiver, Reply};

both!(
    verification_and_its_failures,
    envelope_headers_and_signatures,
    filters_select_events,
    okta_retry_policy,
    durable_retries_resume_after_an_outage,
    gone_stops_the_hook,
    dead_letters_replay_and_backfill,
    hook_api_validation_and_secrets,
    outbox_is_transactional,
    trigger_and_metrics,
    retention_keeps_what_is_still_owed,
    a_backlog_goes_out_in_fifties_in_order,
    backfills_at_once_and_resends_queue_nothing_twice,
    the_in_flight_bound_holds,
    a_write_hands_its_deliveries_to_its_own_engine,
    an_event_two_hooks_take_is_handed_over_to_both,
    the_server_hands_its_writes_deliveries_to_its_dispatcher,
    an_attempt_by_a_node_that_lost_the_lease_is_still_logged,
    deliveries_wake_at_commit_and_reuse_the_connection,
    one_slow_receiver_does_not_hold_up_another,
    redirects_are_not_followed,
    the_default_timeout_is_three_seconds,
);

fn hook_body(name: &str, uri: &str, items: &[&str]) -> Value {
    json!({
        "name": name,
        "events": { "type": "EVENT_TYPE", "items": items, "filter": null },
        "channel": { "type": "HTTP", "version": "1.0.0", "config": {
            "uri": uri,
            "headers": [ { "key": "X-Tenant", "value": "emea" } ],
            "authScheme": { "type": "HEADER", "key": "Authorization", "value": "Bearer s3cret" }
        } }
    })
}

/// Creates and verifies a hook; returns its id.
async fn ready_hook(s: &TestServer, body: Value) -> String {
    let created = s.post("/api/v1/eventHooks", body).await;
    let id = created.ok()["id"].as_str().unwrap_or_default().to_owned();
    let v = s.post(&format!("/api/v1/eventHooks/{id}/lifecycle/verify"), json!(null)).await;
    assert_eq!(v.ok()["verificationStatus"], "VERIFIED");
    id
}

async fn make_user(s: &TestServer, login: &str) -> String {
    s.create_user(login, "Ev", "Ent").await["id"].as_str().unwrap_or_default().to_owned()
}

async fn deliveries(s: &TestServer, hook: &str, status: &str) -> Vec<Value> {
    s.get(&format!("/api/v1/eventHooks/{hook}/deliveries?status={status}"))
        .await
        .ok()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The attempt log of a delivery (as listed by [`deliveries`]).
async fn attempt_log(s: &TestServer, hook: &str, delivery: &Value) -> Vec<Value> {
    let path = format!("/api/v1/eventHooks/{hook}/deliveries/{}", delivery["id"].as_str().unwrap_or_default());
    s.get(&path).await.ok()["attemptLog"].as_array().cloned().unwrap_or_default()
}

async fn wait_status(s: &TestServer, hook: &str, status: &str, n: usize, secs: u64) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let d = deliveries(s, hook, status).await;
        if d.len() >= n {
            return d;
        }
        assert!(std::time::Instant::now() < deadline, "waited for {n} {status} deliveries, have {}", d.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn verification_and_its_failures(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let mut body = hook_body("verify", &r.url, &["user.lifecycle.create"]);
    // Deliveries may take 10 s; verification still gives each attempt 3 s.
    body["delivery"] = json!({ "timeoutMs": 10_000 });
    let created = s.post("/api/v1/eventHooks", body).await;
    let hook = created.ok().clone();
    let id = hook["id"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with("who"));
    assert_eq!(hook["status"], "ACTIVE");
    assert_eq!(hook["verificationStatus"], "UNVERIFIED");

    // Unverified hooks receive nothing.
    make_user(&s, "unverified@example.org").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(r.posts().is_empty());

    let verify = format!("/api/v1/eventHooks/{id}/lifecycle/verify");
    // A wrong echo, not JSON or no property are final; error statuses, redirects (never
    // followed: the target would echo) and timeouts are retried once.
    let redirect = || Reply::StatusWith(302, vec![("Location".into(), r.url.clone())]);
    let slow = || Reply::Slow(Duration::from_millis(3_600));
    let failures = [
        (vec![Reply::VerifyBody("{\"verification\":\"nope\"}".into())], "does not match"),
        (vec![Reply::VerifyBody("not json".into())], "not JSON"),
        (vec![Reply::VerifyBody("{\"other\":1}".into())], "no string property"),
        (vec![Reply::Status(500), Reply::Status(500)], "HTTP 500"),
        (vec![Reply::Status(404), Reply::Status(404)], "HTTP 404"),
        (vec![redirect(), redirect()], "HTTP 302"),
        (vec![slow(), slow()], "timed out"),
    ];
    for (script, why) in failures {
        r.script(script);
        let a = s.post(&verify, json!(null)).await;
        a.expect_error(400, "E0000001");
        assert!(
            a.causes().iter().any(|c| c.starts_with("channel.config.uri:") && c.contains(why)),
            "{why}: {:?}",
            a.causes()
        );
    }
    let after = s.get(&format!("/api/v1/eventHooks/{id}")).await.ok().clone();
    assert_eq!(after["lastUpdated"], hook["lastUpdated"], "failed verifications change nothing about the hook");
    assert_eq!(after["verificationStatus"], "UNVERIFIED");
    // A timed-out attempt is retried: the second answers in time.
    r.script([slow()]);
    let ok = s.post(&verify, json!(null)).await;
    assert_eq!(ok.ok()["verificationStatus"], "VERIFIED");
    // Replacing the channel (a new query) makes it unverified again.
    let mut again = hook_body("verify", &format!("{}?v=1", r.url), &["user.lifecycle.create"]);
    again["delivery"] = json!({ "timeoutMs": 10_000 });
    assert_eq!(s.put(&format!("/api/v1/eventHooks/{id}"), again).await.ok()["verificationStatus"], "UNVERIFIED");
    // One 500 then a good echo: the single retry succeeds.
    r.script([Reply::Status(500)]);
    let ok = s.post(&verify, json!(null)).await;
    assert_eq!(ok.ok()["verificationStatus"], "VERIFIED");
    let gets: Vec<_> = r.requests().into_iter().filter(|q| q.method == "GET").collect();
    assert_eq!(gets.len(), 15, "7 failures (four of them retried) and two retried successes");
    let last = gets.last().cloned().expect("a GET");
    assert_eq!(last.header("authorization"), Some("Bearer s3cret"), "the auth header goes with the GET");
    assert_eq!(last.header("x-tenant"), Some("emea"));
    assert!(last.header("x-okta-verification-challenge").is_some_and(|c| c.len() >= 32));

    // Connection refused.
    let dead = Receiver::start().await;
    let dead_url = dead.url.clone();
    drop(dead);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let h2 = s.post("/api/v1/eventHooks", hook_body("refused", &dead_url, &["user.lifecycle.create"])).await;
    let id2 = h2.ok()["id"].as_str().unwrap_or_default().to_owned();
    s.post(&format!("/api/v1/eventHooks/{id2}/lifecycle/verify"), json!(null)).await.expect_error(400, "E0000001");

    let verified = s.events_of("event_hook.verified").await;
    assert_eq!(verified.len(), 10, "every verification is logged, failed or not");
    assert_eq!(verified.iter().filter(|e| e["outcome"]["result"] == "FAILURE").count(), 8);

    // A changed channel needs verifying again.
    let mut body = hook_body("verify", &format!("{}?v=2", r.url), &["user.lifecycle.create"]);
    body["channel"]["config"]["authScheme"] = json!({ "type": "HEADER", "key": "Authorization" });
    let put = s.put(&format!("/api/v1/eventHooks/{id}"), body).await;
    assert_eq!(put.ok()["verificationStatus"], "UNVERIFIED");
    s.stop().await;
}

async fn envelope_headers_and_signatures(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let mut body = hook_body("envelope", &r.url, &["user.lifecycle.create", "group.user_membership.add"]);
    body["signing"] = json!({ "enabled": true });
    let created = s.post("/api/v1/eventHooks", body).await;
    let secret = created.ok()["signing"]["secret"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("whsec_"));
    let id = created.ok()["id"].as_str().unwrap_or_default().to_owned();
    s.post(&format!("/api/v1/eventHooks/{id}/lifecycle/verify"), json!(null)).await.ok();
    let got = s.get(&format!("/api/v1/eventHooks/{id}")).await;
    assert!(got.ok()["signing"].get("secret").is_none(), "the secret is shown once");
    assert_eq!(got.ok()["signing"]["enabled"], true);

    let uid = make_user(&s, "envelope@example.org").await;
    let posts = r.wait_posts(10, |p| !p.is_empty()).await;
    let req = &posts[0];
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("accept"), Some("application/json"));
    assert_eq!(req.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(req.header("x-tenant"), Some("emea"));
    let env = req.json();
    assert_eq!(env["eventType"], "com.okta.event_hook");
    assert_eq!(env["eventTypeVersion"], "1.0");
    assert_eq!(env["cloudEventsVersion"], "0.1");
    assert_eq!(env["contentType"], "application/json");
    assert_eq!(env["source"], format!("{}/api/v1/eventHooks/{id}", s.base));
    assert!(env["eventTime"].as_str().is_some_and(|t| t.ends_with('Z')));
    let event_id = env["eventId"].as_str().unwrap_or_default().to_owned();
    assert_eq!(event_id.len(), 36);
    let ev = &env["data"]["events"][0];
    assert_eq!(ev["eventType"], "user.lifecycle.create");
    assert_eq!(ev["target"][0]["id"], uid.as_str());
    assert_eq!(ev["debugContext"]["debugData"]["targetEventHookIds"], id.as_str());
    // The same event in the System Log has the same uuid.
    let logged = s.events_of("user.lifecycle.create").await;
    assert_eq!(logged[0]["uuid"], ev["uuid"]);

    // Standard Webhooks headers verify with the secret over the exact body.
    assert_eq!(req.header("webhook-id"), Some(event_id.as_str()));
    let ts: i64 = req.header("webhook-timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
    let sig = req.header("webhook-signature").unwrap_or_default().to_owned();
    assert!(haken_hooks::signing::verify(&secret, &event_id, ts, &req.body, &sig));

    // Rotation: during the overlap both secrets sign.
    let rotated = s.post(&format!("/api/v1/eventHooks/{id}/signing/rotate"), json!(null)).await;
    let new_secret = rotated.ok()["signing"]["secret"].as_str().unwrap_or_default().to_owned();
    assert_ne!(new_secret, secret);
    make_user(&s, "rotated@example.org").await;
    let posts = r.wait_posts(10, |p| p.len() >= 2).await;
    let req = &posts[1];
    let ts: i64 = req.header("webhook-timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
    let sig = req.header("webhook-signature").unwrap_or_default();
    let eid = req.header("webhook-id").unwrap_or_default();
    assert!(haken_hooks::signing::verify(&secret, eid, ts, &req.body, sig), "old secret still signs");
    assert!(haken_hooks::signing::verify(&new_secret, eid, ts, &req.body, sig), "new secret signs");
    s.stop().await;
}

async fn filters_select_events(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let mut body = hook_body("sales only", &r.url, &["group.user_membership.add", "user.lifecycle.create"]);
    body["events"]["filter"] = json!({
        "type": "EXPRESSION_LANGUAGE",
        "eventFilterMap": [ { "event": "group.user_membership.add", "condition": { "version": null,
            "expression": "event.target.?[type eq 'UserGroup' && displayName eq 'Sales'].size() > 0" } } ]
    });
    let id = ready_hook(&s, body).await;
    let got = s.get(&format!("/api/v1/eventHooks/{id}")).await;
    assert_eq!(got.ok()["events"]["filter"]["eventFilterMap"][0]["condition"]["version"], Value::Null);

    let uid = make_user(&s, "filtered@example.org").await;
    let sales = s.post("/api/v1/groups", json!({ "profile": { "name": "Sales" } })).await.ok()["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let eng = s.post("/api/v1/groups", json!({ "profile": { "name": "Engineering" } })).await.ok()["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    s.call(Method::PUT, &format!("/api/v1/groups/{eng}/users/{uid}"), None).await;
    s.call(Method::PUT, &format!("/api/v1/groups/{sales}/users/{uid}"), None).await;
    let posts = r.wait_posts(10, |p| p.iter().flat_map(|q| q.uuids()).count() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events: Vec<Value> =
        r.posts().iter().flat_map(|p| p.json()["data"]["events"].as_array().cloned().unwrap_or_default()).collect();
    let _ = posts;
    let types: Vec<&str> = events.iter().filter_map(|e| e["eventType"].as_str()).collect();
    assert_eq!(
        types,
        vec!["user.lifecycle.create", "group.user_membership.add"],
        "unfiltered type passes; only Sales passes the filter"
    );
    assert_eq!(events[1]["target"][1]["displayName"], "Sales");

    // A bad expression is refused with its position; a filter on a type not subscribed too.
    let mut bad = hook_body("bad filter", &r.url, &["group.user_membership.add"]);
    bad["events"]["filter"] = json!({ "type": "EXPRESSION_LANGUAGE", "eventFilterMap": [
        { "event": "group.user_membership.add", "condition": { "expression": "event.target.?[type eq 'UserGroup'.size() > 0" } } ] });
    let a = s.post("/api/v1/eventHooks", bad.clone()).await;
    a.expect_error(400, "E0000001");
    assert!(a.causes().iter().any(|c| c.contains("position")), "{:?}", a.causes());
    // The same on a replace: refused, and the hook keeps its filter.
    let mut replace = s.get(&format!("/api/v1/eventHooks/{id}")).await.ok().clone();
    replace["events"]["filter"]["eventFilterMap"][0]["condition"]["expression"] = json!("event.outcome.result eq");
    let a = s.put(&format!("/api/v1/eventHooks/{id}"), replace).await;
    a.expect_error(400, "E0000001");
    assert!(a.causes().iter().any(|c| c.contains("position")), "{:?}", a.causes());
    let kept = s.get(&format!("/api/v1/eventHooks/{id}")).await;
    assert_eq!(
        kept.ok()["events"]["filter"]["eventFilterMap"][0]["condition"]["expression"],
        "event.target.?[type eq 'UserGroup' && displayName eq 'Sales'].size() > 0"
    );
    bad["events"]["filter"]["eventFilterMap"][0]["event"] = json!("user.lifecycle.create");
    bad["events"]["filter"]["eventFilterMap"][0]["condition"]["expression"] =
        json!("event.outcome.result eq 'SUCCESS'");
    s.post("/api/v1/eventHooks", bad).await.expect_error(400, "E0000001");
    s.stop().await;
}

async fn okta_retry_policy(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let mut body = hook_body("okta policy", &r.url, &["user.lifecycle.create"]);
    body["delivery"] = json!({ "retryPolicy": "okta", "timeoutMs": 500 });
    let id = ready_hook(&s, body).await;

    // 500, then 500: one retry, then a dead letter.
    r.script([Reply::Status(500), Reply::Status(500)]);
    make_user(&s, "okta1@example.org").await;
    let dead = wait_status(&s, &id, "DEAD", 1, 15).await;
    assert_eq!(dead[0]["attempts"], 2);
    // 400: no retry. The attempt keeps the start of what the receiver said (at most 1 KiB of it).
    let said = format!("{{\"error\":\"bad-event-7\",\"pad\":\"{}\"}}", "p".repeat(5000));
    r.script([Reply::Json(400, said.clone())]);
    make_user(&s, "okta2@example.org").await;
    let dead = wait_status(&s, &id, "DEAD", 2, 15).await;
    assert_eq!(dead[0]["attempts"], 1);
    assert_eq!(dead[0]["lastStatusCode"], 400);
    let log = attempt_log(&s, &id, &dead[0]).await;
    let snippet = log[0]["responseSnippet"].as_str().unwrap_or_default().to_owned();
    assert_eq!(snippet, said[..1024], "the first KiB of the answer");
    // A timeout, then success on the retry.
    r.script([Reply::Slow(Duration::from_millis(1500))]);
    make_user(&s, "okta3@example.org").await;
    let ok = wait_status(&s, &id, "DELIVERED", 1, 15).await;
    assert_eq!(ok[0]["attempts"], 2);
    let log = attempt_log(&s, &id, &ok[0]).await;
    assert_eq!(log.len(), 2);
    assert!(log[0]["error"].as_str().is_some_and(|e| e.contains("timed out")), "{log:?}");
    assert_eq!(log[1]["statusCode"], 200);
    // A reset connection is retried like a timeout.
    r.script([Reply::Reset]);
    make_user(&s, "okta4@example.org").await;
    let ok = wait_status(&s, &id, "DELIVERED", 2, 15).await;
    assert_eq!(ok[0]["attempts"], 2);
    let first = attempt_log(&s, &id, &ok[0]).await[0].clone();
    assert!(first["statusCode"].is_null() && first["error"].as_str().is_some_and(|e| !e.is_empty()), "{first}");
    // Every failure after the retry is in the System Log.
    assert_eq!(s.events_of("event_hook.delivery").await.len(), 2);
    s.stop().await;
}

async fn durable_retries_resume_after_an_outage(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let addr = r.addr();
    let id = ready_hook(&s, hook_body("durable", &r.url, &["user.lifecycle.create"])).await;
    // 429 with Retry-After: 8 is honoured: the first retry, scheduled after about 5 s, waits 8.
    r.script([Reply::StatusWith(429, vec![("Retry-After".into(), "8".into())])]);
    make_user(&s, "ra@example.org").await;
    let ok = wait_status(&s, &id, "DELIVERED", 1, 20).await;
    assert_eq!(ok[0]["attempts"], 2);
    let posts = r.posts();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].body, posts[1].body, "a retry resends the identical body");
    let gap = posts[1].at.duration_since(posts[0].at);
    assert!(gap >= Duration::from_millis(7_900), "Retry-After: 8 was not honoured: retried after {gap:?}");
    // Retry-After: 1 does not shorten the scheduled wait (about 5 s).
    r.script([Reply::StatusWith(503, vec![("Retry-After".into(), "1".into())])]);
    make_user(&s, "ra1@example.org").await;
    wait_status(&s, &id, "DELIVERED", 2, 20).await;
    let posts = r.posts();
    assert_eq!(posts.len(), 4);
    let gap = posts[3].at.duration_since(posts[2].at);
    assert!(gap >= Duration::from_millis(3_900), "Retry-After: 1 cut the wait to {gap:?}");

    // The receiver goes away; events keep being produced; it comes back on the same port.
    drop(r);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut created = Vec::new();
    for i in 0..3 {
        created.push(make_user(&s, &format!("outage{i}@example.org")).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pending = deliveries(&s, &id, "PENDING").await;
    assert!(!pending.is_empty(), "undelivered events wait, they are not lost");
    let back = Receiver::start_on(&addr).await;
    let got = back.wait_posts(20, |p| p.iter().flat_map(|q| q.uuids()).count() >= 3).await;
    let mut targets: Vec<String> = got
        .iter()
        .flat_map(|p| p.json()["data"]["events"].as_array().cloned().unwrap_or_default())
        .map(|e| e["target"][0]["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    targets.sort();
    created.sort();
    assert_eq!(targets, created);
    s.stop().await;
}

async fn gone_stops_the_hook(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let id = ready_hook(&s, hook_body("gone", &r.url, &["user.lifecycle.create"])).await;
    r.script([Reply::Status(410)]);
    make_user(&s, "gone@example.org").await;
    wait_status(&s, &id, "DEAD", 1, 10).await;
    let hook = s.get(&format!("/api/v1/eventHooks/{id}")).await;
    assert_eq!(hook.ok()["status"], "INACTIVE");
    assert!(s.events_of("event_hook.deactivated").await.len() == 1);
    make_user(&s, "after-gone@example.org").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.posts().len(), 1, "an inactive hook receives nothing");
    s.stop().await;
}

async fn dead_letters_replay_and_backfill(b: Backend) {
    let s = TestServer::start(b).await;
    // Events from before the hook existed, with a moment between them.
    make_user(&s, "early1@example.org").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = haken_core::Timestamp::now().to_rfc3339();
    tokio::time::sleep(Duration::from_millis(20)).await;
    make_user(&s, "early2@example.org").await;
    let r = Receiver::start().await;
    let mut body = hook_body("replay", &r.url, &["user.lifecycle.create"]);
    body["delivery"] = json!({ "retryPolicy": "okta" });
    let id = ready_hook(&s, body).await;
    r.script([Reply::Status(400), Reply::Status(400)]);
    make_user(&s, "late1@example.org").await;
    make_user(&s, "late2@example.org").await;
    let dead = wait_status(&s, &id, "DEAD", 2, 10).await;
    let first_id = dead[1]["id"].as_str().unwrap_or_default().to_owned();
    let first_body = r.posts()[0].body.clone();
    assert!(
        r.posts()[0].headers.iter().all(|(k, _)| !k.to_ascii_lowercase().starts_with("webhook-")),
        "a hook without a signing secret sends no Standard Webhooks headers"
    );

    let one = s.post(&format!("/api/v1/eventHooks/{id}/deliveries/{first_id}/replay"), json!(null)).await;
    assert_eq!(one.ok()["status"], "PENDING");
    wait_status(&s, &id, "DELIVERED", 1, 10).await;
    let replayed = r.posts().into_iter().find(|p| p.json()["eventId"] == first_id.as_str()).expect("replayed");
    assert_eq!(replayed.body, first_body, "a replay resends the same eventId and events");
    let all = s.post(&format!("/api/v1/eventHooks/{id}/deliveries/replay"), json!(null)).await;
    assert_eq!(all.ok()["replayed"], 1);
    wait_status(&s, &id, "DELIVERED", 2, 10).await;
    assert!(deliveries(&s, &id, "DEAD").await.is_empty());
    s.post(&format!("/api/v1/eventHooks/{id}/deliveries/nope/replay"), json!(null)).await.expect_error(404, "E0000007");
    // A pending delivery is not replayed (it is queued already; a second copy would race it).
    s.post(&format!("/api/v1/eventHooks/{id}/deliveries/{first_id}/replay"), json!(null)).await.ok();
    let twice = s.post(&format!("/api/v1/eventHooks/{id}/deliveries/{first_id}/replay"), json!(null)).await;
    assert!(twice.status.is_success() || twice.body["errorCode"] == "E0000001", "{}", twice.body);
    wait_status(&s, &id, "DELIVERED", 2, 10).await;

    // Backfill the early events to the new subscriber: first up to the moment between them.
    let since = haken_core::Timestamp(haken_core::Timestamp::now().millis() - 600_000).to_rfc3339();
    let logins = || -> Vec<String> {
        r.posts()
            .iter()
            .flat_map(|p| p.json()["data"]["events"].as_array().cloned().unwrap_or_default())
            .map(|e| e["target"][0]["alternateId"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let before = r.uuids().len();
    let bf = s.post(&format!("/api/v1/eventHooks/{id}/backfill"), json!({ "since": since, "until": between })).await;
    assert_eq!(bf.ok()["queued"], 1, "only the event before `until`");
    r.wait_posts(10, |_| r.uuids().len() > before).await;
    assert!(logins().iter().any(|l| l == "early1@example.org"));
    assert!(!logins().iter().any(|l| l == "early2@example.org"));
    let bf = s.post(&format!("/api/v1/eventHooks/{id}/backfill"), json!({ "since": since })).await;
    assert_eq!(bf.ok()["queued"], 1, "the one event the hook never had; those it has are not sent again");
    r.wait_posts(10, |_| r.uuids().len() > before + 1).await;
    assert!(logins().iter().any(|l| l == "early2@example.org"));
    let again = s.post(&format!("/api/v1/eventHooks/{id}/backfill"), json!({ "since": since })).await;
    assert_eq!(again.ok()["queued"], 0, "a repeated backfill queues nothing twice");
    // Unless asked to: every matching event of the range goes again.
    let before = r.uuids().len();
    let resend = json!({ "since": since, "until": between, "resend": true });
    assert_eq!(s.post(&format!("/api/v1/eventHooks/{id}/backfill"), resend).await.ok()["queued"], 1);
    r.wait_posts(10, |_| r.uuids().len() > before).await;
    assert_eq!(logins().iter().filter(|l| *l == "early1@example.org").count(), 2);
    s.post(&format!("/api/v1/eventHooks/{id}/backfill"), json!({ "since": "yesterday" }))
        .await
        .expect_error(400, "E0000001");

    // Delivery log paging.
    let page = s.get(&format!("/api/v1/eventHooks/{id}/deliveries?limit=1")).await;
    assert_eq!(page.ok().as_array().map(Vec::len), Some(1));
    let next = page.next_link().expect("more deliveries");
    let page2 = s.get(&next).await;
    assert_ne!(page2.ok()[0]["id"], page.ok()[0]["id"]);
    s.get(&format!("/api/v1/eventHooks/{id}/deliveries?status=LOST")).await.expect_error(400, "E0000001");
    s.stop().await;
}

async fn hook_api_validation_and_secrets(b: Backend) {
    let s = TestServer::start_with(b, |c| c.insecure_hooks = false).await;
    let ok_uri = "https://hooks.example.org/okta";
    let a = s
        .post("/api/v1/eventHooks", hook_body("strict", "http://hooks.example.org/x", &["user.lifecycle.create"]))
        .await;
    a.expect_error(400, "E0000001");
    assert!(a.causes().iter().any(|c| c.starts_with("channel.config.uri:") && c.contains("https")));
    for uri in [
        "https://127.0.0.1/x",
        "https://10.0.0.8/x",
        "https://[::1]/x",
        "https://169.254.169.254/latest",
        "https://localhost/x",
    ] {
        s.post("/api/v1/eventHooks", hook_body("private", uri, &["user.lifecycle.create"]))
            .await
            .expect_error(400, "E0000001");
    }
    // A name that passes the static check but resolves to a private address is refused when
    // connecting, not only when saved: here the machine's own name, which on this machine (and
    // most: /etc/hosts) resolves to a loopback or private address.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
    let addrs: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host((host.as_str(), 0)).await.map(Iterator::collect).unwrap_or_default();
    let usable = !host.is_empty()
        && !host.eq_ignore_ascii_case("localhost")
        && !addrs.is_empty()
        && addrs.iter().all(|a| haken_hooks::client::is_blocked(a.ip()));
    if usable {
        let uri = format!("https://{host}:9/hook");
        let sneaky = s.post("/api/v1/eventHooks", hook_body("sneaky", &uri, &["user.lifecycle.create"])).await;
        let sneaky_id = sneaky.ok()["id"].as_str().unwrap_or_default().to_owned();
        let refused = s.post(&format!("/api/v1/eventHooks/{sneaky_id}/lifecycle/verify"), json!(null)).await;
        refused.expect_error(400, "E0000001");
        assert!(refused.causes().iter().any(|c| c.contains("private or reserved addresses")), "{:?}", refused.causes());
        s.post(&format!("/api/v1/eventHooks/{sneaky_id}/lifecycle/deactivate"), json!(null)).await.ok();
        assert_eq!(s.delete(&format!("/api/v1/eventHooks/{sneaky_id}")).await.status.as_u16(), 204);
    } else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! connect-time address check SKIPPED: the machine's name ({host}) does not resolve to private addresses only ({addrs:?}) !!!!!\n"
        );
    }

    // Names: 1 to 255 characters (counted as characters, not bytes).
    let long = "ä".repeat(256);
    let a = s.post("/api/v1/eventHooks", hook_body(&long, ok_uri, &["user.lifecycle.create"])).await;
    a.expect_error(400, "E0000001");
    assert!(a.causes().iter().any(|c| c.contains("1 to 255 characters")), "{:?}", a.causes());
    let longest = s.post("/api/v1/eventHooks", hook_body(&long[..510], ok_uri, &["user.lifecycle.create"])).await;
    assert_eq!(longest.ok()["name"].as_str().map(|n| n.chars().count()), Some(255));
    let longest_id = longest.ok()["id"].as_str().unwrap_or_default().to_owned();
    s.post(&format!("/api/v1/eventHooks/{longest_id}/lifecycle/deactivate"), json!(null)).await.ok();
    assert_eq!(s.delete(&format!("/api/v1/eventHooks/{longest_id}")).await.status.as_u16(), 204);
    let a = s.post("/api/v1/eventHooks", hook_body("ineligible", ok_uri, &["user.lifecycle.delete.completed"])).await;
    a.expect_error(400, "E0000001");
    assert!(a.causes().iter().any(|c| c.contains("eligible")));
    let many: Vec<&str> = haken_core::catalog::eligible().map(|t| t.name).take(301).collect();
    s.post("/api/v1/eventHooks", hook_body("too many", ok_uri, &many)).await.expect_error(400, "E0000001");
    s.post("/api/v1/eventHooks", hook_body("", ok_uri, &["user.lifecycle.create"])).await.expect_error(400, "E0000001");
    s.post("/api/v1/eventHooks", json!({ "name": "x" })).await.expect_error(400, "E0000001");
    let mut bad_channel = hook_body("bad channel", ok_uri, &["user.lifecycle.create"]);
    bad_channel["channel"]["type"] = json!("SMTP");
    s.post("/api/v1/eventHooks", bad_channel).await.expect_error(400, "E0000001");
    // A header is sent once: no custom header twice, none that repeats the auth header.
    for headers in [
        json!([{ "key": "X-Tenant", "value": "a" }, { "key": "x-tenant", "value": "b" }]),
        json!([{ "key": "authorization", "value": "Bearer other" }]),
    ] {
        let mut twice = hook_body("twice", ok_uri, &["user.lifecycle.create"]);
        twice["channel"]["config"]["headers"] = headers;
        let a = s.post("/api/v1/eventHooks", twice).await;
        a.expect_error(400, "E0000001");
        assert!(a.causes().iter().any(|c| c.starts_with("channel.config.headers:")), "{:?}", a.causes());
    }

    let created = s.post("/api/v1/eventHooks", hook_body("Secretive", ok_uri, &["user.lifecycle.create"])).await;
    let hook = created.ok().clone();
    let id = hook["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(hook["channel"]["config"]["authScheme"], json!({ "type": "HEADER", "key": "Authorization" }));
    assert_eq!(hook["channel"]["config"]["method"], "POST");
    for text in [
        created.body.to_string(),
        s.get("/api/v1/eventHooks").await.body.to_string(),
        s.get(&format!("/api/v1/eventHooks/{id}")).await.body.to_string(),
    ] {
        assert!(!text.contains("s3cret"), "the auth value never comes back");
    }
    let events = serde_json::to_string(&s.events().await).unwrap_or_default();
    assert!(!events.contains("s3cret"), "nor is it logged");
    s.post("/api/v1/eventHooks", hook_body("secretive", ok_uri, &["user.lifecycle.create"]))
        .await
        .expect_error(400, "E0000001");

    // A round-tripped PUT without the secret keeps it.
    let mut put = hook.clone();
    put["description"] = json!("now described");
    assert_eq!(s.put(&format!("/api/v1/eventHooks/{id}"), put).await.ok()["description"], "now described");
    // ... but never carries it to another server.
    let mut moved = s.get(&format!("/api/v1/eventHooks/{id}")).await.ok().clone();
    moved["channel"]["config"]["uri"] = json!("https://elsewhere.example.org/collect");
    let refused = s.put(&format!("/api/v1/eventHooks/{id}"), moved).await;
    assert!(refused.expect_error(400, "E0000001").to_string().contains("authScheme.value"));

    // Delete needs INACTIVE.
    s.delete(&format!("/api/v1/eventHooks/{id}")).await.expect_error(400, "E0000001");
    let d = s.post(&format!("/api/v1/eventHooks/{id}/lifecycle/deactivate"), json!(null)).await;
    assert_eq!(d.ok()["status"], "INACTIVE");
    assert!(d.ok()["_links"]["activate"]["href"].is_string());
    let a = s.post(&format!("/api/v1/eventHooks/{id}/lifecycle/activate"), json!(null)).await;
    assert_eq!(a.ok()["status"], "ACTIVE");
    s.delete(&format!("/api/v1/eventHooks/{id}")).await.expect_error(400, "E0000001");
    s.post(&format!("/api/v1/eventHooks/{id}/lifecycle/deactivate"), json!(null)).await.ok();
    assert_eq!(s.delete(&format!("/api/v1/eventHooks/{id}")).await.status.as_u16(), 204);
    s.get(&format!("/api/v1/eventHooks/{id}")).await.expect_error(404, "E0000007");
    // With the longest-named hook's created, deactivated and deleted, and the sneaky hook's
    // if it was made.
    let sneaky = usize::from(usable);
    for (t, n) in [
        ("event_hook.created", 2 + sneaky),
        ("event_hook.updated", 1),
        ("event_hook.activated", 1),
        ("event_hook.deactivated", 3 + sneaky),
        ("event_hook.deleted", 2 + sneaky),
    ] {
        assert_eq!(s.events_of(t).await.len(), n, "{t}");
    }
    s.stop().await;
}

async fn outbox_is_transactional(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let id = ready_hook(&s, hook_body("tx", &r.url, &["user.lifecycle.create"])).await;
    make_user(&s, "tx@example.org").await;
    // A refused change (duplicate login) queues nothing.
    s.post("/api/v1/users", json!({ "profile": { "login": "TX@example.org", "email": "tx@example.org", "firstName": "T", "lastName": "X" } }))
        .await
        .expect_error(400, "E0000001");
    r.wait_posts(10, |p| !p.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.uuids().len(), 1);
    let all: Vec<Value> =
        s.get(&format!("/api/v1/eventHooks/{id}/deliveries")).await.ok().as_array().cloned().unwrap_or_default();
    assert_eq!(all.len(), 1);

    // A change that fails after its event was routed (a trigger raises once the outbox row is
    // in) leaves nothing: not the change, not its System Log event, not its delivery.
    let user = s.get("/api/v1/users/tx@example.org").await.ok()["id"].as_str().unwrap_or_default().to_owned();
    ready_hook(&s, hook_body("tx2", &r.url, &["user.account.update_profile"])).await;
    let url = s.store_url();
    let fail = if url.starts_with("sqlite:") {
        "CREATE TRIGGER fail_after_routing AFTER INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'injected'); END"
    } else {
        "CREATE TRIGGER fail_after_routing AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION fail_after_routing()"
    };
    let setup: Vec<&'static str> = if url.starts_with("sqlite:") {
        vec![fail]
    } else {
        vec![
            "CREATE FUNCTION fail_after_routing() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$",
            fail,
        ]
    };
    run_sql(&url, &setup).await;
    let change = json!({ "profile": { "nickName": "never" } });
    let failed = s.post(&format!("/api/v1/users/{user}"), change).await;
    assert_eq!(failed.status.as_u16(), 500, "{}", failed.body);
    let drop = if url.starts_with("sqlite:") {
        "DROP TRIGGER fail_after_routing"
    } else {
        "DROP TRIGGER fail_after_routing ON outbox"
    };
    run_sql(&url, &[drop]).await;
    assert_eq!(s.get(&format!("/api/v1/users/{user}")).await.ok()["profile"]["nickName"], Value::Null);
    assert!(s.events_of("user.account.update_profile").await.is_empty(), "no event for a change that rolled back");
    // The next change goes through and is the only one delivered.
    s.post(&format!("/api/v1/users/{user}"), json!({ "profile": { "nickName": "kept" } })).await.ok();
    let sent = s.events_of("user.account.update_profile").await;
    assert_eq!(sent.len(), 1);
    let uuid = sent[0]["uuid"].as_str().unwrap_or_default().to_owned();
    r.wait_posts(10, |p| p.iter().any(|q| q.uuids().contains(&uuid))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.uuids().len(), 2, "the create and the kept change, nothing of the failed one");
    s.stop().await;
}

/// Runs statements on the database at `url` (the server's own store).
async fn run_sql(url: &str, statements: &[&'static str]) {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
        for q in statements.iter().copied() {
            sqlx::query(q).execute(&pool).await.expect(q);
        }
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        for q in statements.iter().copied() {
            sqlx::query(q).execute(&pool).await.expect(q);
        }
        pool.close().await;
    }
}

async fn trigger_and_metrics(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let id = ready_hook(&s, hook_body("trigger", &r.url, &["user.lifecycle.create"])).await;
    let t =
        s.post(&format!("/api/v1/eventHooks/{id}/trigger"), json!({ "eventType": "group.user_membership.add" })).await;
    assert_eq!(t.ok()["delivery"]["kind"], "test");
    let posts = r.wait_posts(10, |p| !p.is_empty()).await;
    let ev = &posts[0].json()["data"]["events"][0];
    assert_eq!(ev["eventType"], "group.user_membership.add");
    assert_eq!(ev["target"][1]["type"], "UserGroup");
    assert!(s.events_of("group.user_membership.add").await.is_empty(), "samples do not enter the System Log");
    s.post(&format!("/api/v1/eventHooks/{id}/trigger"), json!({ "eventType": "no.such.type" }))
        .await
        .expect_error(400, "E0000001");

    wait_status(&s, &id, "DELIVERED", 1, 10).await;
    let m = s.send(Method::GET, "/metrics", None, None, None).await;
    assert_eq!(m.status.as_u16(), 200);
    let text = reqwest::get(format!("{}/metrics", s.base)).await.expect("metrics").text().await.unwrap_or_default();
    assert!(text.contains(&format!("haken_event_hook_deliveries_delivered_total{{hook=\"{id}\"}} 1")), "{text}");
    assert!(text.contains("haken_event_hook_attempt_duration_seconds_bucket"));

    // A failing hook: retried (durable), a backlog that ages; a hook that gives up: failed.
    let failing = Receiver::start().await;
    failing.respond_with(|q| if q.method == "POST" { Reply::Status(503) } else { Reply::Ok });
    let retrying = ready_hook(&s, hook_body("retrying", &failing.url, &["user.lifecycle.create"])).await;
    let refusing = Receiver::start().await;
    refusing.respond_with(|q| if q.method == "POST" { Reply::Status(400) } else { Reply::Ok });
    let mut body = hook_body("giving up", &refusing.url, &["user.lifecycle.create"]);
    body["delivery"] = json!({ "retryPolicy": "okta" });
    let giving_up = ready_hook(&s, body).await;
    make_user(&s, "metrics@example.org").await;
    let scrape = || async {
        reqwest::get(format!("{}/metrics", s.base)).await.expect("metrics").text().await.unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = scrape().await;
        let seen = (
            metric(&text, "haken_event_hook_attempts_retried_total", &retrying),
            metric(&text, "haken_event_hook_queue_depth", &retrying),
            metric(&text, "haken_event_hook_oldest_pending_seconds", &retrying),
            metric(&text, "haken_event_hook_deliveries_failed_total", &giving_up),
        );
        if matches!(seen, (Some(retries), Some(1.0), Some(age), Some(1.0)) if retries >= 1.0 && age > 0.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "metrics never showed the failures: {seen:?}\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Deactivated, the hook's backlog waits and stops counting.
    s.post(&format!("/api/v1/eventHooks/{retrying}/lifecycle/deactivate"), json!(null)).await.ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while metric(&scrape().await, "haken_event_hook_queue_depth", &retrying) != Some(0.0) {
        assert!(std::time::Instant::now() < deadline, "an inactive hook's backlog still counts");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&scrape().await, "haken_event_hook_oldest_pending_seconds", &retrying), Some(0.0));
    s.stop().await;
}

/// The value of the series `name{hook="<hook>"}` in a Prometheus scrape.
fn metric(text: &str, name: &str, hook: &str) -> Option<f64> {
    let series = format!("{name}{{hook=\"{hook}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.trim().parse().ok())
}

async fn retention_keeps_what_is_still_owed(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let mut body = hook_body("retention", &r.url, &["user.lifecycle.create"]);
    body["delivery"] = json!({ "retryPolicy": "okta" });
    let id = ready_hook(&s, body).await;
    let delivered_user = make_user(&s, "kept-not@example.org").await;
    wait_status(&s, &id, "DELIVERED", 1, 10).await;
    r.script([Reply::Status(400)]);
    let dead_user = make_user(&s, "owed@example.org").await;
    wait_status(&s, &id, "DEAD", 1, 10).await;

    // Everything is "old" for a cut-off an hour ahead.
    let later = haken_core::Timestamp::now().millis() + 3_600_000;
    let (deliveries_removed, events_removed) = s.store().purge(later, later).await.expect("purge");
    assert_eq!(deliveries_removed, 1, "only the delivered delivery goes");
    assert!(events_removed >= 1);
    assert!(deliveries(&s, &id, "DELIVERED").await.is_empty());
    let dead = deliveries(&s, &id, "DEAD").await;
    assert_eq!(dead.len(), 1, "dead letters stay until replayed");
    let remaining = s.events().await;
    assert!(
        remaining.iter().any(|e| e["target"][0]["id"] == dead_user.as_str()),
        "an event a dead letter still needs stays"
    );
    assert!(
        !remaining
            .iter()
            .any(|e| e["eventType"] == "user.lifecycle.create" && e["target"][0]["id"] == delivered_user.as_str())
    );
    // The dead letter can still be replayed with its events.
    s.post(&format!("/api/v1/eventHooks/{id}/deliveries/replay"), json!(null)).await.ok();
    wait_status(&s, &id, "DELIVERED", 1, 10).await;
    let last = r.posts().last().cloned().expect("a post");
    assert_eq!(last.json()["data"]["events"][0]["target"][0]["id"], dead_user.as_str());
    s.stop().await;
}

async fn backfills_at_once_and_resends_queue_nothing_twice(b: Backend) {
    let s = TestServer::start(b).await;
    for i in 0..60 {
        make_user(&s, &format!("twice{i:02}@example.org")).await;
    }
    let r = Receiver::start().await;
    let id = ready_hook(&s, hook_body("backfilled-twice", &r.url, &["user.lifecycle.create"])).await;
    let since = haken_core::Timestamp(haken_core::Timestamp::now().millis() - 600_000).to_rfc3339();
    // Four backfills of the same range at once (an operator's script retried, two nodes):
    // each event is queued by exactly one of them.
    let path = format!("/api/v1/eventHooks/{id}/backfill");
    let each = futures_util::future::join_all((0..4).map(|_| s.post(&path, json!({ "since": since })))).await;
    let queued: Vec<u64> = each.into_iter().map(|a| a.ok()["queued"].as_u64().unwrap_or(0)).collect();
    assert_eq!(queued.iter().sum::<u64>(), 60, "queued by each backfill: {queued:?}");
    let posts = r.wait_posts(20, |p| p.iter().map(|x| x.uuids().len()).sum::<usize>() >= 60).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut uuids: Vec<String> = r.posts().iter().flat_map(|p| p.uuids()).collect();
    let received = uuids.len();
    uuids.sort();
    uuids.dedup();
    assert_eq!((received, uuids.len()), (60, 60), "every event once ({} requests)", posts.len());

    // Resending queues them all again, but never an event the hook still waits for: with the
    // hook inactive the resent deliveries stay pending, and a second resend adds nothing.
    s.post(&format!("/api/v1/eventHooks/{id}/lifecycle/deactivate"), json!(null)).await.ok();
    let resend = json!({ "since": since, "resend": true });
    assert_eq!(s.post(&path, resend.clone()).await.ok()["queued"], 60);
    assert_eq!(s.post(&path, resend).await.ok()["queued"], 0, "still pending: not queued twice");
    s.post(&format!("/api/v1/eventHooks/{id}/lifecycle/activate"), json!(null)).await.ok();
    r.wait_posts(20, |p| p.iter().map(|x| x.uuids().len()).sum::<usize>() >= 120).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all: Vec<String> = r.posts().iter().flat_map(|p| p.uuids()).collect();
    assert_eq!(all.len(), 120, "each event exactly twice");
    assert!(uuids.iter().all(|u| all.iter().filter(|x| *x == u).count() == 2));
    s.stop().await;
}

async fn a_backlog_goes_out_in_fifties_in_order(b: Backend) {
    let s = TestServer::start(b).await;
    // 120 events before any hook, one after the other (so `published` follows their order).
    let mut logins = Vec::new();
    for i in 0..120 {
        let login = format!("backlog{i:03}@example.org");
        make_user(&s, &login).await;
        logins.push(login);
    }
    let (ra, rb) = (Receiver::start().await, Receiver::start().await);
    let a = ready_hook(&s, hook_body("backlog-a", &ra.url, &["user.lifecycle.create"])).await;
    let b = ready_hook(&s, hook_body("backlog-b", &rb.url, &["user.lifecycle.create"])).await;
    let since = haken_core::Timestamp(haken_core::Timestamp::now().millis() - 600_000).to_rfc3339();
    // Each backfill queues the whole backlog in one transaction: the dispatcher finds 120
    // routed events of each hook at once.
    for id in [&a, &b] {
        let bf = s.post(&format!("/api/v1/eventHooks/{id}/backfill"), json!({ "since": since })).await;
        assert_eq!(bf.ok()["queued"], 120);
    }
    for r in [&ra, &rb] {
        let posts = r.wait_posts(30, |p| p.iter().map(|x| x.uuids().len()).sum::<usize>() >= 120).await;
        // Deliveries go out side by side (several in flight), so they may arrive in any order;
        // each one must be a run of consecutive events, in order.
        let mut runs: Vec<Vec<String>> = posts
            .iter()
            .map(|p| {
                p.json()["data"]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|e| e["target"][0]["alternateId"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .collect();
        runs.sort_by_key(|r| r.first().cloned());
        let sizes: Vec<usize> = runs.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![50, 50, 20], "deliveries of at most 50 events, each as full as the backlog allows");
        let got: Vec<String> = runs.concat();
        assert_eq!(got, logins, "every event once, in the order it happened");
    }
    for id in [&a, &b] {
        let done = wait_status(&s, id, "DELIVERED", 3, 10).await;
        let counts: Vec<u64> = done.iter().map(|d| d["eventCount"].as_u64().unwrap_or(0)).collect();
        assert_eq!(counts.iter().sum::<u64>(), 120, "{counts:?}");
    }
    s.stop().await;
}

/// A node that starts after the hooks were made routes its very first change by them: its
/// router is built before the write, not left empty for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_nodes_first_change_reaches_the_hooks() {
    if !crate::harness::postgres_available().await {
        return;
    }
    let rx = Receiver::start().await;
    let a = TestServer::start(Backend::Postgres).await;
    let url = a.database_url().expect("postgres");
    ready_hook(&a, hook_body("first", &rx.url, &["user.account.update_profile"])).await;
    let user = make_user(&a, "first@example.org").await;
    let b = TestServer::start_with(Backend::Sqlite, |cfg| {
        cfg.database_url = Some(haken_server::config::Secret::new(url.clone()));
    })
    .await;
    b.post(&format!("/api/v1/users/{user}"), json!({ "profile": { "nickName": "from b" } })).await.ok();
    let sent = b.events_of("user.account.update_profile").await;
    assert_eq!(sent.len(), 1);
    let uuid = sent[0]["uuid"].as_str().unwrap_or_default().to_owned();
    rx.wait_posts(15, |posts| posts.iter().any(|p| p.uuids().contains(&uuid))).await;
    b.stop().await;
    a.stop().await;
}

/// On PostgreSQL a write makes its deliveries itself; one that raced a hook's deletion leaves
/// a pending delivery for a hook that is gone. Retention removes it with its outbox rows, and
/// leaves pending deliveries of live hooks alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_deliveries_of_a_deleted_hook() {
    if !crate::harness::postgres_available().await {
        return;
    }
    let rx = Receiver::start().await;
    let s = TestServer::start(Backend::Postgres).await;
    let live = ready_hook(&s, hook_body("live", &rx.url, &["user.lifecycle.create"])).await;
    make_user(&s, "orphaned@example.org").await;
    let pool = s.store().pg_pool().expect("postgres").clone();
    let far = haken_core::Timestamp::now().millis() + 3_600_000;
    for (id, hook) in [("orphan-delivery", "gone-hook"), ("future-delivery", live.as_str())] {
        sqlx::query(
            "INSERT INTO deliveries (id, hook_id, kind, status, attempts, event_count, created, event_time, next_attempt_at) \
             VALUES ($1, $2, 'event', 'PENDING', 0, 1, 0, 0, $3)",
        )
        .bind(id)
        .bind(hook)
        .bind(far)
        .execute(&pool)
        .await
        .expect("delivery");
        sqlx::query(
            "INSERT INTO outbox (hook_id, event_seq, created, delivery_id) SELECT $1, max(seq), 0, $2 FROM log_events",
        )
        .bind(hook)
        .bind(id)
        .execute(&pool)
        .await
        .expect("outbox row");
    }
    s.store().purge(0, 0).await.expect("purge");
    let left = |id: &'static str| {
        let pool = pool.clone();
        async move {
            let d: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("count");
            let o: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE delivery_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("count");
            (d, o)
        }
    };
    assert_eq!(left("orphan-delivery").await, (0, 0), "a gone hook's delivery and its rows are removed");
    assert_eq!(left("future-delivery").await, (1, 1), "a live hook's pending delivery stays");
    s.stop().await;
}

/// An engine that records what a write hands it, with room for `room` deliveries.
struct RecordingIntake {
    room: std::sync::atomic::AtomicU32,
    reserved: std::sync::atomic::AtomicU32,
    released: std::sync::atomic::AtomicU32,
    handed: std::sync::Mutex<Vec<haken_store::Claimed>>,
}

impl haken_store::Intake for RecordingIntake {
    fn node(&self) -> &str {
        "recording-node"
    }

    fn reserve(&self, _hook_id: &str, _rev: i64, now: i64) -> Option<i64> {
        use std::sync::atomic::Ordering::SeqCst;
        self.room.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).ok()?;
        self.reserved.fetch_add(1, SeqCst);
        Some(now + 600_000)
    }

    fn release(&self, _hook_id: &str) {
        self.released.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn hand_over(&self, claimed: Vec<haken_store::Claimed>) {
        self.handed.lock().expect("handed").extend(claimed);
    }
}

/// A second node on `a`'s database, without a dispatcher of its own: its writes hand their
/// deliveries to a recording engine with room for `room`.
async fn recording_node(a: &TestServer, room: u32) -> (haken_store::Store, std::sync::Arc<RecordingIntake>) {
    let b = haken_store::Store::connect(&haken_store::StoreOptions::new(a.store_url())).await.expect("connect");
    b.install_router(std::sync::Arc::new(haken_hooks::HookRouter::new()));
    let intake = std::sync::Arc::new(RecordingIntake {
        room: room.into(),
        reserved: 0.into(),
        released: 0.into(),
        handed: Default::default(),
    });
    assert!(b.install_intake(intake.clone()));
    (b, intake)
}

/// Changes `user`'s nickname through `store` with one `user.account.update_profile` event;
/// returns the event's uuid.
async fn change_nickname(store: &haken_store::Store, user: &str, nick: &str) -> String {
    let ctx = haken_core::log_event::EventContext::system("test");
    let event = ctx.event("user.account.update_profile", "Update user profile", haken_core::Timestamp::now());
    let uuid = event.uuid.clone();
    let nick = nick.to_owned();
    store
        .update_user(user, move |mut u| {
            u.profile.insert("nickName".into(), json!(nick));
            Ok::<_, haken_store::StoreError>(Some(haken_store::Change { value: u, events: vec![event.clone()] }))
        })
        .await
        .expect("update");
    uuid
}

/// The node a delivery is leased to, read from the database at `url`.
async fn lease_owner(url: &str, delivery: &str) -> Option<String> {
    let sql = "SELECT lease_owner FROM deliveries WHERE id = $1";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
        let owner = sqlx::query_scalar(sql).bind(delivery).fetch_one(&pool).await.expect("delivery row");
        pool.close().await;
        owner
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        let owner = sqlx::query_scalar(sql).bind(delivery).fetch_one(&pool).await.expect("delivery row");
        pool.close().await;
        owner
    }
}

/// A user change's deliveries for a hook its node's engine has room for are leased to that
/// node in the write's own transaction (PostgreSQL: its statement; SQLite: its writer group)
/// and handed to the engine after commit, with their events; without room they are left
/// unleased for a dispatcher round.
async fn a_write_hands_its_deliveries_to_its_own_engine(backend: Backend) {
    use std::sync::atomic::Ordering::SeqCst;
    let rx = Receiver::start().await;
    let a = TestServer::start(backend).await;
    let hook = ready_hook(&a, hook_body("handed", &rx.url, &["user.account.update_profile"])).await;
    let user = make_user(&a, "handed@example.org").await;
    let url = a.store_url();
    let (b, intake) = recording_node(&a, 1).await;

    let first = change_nickname(&b, &user, "one").await;
    let handed = std::mem::take(&mut *intake.handed.lock().expect("handed"));
    assert_eq!(handed.len(), 1, "the delivery is handed over");
    let d = &handed[0].delivery;
    assert_eq!((d.hook_id.as_str(), d.event_count), (hook.as_str(), 1));
    let events = handed[0].stored_events.as_ref().expect("events come with it");
    let sent: Value = serde_json::from_str(events[0].get()).expect("event json");
    assert_eq!(sent["uuid"], first.as_str());
    assert_eq!(lease_owner(&url, &d.id).await.as_deref(), Some("recording-node"), "leased by the write itself");
    assert_eq!((intake.reserved.load(SeqCst), intake.released.load(SeqCst)), (1, 0));

    // No room: nothing handed over, and the server's own round delivers it.
    let second = change_nickname(&b, &user, "two").await;
    assert!(intake.handed.lock().expect("handed").is_empty());
    rx.wait_posts(15, |posts| posts.iter().any(|p| p.uuids().contains(&second))).await;
    assert!(
        !rx.posts().iter().any(|p| p.uuids().contains(&first)),
        "a delivery leased to another node is not sent by this one"
    );
    let got = b.get_user(&user).await.expect("read").expect("user");
    assert_eq!(got.profile["nickName"], "two");
    b.close().await;
    a.stop().await;
}

/// The server's own dispatcher takes the deliveries its writes hand over (its revision check
/// passes once a round has read the hooks): of changes made one after the other, each waiting
/// for its delivery, all but the first few go out that way, as the metrics count.
async fn the_server_hands_its_writes_deliveries_to_its_dispatcher(b: Backend) {
    let s = TestServer::start(b).await;
    let rx = Receiver::start().await;
    let hook = ready_hook(&s, hook_body("handing", &rx.url, &["user.account.update_profile"])).await;
    let user = make_user(&s, "handing@example.org").await;
    for k in 0..6 {
        let r = s.post(&format!("/api/v1/users/{user}"), json!({ "profile": { "nickName": format!("h{k}") } })).await;
        assert_eq!(r.status.as_u16(), 200);
        rx.wait_posts(10, |posts| posts.len() > k).await;
    }
    let text = reqwest::get(format!("{}/metrics", s.base)).await.expect("metrics").text().await.unwrap_or_default();
    let prefix = format!("haken_event_hook_deliveries_handed_over_total{{hook=\"{hook}\"}} ");
    let handed: u64 =
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    assert!(handed >= 4, "{handed} of 6 deliveries handed over:\n{text}");
    assert_eq!(rx.posts().len(), 6, "each change went out once");
    s.stop().await;
}

/// A hook's in-flight bound holds whoever leases its deliveries: the dispatcher's rounds, or
/// the writes that hand their deliveries over at commit.
async fn the_in_flight_bound_holds(b: Backend) {
    let s = TestServer::start(b).await;
    let mut users = Vec::new();
    for i in 0..12 {
        users.push(make_user(&s, &format!("bound{i}@example.org")).await);
    }
    let rx = Receiver::start().await;
    rx.respond_with(|r| if r.method == "POST" { Reply::Slow(Duration::from_millis(100)) } else { Reply::Ok });
    let mut body = hook_body("bounded", &rx.url, &["user.account.update_profile"]);
    body["delivery"] = json!({ "maxInFlight": 2 });
    ready_hook(&s, body).await;
    let server = &s;
    futures_util::future::join_all(users.iter().map(|user| async move {
        for k in 0..3 {
            let change = json!({ "profile": { "nickName": format!("n{k}") } });
            server.post(&format!("/api/v1/users/{user}"), change).await.ok();
        }
    }))
    .await;
    let sent = s.events_of("user.account.update_profile").await;
    assert_eq!(sent.len(), 36);
    rx.wait_posts(30, |_| {
        let got: std::collections::HashSet<String> = rx.uuids().into_iter().collect();
        sent.iter().all(|e| got.contains(e["uuid"].as_str().unwrap_or_default()))
    })
    .await;
    assert_eq!(rx.most_at_once(), 2, "two requests at a time, and never more");
    s.stop().await;
}

/// On PostgreSQL a delivered attempt is recorded in a batch a few milliseconds later; a node
/// shutting down writes what is queued before it closes the store, so a delivery that went
/// out during shutdown is not left pending (to be sent again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_the_queued_delivery_records() {
    if !crate::harness::postgres_available().await {
        return;
    }
    let rx = Receiver::start().await;
    rx.respond_with(|r| if r.method == "POST" { Reply::Slow(Duration::from_millis(300)) } else { Reply::Ok });
    let s = TestServer::start(Backend::Postgres).await;
    let hook = ready_hook(&s, hook_body("recorded", &rx.url, &["user.lifecycle.create"])).await;
    make_user(&s, "recorded@example.org").await;
    rx.wait_posts(10, |posts| !posts.is_empty()).await;
    // The POST is being answered: the delivery is in flight as the node shuts down.
    let url = s.stop_keeping_database().await.expect("postgres");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT d.status, (SELECT count(*) FROM delivery_attempts a WHERE a.delivery_id = d.id) FROM deliveries d \
         WHERE d.hook_id = $1",
    )
    .bind(&hook)
    .fetch_all(&pool)
    .await
    .expect("deliveries");
    pool.close().await;
    crate::harness::drop_database(&url).await;
    assert_eq!(rows, vec![("DELIVERED".to_owned(), 1)]);
}

/// An event two hooks take is handed over in a delivery of each, with its full text in both.
async fn an_event_two_hooks_take_is_handed_over_to_both(backend: Backend) {
    let rx = Receiver::start().await;
    let a = TestServer::start(backend).await;
    let first = ready_hook(&a, hook_body("first", &rx.url, &["user.account.update_profile"])).await;
    let second = ready_hook(&a, hook_body("second", &rx.url, &["user.account.update_profile"])).await;
    let user = make_user(&a, "twice@example.org").await;
    let (b, intake) = recording_node(&a, 2).await;
    let uuid = change_nickname(&b, &user, "twice").await;
    let mut handed = std::mem::take(&mut *intake.handed.lock().expect("handed"));
    handed.sort_by(|x, y| x.delivery.hook_id.cmp(&y.delivery.hook_id));
    let mut hooks = vec![first, second];
    hooks.sort();
    assert_eq!(handed.iter().map(|c| c.delivery.hook_id.clone()).collect::<Vec<_>>(), hooks);
    for c in &handed {
        let events = c.stored_events.as_ref().expect("events come with it");
        assert_eq!(events.len(), 1);
        let sent: Value = serde_json::from_str(events[0].get()).expect("event json");
        assert_eq!(sent["uuid"], uuid.as_str());
        assert_eq!(sent["eventType"], "user.account.update_profile");
    }
    b.close().await;
    a.stop().await;
}

/// A node whose lease ended while its request was on the wire (another node took the delivery
/// over) did send: its attempt is in the delivery's log, on every path an attempt is recorded
/// by, but the delivery's state stays the lease holder's.
async fn an_attempt_by_a_node_that_lost_the_lease_is_still_logged(backend: Backend) {
    use haken_core::hook::{Attempt, AttemptOutcome};
    let rx = Receiver::start().await;
    let a = TestServer::start(backend).await;
    let hook = ready_hook(&a, hook_body("late", &rx.url, &["user.account.update_profile"])).await;
    let user = make_user(&a, "late@example.org").await;
    let (b, intake) = recording_node(&a, 1).await;
    change_nickname(&b, &user, "held").await;
    let delivery = intake.handed.lock().expect("handed")[0].delivery.id.clone();

    let now = haken_core::Timestamp::now();
    let late = |attempt: u32, status: u16| Attempt {
        delivery_id: delivery.clone(),
        hook_id: hook.clone(),
        attempt,
        started: now,
        latency_ms: 7,
        status_code: Some(status),
        error: (status >= 300).then(|| format!("HTTP {status}")),
        response_snippet: None,
        node: "late-node".into(),
    };
    let store = a.store();
    let retry = AttemptOutcome::Retry { at: now.plus_millis(60_000) };
    assert!(!store.finish_attempt(&late(1, 503), &retry, &[], None).await.expect("retry recorded"));
    let ctx = haken_core::log_event::EventContext::system("test");
    let dead_event = ctx.event("event_hook.delivery", "Event hook delivery failed", now);
    let dead = AttemptOutcome::Dead { reason: "gave up".into() };
    assert!(!store.finish_attempt(&late(2, 500), &dead, &[dead_event], None).await.expect("dead letter recorded"));
    store.record_delivered(late(3, 200)).await.expect("queued");

    let path = format!("/api/v1/eventHooks/{hook}/deliveries/{delivery}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = a.get(&path).await.ok().clone();
        if got["attemptLog"].as_array().is_some_and(|l| l.len() == 3) {
            break got;
        }
        assert!(std::time::Instant::now() < deadline, "the late attempts are not all logged: {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log: Vec<(Value, Value)> = got["attemptLog"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| (l["statusCode"].clone(), l["node"].clone()))
        .collect();
    assert_eq!(log, [503, 500, 200].map(|c| (json!(c), json!("late-node"))));
    assert_eq!((got["status"].as_str(), got["attempts"].as_u64()), (Some("PENDING"), Some(0)), "{got}");
    assert_eq!(lease_owner(&a.store_url(), &delivery).await.as_deref(), Some("recording-node"));
    assert!(a.events_of("event_hook.delivery").await.is_empty(), "the late node's failure is not the delivery's");
    b.close().await;
    a.stop().await;
}

/// With the poll 60 s away, only the wake-up at commit can deliver within the test: each
/// change reaches the receiver at once, all over the one connection verification opened.
async fn deliveries_wake_at_commit_and_reuse_the_connection(b: Backend) {
    let s = TestServer::start_with(b, |c| c.delivery_poll_ms = 60_000).await;
    let r = Receiver::start().await;
    ready_hook(&s, hook_body("awake", &r.url, &["user.lifecycle.create"])).await;
    for i in 0..5 {
        make_user(&s, &format!("awake{i}@example.org")).await;
        let sent = s.events_of("user.lifecycle.create").await;
        let uuid = sent.last().and_then(|e| e["uuid"].as_str()).unwrap_or_default().to_owned();
        // Well inside the poll's 60 s.
        r.wait_posts(10, |p| p.iter().any(|q| q.uuids().contains(&uuid))).await;
        // Answered, and a moment for the client to put the connection back in its pool.
        while r.open_now() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(r.posts().len(), 5);
    // One connection carries them all; without reuse there would be six.
    assert!(r.connections_accepted() <= 2, "{} connections for 6 requests", r.connections_accepted());
    s.stop().await;
}

/// A hook whose receiver hangs has its requests in flight; another hook's deliveries of the
/// same events go out meanwhile.
async fn one_slow_receiver_does_not_hold_up_another(b: Backend) {
    let s = TestServer::start(b).await;
    let slow = Receiver::start().await;
    slow.respond_with(|r| if r.method == "POST" { Reply::Slow(Duration::from_secs(60)) } else { Reply::Ok });
    let fast = Receiver::start().await;
    let mut body = hook_body("slow", &slow.url, &["user.lifecycle.create"]);
    body["delivery"] = json!({ "timeoutMs": 30_000, "maxInFlight": 2 });
    ready_hook(&s, body).await;
    ready_hook(&s, hook_body("fast", &fast.url, &["user.lifecycle.create"])).await;
    for i in 0..8 {
        make_user(&s, &format!("busy{i}@example.org")).await;
    }
    fast.wait_posts(15, |_| fast.uuids().len() >= 8).await;
    assert_eq!(slow.open_now(), 2, "the slow hook's two requests are still hanging");
    assert!(slow.uuids().len() < 8, "the slow hook has not got everything");
    // The hung requests fail when the receiver goes; the server stops without waiting for them.
    drop(slow);
    s.stop().await;
}

/// A 3xx is an answer, not a direction: the Location is not visited, and under the durable
/// policy (as for other 4xx-like answers) the delivery is a dead letter at once.
async fn redirects_are_not_followed(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    let id = ready_hook(&s, hook_body("moved", &r.url, &["user.lifecycle.create"])).await;
    let location = elsewhere.url.clone();
    r.respond_with(move |q| {
        if q.method == "POST" { Reply::StatusWith(307, vec![("Location".into(), location.clone())]) } else { Reply::Ok }
    });
    make_user(&s, "moved@example.org").await;
    let dead = wait_status(&s, &id, "DEAD", 1, 15).await;
    assert_eq!((dead[0]["attempts"].as_u64(), dead[0]["lastStatusCode"].as_u64()), (Some(1), Some(307)));
    assert!(elsewhere.requests().is_empty(), "the redirect was followed");
    // A 4xx other than 408/429 is final under the durable policy too.
    r.respond_with(|q| if q.method == "POST" { Reply::Status(404) } else { Reply::Ok });
    make_user(&s, "missing@example.org").await;
    let dead = wait_status(&s, &id, "DEAD", 2, 15).await;
    assert_eq!((dead[0]["attempts"].as_u64(), dead[0]["lastStatusCode"].as_u64()), (Some(1), Some(404)));
    s.stop().await;
}

/// A hook that does not say otherwise gives its receiver 3 s: a slower answer is a timeout,
/// logged and retried.
async fn the_default_timeout_is_three_seconds(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let created = s.post("/api/v1/eventHooks", hook_body("patient", &r.url, &["user.lifecycle.create"])).await;
    assert_eq!(created.ok()["delivery"]["timeoutMs"], 3000, "{}", created.body);
    let id = ready_hook(&s, hook_body("default timeout", &r.url, &["user.lifecycle.create"])).await;
    r.script([Reply::Slow(Duration::from_millis(4_000))]);
    make_user(&s, "patient@example.org").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let attempt = loop {
        let listed = s.get(&format!("/api/v1/eventHooks/{id}/deliveries")).await.ok().clone();
        if let Some(d) = listed.as_array().into_iter().flatten().find(|d| d["attempts"].as_u64() >= Some(1)) {
            let path = format!("/api/v1/eventHooks/{id}/deliveries/{}", d["id"].as_str().unwrap_or_default());
            break s.get(&path).await.ok()["attemptLog"][0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "the slow attempt never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(attempt["error"].as_str().is_some_and(|e| e.contains("timed out")), "{attempt}");
    let took = attempt["latencyMs"].as_u64().unwrap_or_default();
    assert!((2_900..3_900).contains(&took), "the attempt was cut at {took} ms, not 3 s");
    s.stop().await;
}
