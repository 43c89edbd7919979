//! Users API: create, read, list, update, lifecycle, delete, schema, and bad input.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::harness::{Backend, TOKEN, TestServer};

both!(
    create_get_and_statuses,
    duplicate_login_is_case_insensitive_and_writes_nothing,
    bad_profiles_name_the_field,
    malformed_json_changes_nothing,
    paging_follows_links_and_rejects_tampered_cursors,
    filters_and_q,
    partial_update_and_replace,
    concurrent_changes_lose_nothing,
    lifecycle_rules,
    two_step_delete,
    custom_schema_attributes,
);

fn profile(login: &str) -> Value {
    json!({ "login": login, "email": login, "firstName": "Ada", "lastName": "Lovelace" })
}

async fn create_get_and_statuses(b: Backend) {
    let s = TestServer::start(b).await;
    let active = s.create_user("ada@example.org", "Ada", "Lovelace").await;
    assert!(active["id"].as_str().is_some_and(|id| id.starts_with("00u") && id.len() == 20));
    assert_eq!(active["status"], "ACTIVE");
    assert_eq!(active["credentials"]["password"], json!({}), "the password value never comes back");
    assert_eq!(active["credentials"]["provider"]["type"], "OKTA");
    assert!(active["_links"]["suspend"]["href"].as_str().is_some());

    let staged = s.post("/api/v1/users?activate=false", json!({ "profile": profile("staged@example.org") })).await;
    assert_eq!(staged.ok()["status"], "STAGED");
    let provisioned = s.post("/api/v1/users", json!({ "profile": profile("prov@example.org") })).await;
    assert_eq!(provisioned.ok()["status"], "PROVISIONED");
    let hooked = s
        .post(
            "/api/v1/users?activate=true",
            json!({ "profile": profile("hook@example.org"), "credentials": { "password": { "hook": { "type": "default" } } } }),
        )
        .await;
    assert_eq!(hooked.ok()["status"], "ACTIVE", "password-import users are active without a local password");

    let id = active["id"].as_str().unwrap_or_default();
    let by_id = s.get(&format!("/api/v1/users/{id}")).await;
    assert_eq!(by_id.ok()["profile"]["login"], "ada@example.org");
    let by_login = s.get("/api/v1/users/ADA@example.org").await;
    assert_eq!(by_login.ok()["id"], id, "logins are looked up ignoring case");
    s.get("/api/v1/users/00unothere0000000000").await.expect_error(404, "E0000007");

    let created = s.events_of("user.lifecycle.create").await;
    assert_eq!(created.len(), 4);
    assert!(created.iter().any(|e| e["target"][0]["id"] == id));
    s.stop().await;
}

async fn duplicate_login_is_case_insensitive_and_writes_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    s.create_user("grace@example.org", "Grace", "Hopper").await;
    let events_before = s.events().await.len();
    let dup = s.post("/api/v1/users", json!({ "profile": profile("GRACE@example.org") })).await;
    dup.expect_error(400, "E0000001");
    assert!(dup.causes().iter().any(|c| c.starts_with("login:")), "cause names the field: {:?}", dup.causes());
    assert_eq!(s.events().await.len(), events_before, "a refused change writes no event");
    let list = s.get("/api/v1/users").await;
    assert_eq!(list.ok().as_array().map(Vec::len), Some(1));
    s.stop().await;
}

async fn bad_profiles_name_the_field(b: Backend) {
    let s = TestServer::start(b).await;
    let unknown = s
        .post(
            "/api/v1/users",
            json!({ "profile": { "login": "x@example.org", "email": "x@example.org", "firstName": "X", "lastName": "Y", "shoeSize": "44" } }),
        )
        .await;
    unknown.expect_error(400, "E0000001");
    assert!(unknown.causes().iter().any(|c| c.starts_with("shoeSize:")), "{:?}", unknown.causes());

    let missing = s
        .post("/api/v1/users", json!({ "profile": { "login": "x@example.org", "firstName": "X", "lastName": "Y" } }))
        .await;
    missing.expect_error(400, "E0000001");
    assert!(missing.causes().iter().any(|c| c.starts_with("email:")), "{:?}", missing.causes());

    let not_email = s.post("/api/v1/users", json!({ "profile": profile("not-an-email") })).await;
    not_email.expect_error(400, "E0000001");
    assert!(not_email.causes().iter().any(|c| c.starts_with("login:")));

    let weak = s
        .post(
            "/api/v1/users",
            json!({ "profile": profile("w@example.org"), "credentials": { "password": { "value": "abc" } } }),
        )
        .await;
    weak.expect_error(400, "E0000001");
    assert!(weak.causes().iter().any(|c| c.starts_with("password:")));

    let no_profile = s.post("/api/v1/users", json!({})).await;
    no_profile.expect_error(400, "E0000001");

    let unknown_field = s.post("/api/v1/users", json!({ "profile": profile("u@example.org"), "favourite": 1 })).await;
    unknown_field.expect_error(400, "E0000001");
    assert!(unknown_field.causes().iter().any(|c| c.starts_with("favourite:")));

    let wrong_shape = s.post("/api/v1/users", json!({ "profile": "ada" })).await;
    wrong_shape.expect_error(400, "E0000001");

    let bad_group = s
        .post("/api/v1/users", json!({ "profile": profile("g@example.org"), "groupIds": ["00gnothere0000000000"] }))
        .await;
    bad_group.expect_error(400, "E0000001");

    assert_eq!(s.get("/api/v1/users").await.ok().as_array().map(Vec::len), Some(0), "nothing was created");
    s.stop().await;
}

async fn malformed_json_changes_nothing(b: Backend) {
    // A small body limit, so the oversize body below fits in the socket buffers and the client
    // reads the 413 instead of a reset.
    let s = TestServer::start_with(b, |c| c.max_body_bytes = 64 * 1024).await;
    let a = s
        .send(Method::POST, "/api/v1/users", Some(TOKEN), Some(b"{\"profile\": {".to_vec()), Some("application/json"))
        .await;
    a.expect_error(400, "E0000003");
    let a =
        s.send(Method::POST, "/api/v1/groups", Some(TOKEN), Some(b"not json".to_vec()), Some("application/json")).await;
    a.expect_error(400, "E0000003");
    let a = s
        .send(
            Method::POST,
            "/api/v1/users",
            Some(TOKEN),
            Some(b"profile=x".to_vec()),
            Some("application/x-www-form-urlencoded"),
        )
        .await;
    assert_eq!(a.status.as_u16(), 415);
    let huge = vec![b' '; 100 * 1024];
    let a = s.send(Method::POST, "/api/v1/users", Some(TOKEN), Some(huge), Some("application/json")).await;
    a.expect_error(413, "E0000001");
    assert_eq!(s.get("/api/v1/users").await.ok().as_array().map(Vec::len), Some(0));
    assert!(s.events_of("user.lifecycle.create").await.is_empty());
    s.stop().await;
}

async fn paging_follows_links_and_rejects_tampered_cursors(b: Backend) {
    let s = TestServer::start(b).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let u =
            s.post("/api/v1/users?activate=false", json!({ "profile": profile(&format!("p{i}@example.org")) })).await;
        ids.push(u.ok()["id"].as_str().unwrap_or_default().to_owned());
    }
    let mut seen = Vec::new();
    let mut url = "/api/v1/users?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let a = s.get(&url).await;
        pages += 1;
        assert!(a.links().iter().any(|l| l.ends_with("rel=\"self\"")), "self link always present");
        let page = a.ok().as_array().cloned().unwrap_or_default();
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|u| u["id"].as_str().unwrap_or_default().to_owned()));
        match a.next_link() {
            Some(n) => {
                assert!(n.contains("limit=3"), "next keeps the parameters: {n}");
                url = n;
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, ids, "every user exactly once, in creation order");
    assert_eq!(pages, 3);

    let first = s.get("/api/v1/users?limit=2").await;
    let next = first.next_link().unwrap_or_default();
    let cursor = next.split("after=").nth(1).unwrap_or_default().to_owned();
    let mut tampered = cursor.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let bad = s.get(&format!("/api/v1/users?limit=2&after={}", String::from_utf8_lossy(&tampered))).await;
    bad.expect_error(400, "E0000029");
    s.get("/api/v1/users?after=%%%").await.expect_error(400, "E0000029");
    s.get("/api/v1/users?limit=abc").await.expect_error(400, "E0000001");
    s.stop().await;
}

async fn filters_and_q(b: Backend) {
    let s = TestServer::start(b).await;
    let a = s.create_user("alan@example.org", "Alan", "Turing").await;
    s.create_user("alonzo@example.org", "Alonzo", "Church").await;
    s.post("/api/v1/users?activate=false", json!({ "profile": { "login": "kurt@example.org", "email": "kurt@example.org", "firstName": "Kurt", "lastName": "Godel" } })).await.ok();
    let ids = |a: &crate::harness::Answer| -> Vec<String> {
        a.ok()
            .as_array()
            .map(|v| v.iter().map(|u| u["profile"]["login"].as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default()
    };
    let q = |f: &str| format!("/api/v1/users?filter={}", urlencode(f));
    assert_eq!(ids(&s.get(&q("status eq \"STAGED\"")).await), vec!["kurt@example.org"]);
    assert_eq!(
        ids(&s.get(&q("status eq \"ACTIVE\" and profile.lastName eq \"Church\"")).await),
        vec!["alonzo@example.org"]
    );
    assert_eq!(
        ids(&s
            .get(&q("(profile.lastName eq \"Turing\" or profile.lastName eq \"Godel\") and status eq \"ACTIVE\""))
            .await),
        vec!["alan@example.org"]
    );
    assert_eq!(
        ids(&s.get(&q(&format!("id eq \"{}\"", a["id"].as_str().unwrap_or_default()))).await),
        vec!["alan@example.org"]
    );
    assert_eq!(ids(&s.get(&q("lastUpdated gt \"2000-01-01T00:00:00Z\"")).await).len(), 3);
    assert_eq!(ids(&s.get(&q("lastUpdated lt \"2000-01-01T00:00:00.000Z\"")).await).len(), 0);
    assert_eq!(ids(&s.get(&q("profile.login eq \"alan@example.org\"")).await), vec!["alan@example.org"]);
    assert_eq!(ids(&s.get("/api/v1/users?q=al").await), vec!["alan@example.org", "alonzo@example.org"]);
    assert_eq!(ids(&s.get("/api/v1/users?q=godel").await), vec!["kurt@example.org"]);

    let bad = s.get(&q("status eq")).await;
    bad.expect_error(400, "E0000031");
    assert!(
        bad.causes().iter().any(|c| c.contains("position")),
        "the cause points at the position: {:?}",
        bad.causes()
    );
    s.get(&q("shoeSize eq \"44\"")).await.expect_error(400, "E0000031");
    s.get(&q("profile.nope eq \"x\"")).await.expect_error(400, "E0000031");
    s.get(&q("status co \"ACT\"")).await.expect_error(400, "E0000031");
    s.stop().await;
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn partial_update_and_replace(b: Backend) {
    let s = TestServer::start(b).await;
    let u = s.create_user("edsger@example.org", "Edsger", "Dijkstra").await;
    let id = u["id"].as_str().unwrap_or_default();
    let a =
        s.post(&format!("/api/v1/users/{id}"), json!({ "profile": { "nickName": "EWD", "title": "Professor" } })).await;
    assert_eq!(a.ok()["profile"]["nickName"], "EWD");
    assert_eq!(a.ok()["profile"]["firstName"], "Edsger", "partial update keeps the rest");
    let request_id = a.header("x-okta-request-id").unwrap_or_default().to_owned();

    let updates = s.events_of("user.account.update_profile").await;
    assert_eq!(updates.len(), 1);
    let ev = &updates[0];
    assert_eq!(ev["debugContext"]["debugData"]["changedAttributes"], "nickName,title");
    assert_eq!(ev["debugContext"]["debugData"]["requestId"], request_id, "X-Okta-Request-Id is the event's requestId");
    assert_eq!(ev["transaction"]["id"], request_id);
    assert_eq!(ev["target"][0]["changeDetails"]["to"]["nickName"], "EWD");

    // The same update again changes nothing and writes no event.
    s.post(&format!("/api/v1/users/{id}"), json!({ "profile": { "nickName": "EWD" } })).await.ok();
    assert_eq!(s.events_of("user.account.update_profile").await.len(), 1);

    let put = s
        .put(&format!("/api/v1/users/{id}"), json!({ "profile": { "login": "edsger@example.org", "email": "edsger@example.org", "firstName": "E.", "lastName": "Dijkstra" } }))
        .await;
    let body = put.ok();
    assert_eq!(body["profile"]["firstName"], "E.");
    assert!(body["profile"].get("nickName").is_none(), "replace drops attributes not supplied");
    // Round-tripping the whole user object (as SDKs do) is accepted.
    let mut whole = body.clone();
    whole["profile"]["title"] = json!("Dr.");
    s.put(&format!("/api/v1/users/{id}"), whole).await.ok();

    let bad = s.put(&format!("/api/v1/users/{id}"), json!({ "profile": { "login": "edsger@example.org" } })).await;
    bad.expect_error(400, "E0000001");
    assert_eq!(
        s.get(&format!("/api/v1/users/{id}")).await.ok()["profile"]["title"],
        "Dr.",
        "a refused replace changes nothing"
    );

    // A new login is found by that login, no longer by the old one, and is taken for others.
    s.post(&format!("/api/v1/users/{id}"), json!({ "profile": { "login": "ewd@example.org" } })).await.ok();
    assert_eq!(s.get("/api/v1/users/EWD@example.org").await.ok()["id"], id);
    s.get("/api/v1/users/edsger@example.org").await.expect_error(404, "E0000007");
    let other = s.create_user("tony@example.org", "Tony", "Hoare").await;
    let other_id = other["id"].as_str().unwrap_or_default();
    s.post(&format!("/api/v1/users/{other_id}"), json!({ "profile": { "login": "Ewd@example.org" } }))
        .await
        .expect_error(400, "E0000001");
    assert_eq!(s.get("/api/v1/users/tony@example.org").await.ok()["id"], other_id);

    let pw = s
        .post(
            &format!("/api/v1/users/{id}"),
            json!({ "credentials": { "password": { "value": "N3w-Secret-Phrase" } } }),
        )
        .await;
    pw.ok();
    assert_eq!(s.events_of("user.account.update_password").await.len(), 1);
    s.post("/api/v1/users/00unothere0000000000", json!({ "profile": { "nickName": "x" } }))
        .await
        .expect_error(404, "E0000007");
    s.stop().await;
}

/// Changes that arrive together (and are written together: one group on SQLite's writer, one
/// batch on PostgreSQL) each see the ones before them, a login clash fails only its own
/// change, and every change writes its event.
async fn concurrent_changes_lose_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let a = s.create_user("ada@example.org", "Ada", "Lovelace").await;
    let c = s.create_user("charles@example.org", "Charles", "Babbage").await;
    let (a_id, c_id) =
        (a["id"].as_str().unwrap_or_default().to_owned(), c["id"].as_str().unwrap_or_default().to_owned());
    let attrs = ["nickName", "title", "displayName", "department", "city", "organization", "division", "costCenter"];
    let mut calls: Vec<(String, Value)> = Vec::new();
    for (i, attr) in attrs.iter().enumerate() {
        for id in [&a_id, &c_id] {
            calls.push((format!("/api/v1/users/{id}"), json!({ "profile": { *attr: format!("v{i}") } })));
        }
    }
    // Ada takes Charles's login (refused) and, in the same burst, Charles takes a new one.
    calls.push((
        format!("/api/v1/users/{a_id}"),
        json!({ "profile": { "login": "CHARLES@example.org", "email": "charles@example.org" } }),
    ));
    calls.push((format!("/api/v1/users/{c_id}"), json!({ "profile": { "login": "babbage@example.org" } })));
    let answers = futures_util::future::join_all(calls.iter().map(|(path, body)| s.post(path, body.clone()))).await;
    let n = answers.len();
    for (i, ans) in answers.into_iter().enumerate() {
        if i == n - 2 {
            // Either the login is still Charles's (a clash) or Charles already moved on.
            if ans.status.as_u16() != 200 {
                ans.expect_error(400, "E0000001");
            }
        } else {
            ans.ok();
        }
    }
    let a_now = s.get(&format!("/api/v1/users/{a_id}")).await.ok().clone();
    let c_now = s.get(&format!("/api/v1/users/{c_id}")).await.ok().clone();
    for (i, attr) in attrs.iter().enumerate() {
        assert_eq!(a_now["profile"][*attr], format!("v{i}"), "no lost update of {attr}");
        assert_eq!(c_now["profile"][*attr], format!("v{i}"), "no lost update of {attr}");
    }
    assert_eq!(c_now["profile"]["login"], "babbage@example.org");
    let a_login = a_now["profile"]["login"].as_str().unwrap_or_default().to_owned();
    assert!(a_login == "ada@example.org" || a_login == "CHARLES@example.org", "{a_login}");
    let renamed = usize::from(a_login != "ada@example.org");
    assert_eq!(
        s.events_of("user.account.update_profile").await.len(),
        2 * attrs.len() + 1 + renamed,
        "one event per change that changed something"
    );
    s.stop().await;
}

async fn lifecycle_rules(b: Backend) {
    let s = TestServer::start(b).await;
    let staged = s.post("/api/v1/users?activate=false", json!({ "profile": profile("life@example.org"), "credentials": { "password": { "value": "Tr1cky-Passphrase" } } })).await;
    let id = staged.ok()["id"].as_str().unwrap_or_default().to_owned();
    let op = |o: &str| format!("/api/v1/users/{id}/lifecycle/{o}");
    let status =
        || async { s.get(&format!("/api/v1/users/{id}")).await.ok()["status"].as_str().unwrap_or_default().to_owned() };

    s.post(&op("suspend"), json!(null)).await.expect_error(400, "E0000001");
    s.post(&op("unlock"), json!(null)).await.expect_error(400, "E0000001");
    s.post(&op("activate"), json!(null)).await.ok();
    assert_eq!(status().await, "ACTIVE");
    s.post(&op("activate"), json!(null)).await.expect_error(403, "E0000016");
    s.post(&op("reactivate"), json!(null)).await.expect_error(403, "E0000038");
    s.post(&op("unsuspend"), json!(null)).await.expect_error(400, "E0000001");
    s.post(&op("suspend"), json!(null)).await.ok();
    assert_eq!(status().await, "SUSPENDED");
    // The status filter reads the indexed column, which follows the document.
    let listed = |st: &'static str| {
        let url = format!("/api/v1/users?filter={}", urlencode(&format!("status eq \"{st}\"")));
        let s = &s;
        async move {
            s.get(&url)
                .await
                .ok()
                .as_array()
                .map(|v| v.iter().filter_map(|u| u["id"].as_str()).map(str::to_owned).collect::<Vec<_>>())
                .unwrap_or_default()
        }
    };
    assert_eq!(listed("SUSPENDED").await, vec![id.clone()]);
    s.post(&op("unsuspend"), json!(null)).await.ok();
    assert_eq!(status().await, "ACTIVE");
    assert!(listed("SUSPENDED").await.is_empty());
    assert_eq!(listed("ACTIVE").await, vec![id.clone()]);
    let expired = s.post(&op("expire_password"), json!(null)).await;
    assert_eq!(expired.ok()["status"], "PASSWORD_EXPIRED");
    s.post(&op("deactivate"), json!(null)).await.ok();
    assert_eq!(status().await, "DEPROVISIONED");
    s.post(&op("explode"), json!(null)).await.expect_error(404, "E0000008");
    s.post("/api/v1/users/00unothere0000000000/lifecycle/suspend", json!(null)).await.expect_error(404, "E0000007");

    // A body-less POST with the content type the Okta Python SDK sends is fine.
    let a =
        s.send(Method::POST, &op("activate"), Some(TOKEN), Some(Vec::new()), Some("application/octet-stream")).await;
    a.ok();
    assert_eq!(status().await, "ACTIVE");

    let types: Vec<String> =
        s.events().await.iter().map(|e| e["eventType"].as_str().unwrap_or_default().to_owned()).collect();
    for t in [
        "user.lifecycle.activate",
        "user.lifecycle.suspend",
        "user.lifecycle.unsuspend",
        "user.account.expire_password",
        "user.lifecycle.deactivate",
    ] {
        assert!(types.iter().any(|x| x == t), "missing {t} in {types:?}");
    }
    assert_eq!(types.iter().filter(|t| *t == "user.lifecycle.suspend").count(), 1, "refused operations write nothing");
    s.stop().await;
}

async fn two_step_delete(b: Backend) {
    let s = TestServer::start(b).await;
    let u = s.create_user("del@example.org", "Del", "Ete").await;
    let id = u["id"].as_str().unwrap_or_default();
    let g = s.post("/api/v1/groups", json!({ "profile": { "name": "Deleters" } })).await;
    let gid = g.ok()["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(s.call(Method::PUT, &format!("/api/v1/groups/{gid}/users/{id}"), None).await.status.as_u16(), 204);

    let first = s.delete(&format!("/api/v1/users/{id}")).await;
    assert_eq!(first.status.as_u16(), 204);
    assert_eq!(s.get(&format!("/api/v1/users/{id}")).await.ok()["status"], "DEPROVISIONED");
    let second = s.delete(&format!("/api/v1/users/{id}")).await;
    assert_eq!(second.status.as_u16(), 204);
    s.get(&format!("/api/v1/users/{id}")).await.expect_error(404, "E0000007");
    assert_eq!(s.get(&format!("/api/v1/groups/{gid}/users")).await.ok().as_array().map(Vec::len), Some(0));
    s.delete(&format!("/api/v1/users/{id}")).await.expect_error(404, "E0000007");
    for t in ["user.lifecycle.deactivate", "user.lifecycle.delete.initiated", "user.lifecycle.delete.completed"] {
        assert_eq!(s.events_of(t).await.len(), 1, "{t}");
    }
    // The login is free again.
    s.create_user("del@example.org", "Del", "Again").await;
    s.stop().await;
}

async fn custom_schema_attributes(b: Backend) {
    let s = TestServer::start(b).await;
    let schema = s.get("/api/v1/meta/schemas/user/default").await;
    assert_eq!(schema.ok()["definitions"]["base"]["properties"]["login"]["type"], "string");
    let add = s
        .post(
            "/api/v1/meta/schemas/user/default",
            json!({ "definitions": { "custom": { "id": "#custom", "type": "object", "properties": {
                "employeeLevel": { "title": "Level", "type": "integer" },
                "badges": { "title": "Badges", "type": "array", "items": { "type": "string" } },
                "remote": { "title": "Remote", "type": "boolean" }
            } } } }),
        )
        .await;
    assert_eq!(add.ok()["definitions"]["custom"]["properties"]["employeeLevel"]["type"], "integer");

    let mut p = profile("custom@example.org");
    p["employeeLevel"] = json!(3);
    p["badges"] = json!(["a", "b"]);
    p["remote"] = json!(true);
    let u = s.post("/api/v1/users?activate=false", json!({ "profile": p })).await;
    assert_eq!(u.ok()["profile"]["employeeLevel"], 3);

    let mut wrong = profile("wrong@example.org");
    wrong["employeeLevel"] = json!("three");
    let w = s.post("/api/v1/users", json!({ "profile": wrong })).await;
    w.expect_error(400, "E0000001");
    assert!(w.causes().iter().any(|c| c.starts_with("employeeLevel:")));

    let filtered =
        s.get(&format!("/api/v1/users?filter={}", crate::users::urlencode("profile.employeeLevel ge 3"))).await;
    assert_eq!(filtered.ok().as_array().map(Vec::len), Some(1));

    s.post(
        "/api/v1/meta/schemas/user/default",
        json!({ "definitions": { "custom": { "properties": { "employeeLevel": null } } } }),
    )
    .await
    .ok();
    let mut again = profile("again@example.org");
    again["employeeLevel"] = json!(1);
    s.post("/api/v1/users", json!({ "profile": again })).await.expect_error(400, "E0000001");

    s.post(
        "/api/v1/meta/schemas/user/default",
        json!({ "definitions": { "custom": { "properties": { "9bad": { "title": "x", "type": "string" } } } } }),
    )
    .await
    .expect_error(400, "E0000001");
    s.post(
        "/api/v1/meta/schemas/user/default",
        json!({ "definitions": { "custom": { "properties": { "login": { "title": "x", "type": "string" } } } } }),
    )
    .await
    .expect_error(400, "E0000001");
    s.stop().await;
}

/// Two nodes on one PostgreSQL change the same users. A node computes a change on the row as it
/// last wrote or read it and writes only if the row is still that one; a row the other node
/// changed meanwhile must be read again and the change computed on it. Written back stale, a
/// change would drop the other node's attributes (or bring back a deleted user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_change_the_same_users_and_lose_nothing() {
    if !crate::harness::postgres_available().await {
        return;
    }
    let a = TestServer::start(Backend::Postgres).await;
    let url = a.database_url().expect("postgres");
    let b = TestServer::start_with(Backend::Sqlite, |cfg| {
        cfg.database_url = Some(haken_server::config::Secret::new(url.clone()));
    })
    .await;
    let ada = a.create_user("ada@example.org", "Ada", "Lovelace").await;
    let id = ada["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/api/v1/users/{id}");

    // In turn: each node's last view of the row is stale by the other's change.
    let turns = ["nickName", "title", "displayName", "department", "city", "organization"];
    for (i, attr) in turns.iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        node.post(&path, json!({ "profile": { *attr: format!("t{i}") } })).await.ok();
    }
    for node in [&a, &b] {
        let got = node.get(&path).await;
        for (i, attr) in turns.iter().enumerate() {
            assert_eq!(got.ok()["profile"][*attr], format!("t{i}"), "{attr} survives the other node's changes");
        }
    }

    // At once, from both nodes, on two users.
    let grace = b.create_user("grace@example.org", "Grace", "Hopper").await;
    let ids = [id.clone(), grace["id"].as_str().unwrap_or_default().to_owned()];
    let burst =
        ["division", "costCenter", "employeeNumber", "state", "zipCode", "countryCode", "streetAddress", "locale"];
    let paths: Vec<String> = ids.iter().map(|uid| format!("/api/v1/users/{uid}")).collect();
    let mut calls = Vec::new();
    for (i, attr) in burst.iter().enumerate() {
        for (j, p) in paths.iter().enumerate() {
            let node = if (i + j) % 2 == 0 { &a } else { &b };
            calls.push(node.post(p, json!({ "profile": { *attr: format!("b{i}") } })));
        }
    }
    for answer in futures_util::future::join_all(calls).await {
        answer.ok();
    }
    for uid in &ids {
        let got = a.get(&format!("/api/v1/users/{uid}")).await;
        for (i, attr) in burst.iter().enumerate() {
            assert_eq!(got.ok()["profile"][*attr], format!("b{i}"), "{attr} of {uid} survives the burst");
        }
    }
    let changes = a.events_of("user.account.update_profile").await;
    assert_eq!(changes.len(), turns.len() + burst.len() * ids.len(), "one event per change, none twice");

    // A user the other node deleted stays deleted: a change of it is a 404, not a resurrection.
    a.post(&path, json!({ "profile": { "title": "known to a" } })).await.ok();
    b.delete(&path).await;
    b.delete(&path).await;
    a.post(&path, json!({ "profile": { "title": "too late" } })).await.expect_error(404, "E0000007");
    b.get(&path).await.expect_error(404, "E0000007");
    b.stop().await;
    a.stop().await;
}
