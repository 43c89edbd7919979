//! Apps and user import end to end: the `/api/v1/apps` object and its lifecycle, imports of
//! CSV and JSON Lines files without a hook and through a real user import hook on 127.0.0.1
//! (the spec 4.2 payload, every command, the error object, every failure mode in both fail
//! modes), row failures with their row numbers, re-runs that create nothing, and the
//! `haken users import` command of the real binary.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::harness::{Backend, TOKEN, TestServer};
use crate::receiver::{Receiver, Reply};

both!(
    apps_crud_lifecycle_and_validation,
    import_without_hook_and_rerun,
    hook_payload_and_profile_commands,
    hook_links_and_errors,
    hook_failures_fail_open_unless_fail_closed,
    cli_imports_and_reports_json,
    abandoned_jobs_are_reported_failed,
    match_keys_follow_profile_changes,
);

const IMPORT_HOOK: &str = "com.okta.import.transform";

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

async fn create_app(s: &TestServer, label: &str, import: Value) -> Value {
    let a = s
        .post(
            "/api/v1/apps",
            json!({ "name": "haken_import", "label": label, "signOnMode": "BOOKMARK",
                    "settings": { "app": { "url": "https://hr.example.org" }, "import": import } }),
        )
        .await;
    a.ok().clone()
}

/// Uploads a file and waits for the job to end; returns the final job.
async fn import(s: &TestServer, app_id: &str, body: &str, content_type: &str) -> Value {
    let a = s
        .send(
            Method::POST,
            &format!("/api/v1/apps/{app_id}/imports"),
            Some(TOKEN),
            Some(body.as_bytes().to_vec()),
            Some(content_type),
        )
        .await;
    assert_eq!(a.status, 202, "import accepted: {}", a.body);
    assert_eq!(a.body["status"], "RUNNING");
    let job_id = id_of(&a.body);
    assert!(job_id.starts_with("ijb") && job_id.len() == 20, "{job_id}");
    wait_job(s, app_id, &job_id).await
}

async fn wait_job(s: &TestServer, app_id: &str, job_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = s.get(&format!("/api/v1/apps/{app_id}/imports/{job_id}")).await.ok().clone();
        if j["status"] != "RUNNING" {
            return j;
        }
        assert!(Instant::now() < deadline, "import did not finish: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn counts(job: &Value) -> (u64, u64, u64, u64, u64) {
    let c = &job["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or(u64::MAX);
    (n("created"), n("linked"), n("updated"), n("skipped"), n("failed"))
}

async fn user(s: &TestServer, login: &str) -> Value {
    s.get(&format!("/api/v1/users/{login}")).await.ok().clone()
}

async fn apps_crud_lifecycle_and_validation(b: Backend) {
    let s = TestServer::start(b).await;
    let hook = s.create_inline_hook("Import transform", IMPORT_HOOK, "http://127.0.0.1:9/hook").await;
    let reg = s.create_inline_hook("Registration", "com.okta.user.pre-registration", "http://127.0.0.1:9/r").await;
    let app = create_app(
        &s,
        "HR Source",
        json!({ "inlineHookId": id_of(&hook), "matching": ["EMAIL", "LOGIN"], "mapping": { "lastName": "surname" } }),
    )
    .await;
    let id = id_of(&app);
    assert!(id.starts_with("0oa") && id.len() == 20, "{id}");
    assert_eq!(app["name"], "haken_import");
    assert_eq!(app["label"], "HR Source");
    assert_eq!(app["status"], "ACTIVE");
    assert_eq!(app["signOnMode"], "BOOKMARK");
    assert_eq!(app["settings"]["app"]["url"], "https://hr.example.org");
    assert_eq!(
        app["settings"]["import"],
        json!({ "inlineHookId": id_of(&hook), "matching": ["EMAIL", "LOGIN"], "mapping": { "lastName": "surname" },
                "activate": true, "passwordHook": false })
    );
    assert!(app["created"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(app["_links"]["deactivate"]["href"].as_str().is_some_and(|h| h.ends_with("/lifecycle/deactivate")));
    assert!(app["_links"]["activate"].is_null());
    assert_eq!(s.get(&format!("/api/v1/apps/{id}")).await.ok()["label"], "HR Source");

    // Validation: each with a field-level cause.
    let base = json!({ "name": "haken_import", "label": "X", "signOnMode": "BOOKMARK" });
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("name", json!("Has Spaces")), "name"),
        (with("signOnMode", json!("TELEPATHY")), "signOnMode"),
        (with("label", json!("")), "label"),
        (with("settings", json!({ "import": { "inlineHookId": "calnothere0000000000" } })), "inlineHookId"),
        (with("settings", json!({ "import": { "inlineHookId": id_of(&reg) } })), "com.okta.import.transform"),
        (with("settings", json!({ "import": { "matching": ["SHOE_SIZE"] } })), "SHOE_SIZE"),
        (with("settings", json!({ "import": { "mapping": { "shoeSize": "size" } } })), "shoeSize"),
        (with("settings", json!({ "import": { "colour": "blue" } })), "colour"),
        (with("bogus", json!(1)), "bogus"),
    ];
    for (body, needle) in cases {
        let a = s.post("/api/v1/apps", body.clone()).await;
        a.expect_error(400, "E0000001");
        assert!(a.body.to_string().contains(needle), "{needle}: {}", a.body);
    }
    let mut no_label = base.clone();
    no_label.as_object_mut().map(|o| o.remove("label"));
    s.post("/api/v1/apps", no_label).await.expect_error(400, "E0000001");

    // List: q is a label prefix; paging follows links.
    create_app(&s, "Payroll", json!(null)).await;
    create_app(&s, "HR Archive", json!(null)).await;
    let hr = s.get("/api/v1/apps?q=hr").await;
    let labels: Vec<&str> = hr.ok().as_array().into_iter().flatten().filter_map(|a| a["label"].as_str()).collect();
    assert_eq!(labels, ["HR Source", "HR Archive"]);
    let page = s.get("/api/v1/apps?limit=2").await;
    assert_eq!(page.ok().as_array().map(Vec::len), Some(2));
    let next = page.next_link().expect("a next link");
    let rest = s.get(&next).await;
    assert_eq!(rest.ok().as_array().map(Vec::len), Some(1));
    s.get("/api/v1/apps?after=tampered").await.expect_error(400, "E0000029");
    let active = s.get("/api/v1/apps?filter=status%20eq%20%22ACTIVE%22").await;
    assert_eq!(active.ok().as_array().map(Vec::len), Some(3));

    // Replace: label and settings change; the app type cannot.
    let mut whole = app.clone();
    whole["label"] = json!("HR Source 2");
    whole["settings"]["import"] = json!({ "matching": ["LOGIN"] });
    let put = s.put(&format!("/api/v1/apps/{id}"), whole.clone()).await;
    assert_eq!(put.ok()["label"], "HR Source 2");
    assert_eq!(put.body["settings"]["import"]["inlineHookId"], Value::Null);
    whole["name"] = json!("oidc_client");
    s.put(&format!("/api/v1/apps/{id}"), whole).await.expect_error(400, "E0000001");

    // Delete only when inactive; lifecycle events in the System Log.
    s.delete(&format!("/api/v1/apps/{id}")).await.expect_error(400, "E0000001");
    let d = s.call(Method::POST, &format!("/api/v1/apps/{id}/lifecycle/deactivate"), None).await;
    assert_eq!(d.ok(), &json!({}));
    let got = s.get(&format!("/api/v1/apps/{id}")).await;
    assert_eq!(got.ok()["status"], "INACTIVE");
    assert!(got.body["_links"]["activate"]["href"].is_string());
    let up = s.call(Method::POST, &format!("/api/v1/apps/{id}/imports"), None).await;
    assert!(up.status.is_client_error(), "an inactive app does not import: {}", up.body);
    assert_eq!(s.delete(&format!("/api/v1/apps/{id}")).await.status, 204);
    s.get(&format!("/api/v1/apps/{id}")).await.expect_error(404, "E0000007");
    for t in ["create", "activate", "update", "deactivate", "delete"] {
        let evs = s.events_of(&format!("application.lifecycle.{t}")).await;
        assert!(
            evs.iter().any(|e| e["target"][0]["id"] == id.as_str() && e["target"][0]["type"] == "AppInstance"),
            "application.lifecycle.{t} for the app"
        );
    }
    s.stop().await;
}

async fn import_without_hook_and_rerun(b: Backend) {
    let data = crate::harness::tempdir::Dir::new("import-data");
    let data_dir = data.0.clone();
    let s = TestServer::start_with(b, |cfg| cfg.data_dir = data_dir.clone()).await;
    let existing = s.create_user("kept@example.org", "Kept", "Same").await;
    let app = create_app(&s, "HR", json!({ "matching": ["LOGIN", "EMAIL"] })).await;
    let app_id = id_of(&app);
    let csv = "userName,email,firstName,lastName,title,externalId\n\
               ann@example.org,ann@example.org,Ann,Lee,Engineer,E-1\n\
               bo@example.org,bo@example.org,Bo,\"Ng, Jr.\",,E-2\n\
               kept@example.org,kept@example.org,Kept,Same,,E-3\n\
               bad,bad,Bad,Value,,E-4\n\
               cy@example.org,cy@example.org,Cy,Ito,Chief\n\
               ann@example.org,ann@example.org,Ann,Again,,E-6\n";
    let job = import(&s, &app_id, csv, "text/csv").await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["counts"]["rows"], 6);
    // ann, bo created; kept linked unchanged; bad fails (login format); cy's row has too few
    // fields; the second ann duplicates row 1.
    assert_eq!(counts(&job), (2, 1, 0, 1, 3), "{job}");
    let failed = job["failedRows"].as_array().cloned().unwrap_or_default();
    let rows: Vec<u64> = failed.iter().filter_map(|r| r["row"].as_u64()).collect();
    assert_eq!(rows, [4, 5, 6], "{failed:?}");
    assert!(failed[0]["reason"].as_str().is_some_and(|r| r.contains("login")), "{failed:?}");
    assert!(failed[1]["reason"].as_str().is_some_and(|r| r.contains("fields")), "{failed:?}");
    assert!(failed[2]["reason"].as_str().is_some_and(|r| r.contains("row 1")), "{failed:?}");
    assert!(job["rate"].as_f64().is_some() && job["finished"].is_string());

    let ann = user(&s, "ann@example.org").await;
    assert_eq!(ann["status"], "PROVISIONED", "activated without a password");
    assert_eq!(ann["profile"]["title"], "Engineer");
    assert!(ann["profile"].get("externalId").is_none(), "columns outside the schema stay app-side");
    assert_eq!(user(&s, "bo@example.org").await["profile"]["lastName"], "Ng, Jr.");
    assert_eq!(user(&s, "kept@example.org").await["id"], existing["id"]);

    // The same events as the API's create path, and the job's start and end.
    let creates = s.events_of("user.lifecycle.create").await;
    assert!(creates.iter().any(|e| e["target"][0]["alternateId"] == "ann@example.org"
        && e["transaction"]["type"] == "JOB"
        && e["transaction"]["id"] == job["id"]));
    assert!(
        s.events_of("user.lifecycle.activate").await.iter().any(|e| e["target"][0]["alternateId"] == "bo@example.org")
    );
    let start = s.events_of("system.import.start").await;
    let complete = s.events_of("system.import.complete").await;
    assert_eq!(start.len(), 1);
    assert_eq!(complete[0]["debugContext"]["debugData"]["counts"]["created"], 2);

    // A re-run creates nothing; a changed title updates; the list shows both jobs.
    let again = import(&s, &app_id, csv, "text/csv").await;
    assert_eq!(again["counts"]["created"], 0, "{again}");
    assert_eq!(again["counts"]["skipped"], 3);
    let changed = "userName,email,firstName,lastName,title\nann@example.org,ann@example.org,Ann,Lee,Manager\n";
    let upd = import(&s, &app_id, changed, "text/csv").await;
    assert_eq!(counts(&upd), (0, 1, 1, 0, 0), "{upd}");
    assert_eq!(user(&s, "ann@example.org").await["profile"]["title"], "Manager");
    let ups = s.events_of("user.account.update_profile").await;
    assert!(ups.iter().any(|e| e["debugContext"]["debugData"]["changedAttributes"] == "title"));

    // JSON Lines, with typed values and a line that is not an object.
    let jsonl = "{\"login\":\"dee@example.org\",\"email\":\"dee@example.org\",\"firstName\":\"Dee\",\"lastName\":\"Ray\"}\n\
                 \n[1,2]\n{\"login\":\"eve@example.org\",\"email\":\"eve@example.org\",\"firstName\":\"Eve\",\"lastName\":\"Oh\"}\n";
    let j = import(&s, &app_id, jsonl, "application/x-ndjson").await;
    assert_eq!(counts(&j), (2, 0, 0, 0, 1), "{j}");
    assert_eq!(j["failedRows"][0]["row"], 2);
    assert_eq!(j["format"], "jsonl");

    // A password-hook import: users are ACTIVE and ask the password import hook at sign-in.
    let pw = "login,email,firstName,lastName\nfay@example.org,fay@example.org,Fay,Uno\n";
    let a = s
        .send(
            Method::POST,
            &format!("/api/v1/apps/{app_id}/imports?passwordHook=true"),
            Some(TOKEN),
            Some(pw.as_bytes().to_vec()),
            Some("text/csv"),
        )
        .await;
    assert_eq!(a.status, 202);
    let j = wait_job(&s, &app_id, &id_of(&a.body)).await;
    assert_eq!(j["passwordHook"], true);
    let fay = user(&s, "fay@example.org").await;
    assert_eq!(fay["status"], "ACTIVE");
    assert_eq!(fay["credentials"]["password"], json!({}));
    let fay_id = id_of(&fay);
    let stored = s.store().get_user(&fay_id).await.ok().flatten().expect("stored user");
    assert!(stored.credentials.password_hook && stored.credentials.password_hash.is_none());

    let list = s.get(&format!("/api/v1/apps/{app_id}/imports")).await;
    assert_eq!(list.ok().as_array().map(Vec::len), Some(5));
    assert!(list.body[0].get("failedRows").is_none(), "the list leaves out the failed rows");
    s.get(&format!("/api/v1/apps/{app_id}/imports/ijbnothere00000000000")).await.expect_error(404, "E0000007");
    let a = s
        .send(
            Method::POST,
            &format!("/api/v1/apps/{app_id}/imports"),
            Some(TOKEN),
            Some(b"x".to_vec()),
            Some("text/plain"),
        )
        .await;
    a.expect_error(415, "E0000001");
    let bad_header = import(&s, &app_id, "login,login\na,b\n", "text/csv").await;
    assert_eq!(bad_header["status"], "FAILED");
    assert!(bad_header["error"].as_str().is_some_and(|e| e.contains("twice")), "{bad_header}");
    let imports_dir = data.0.join("imports");
    let left: Vec<_> = std::fs::read_dir(&imports_dir).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "uploads are removed when their job ends: {left:?}");
    s.stop().await;
}

async fn hook_payload_and_profile_commands(b: Backend) {
    let s = TestServer::start(b).await;
    let rx = Receiver::start().await;
    let hook = s.create_inline_hook("Import transform", IMPORT_HOOK, &rx.url).await;
    let existing = s.create_user("taro.kato@example.org", "Taro", "Kato").await;
    let app = create_app(
        &s,
        "HR Source",
        json!({ "inlineHookId": id_of(&hook), "matching": ["EMAIL", "FIRST_AND_LAST_NAME"] }),
    )
    .await;
    let app_id = id_of(&app);
    rx.respond_with(|r| {
        let body = r.json();
        let name = body["data"]["appUser"]["profile"]["userName"].as_str().unwrap_or_default().to_owned();
        match name.as_str() {
            "new@example.org" => Reply::Json(
                200,
                json!({ "commands": [
                    { "type": "com.okta.user.profile.update", "value": { "title": "Set by hook", "nickName": null } },
                    { "type": "com.okta.appUser.profile.update", "value": { "firstName": "Renamed" } }
                ], "debugContext": { "why": "enrich" } })
                .to_string(),
            ),
            _ => Reply::Status(204),
        }
    });
    let csv = "userName,email,firstName,lastName,mobilePhone,nickName\n\
               tkato,taro.kato@example.org,Taro,Kato,,Tk\n\
               new@example.org,new@example.org,Nora,New,,Nono\n";
    let job = import(&s, &app_id, csv, "text/csv").await;
    assert_eq!(counts(&job), (1, 0, 0, 0, 1), "{job}");
    // Row 1 matched by email: its login tkato is not an email, so the update fails validation.
    assert_eq!(job["failedRows"][0]["row"], 1);

    let posts = rx.posts();
    assert_eq!(posts.len(), 2);
    let p = posts
        .iter()
        .map(|r| r.json())
        .find(|p| p["data"]["appUser"]["profile"]["userName"] == "tkato")
        .expect("the matched row's call");
    assert_eq!(p["eventType"], IMPORT_HOOK);
    assert_eq!(p["eventTypeVersion"], "1.0");
    assert_eq!(p["cloudEventVersion"], "0.1");
    assert_eq!(p["contentType"], "application/json");
    assert!(p["source"].as_str().is_some_and(|src| src.ends_with(&format!("/api/v1/inlineHooks/{}", id_of(&hook)))));
    let ctx = &p["data"]["context"];
    assert_eq!(
        ctx["application"],
        json!({ "name": "haken_import", "id": app_id, "label": "HR Source", "status": "ACTIVE" })
    );
    assert_eq!(ctx["job"], json!({ "id": job["id"], "type": "import:users" }));
    assert_eq!(ctx["policy"], json!(["EMAIL", "FIRST_AND_LAST_NAME"]));
    assert_eq!(ctx["matches"].as_array().map(Vec::len), Some(1));
    assert_eq!(ctx["matches"][0]["id"], existing["id"]);
    assert_eq!(ctx["matches"][0]["profile"]["login"], "taro.kato@example.org");
    assert_eq!(ctx["conflicts"], json!(["login", "nickName"]));
    assert_eq!(p["data"]["action"]["result"], "LINK_USER");
    assert_eq!(p["data"]["appUser"]["profile"]["mobilePhone"], Value::Null);
    assert_eq!(p["data"]["appUser"]["profile"]["userName"], "tkato");
    assert_eq!(p["data"]["user"]["id"], existing["id"]);
    assert_eq!(p["data"]["user"]["profile"]["login"], "tkato");
    assert!(p["data"]["user"]["profile"].get("mobilePhone").is_none());
    let q = posts.iter().map(|r| r.json()).find(|p| p["data"]["appUser"]["profile"]["userName"] == "new@example.org");
    let q = q.expect("the new row's call");
    assert_eq!(q["data"]["action"]["result"], "CREATE_USER");
    assert_eq!(q["data"]["context"]["matches"], json!([]));
    assert!(q["data"]["user"].get("id").is_none());
    assert_eq!(posts[0].header("X-Test"), Some("yes"));

    let nora = user(&s, "new@example.org").await;
    assert_eq!(nora["profile"]["firstName"], "Renamed", "appUser.profile.update flows through the mapping");
    assert_eq!(nora["profile"]["title"], "Set by hook");
    assert!(nora["profile"].get("nickName").is_none(), "a null in user.profile.update removes the attribute");
    let processed = s.events_of("inline_hook.response.processed").await;
    assert!(processed.iter().any(|e| e["debugContext"]["debugData"]["debugContext"]["why"] == "enrich"
        && e["debugContext"]["debugData"]["importJobId"] == job["id"]));
    assert_eq!(s.events_of("inline_hook.executed").await.len(), 2);
    s.stop().await;
}

async fn hook_links_and_errors(b: Backend) {
    let s = TestServer::start(b).await;
    let rx = Receiver::start().await;
    let hook = s.create_inline_hook("Import transform", IMPORT_HOOK, &rx.url).await;
    let target = s.create_user("target@example.org", "Tara", "Get").await;
    let target_id = id_of(&target);
    s.create_user("taken@example.org", "Tak", "En").await;
    let app = create_app(&s, "HR", json!({ "inlineHookId": id_of(&hook) })).await;
    let app_id = id_of(&app);
    let tid = target_id.clone();
    rx.respond_with(move |r| {
        let login = r.json()["data"]["user"]["profile"]["login"].as_str().unwrap_or_default().to_owned();
        let body = match login.split('@').next().unwrap_or_default() {
            "link" => json!({ "commands": [
                { "type": "com.okta.action.update", "value": { "result": "LINK_USER" } },
                { "type": "com.okta.user.update", "value": { "id": tid } }
            ] }),
            "nolinkid" => json!({ "commands": [{ "type": "com.okta.action.update", "value": { "result": "LINK_USER" } }] }),
            "ghost" => json!({ "commands": [
                { "type": "com.okta.action.update", "value": { "result": "LINK_USER" } },
                { "type": "com.okta.user.update", "value": { "id": "00unothere0000000000" } }
            ] }),
            // CREATE_USER for a login that exists: the batch fails at commit, then this row alone.
            "taken" => json!({ "commands": [{ "type": "com.okta.action.update", "value": { "result": "CREATE_USER" } }] }),
            "err" => json!({ "error": { "errorSummary": "Row rejected by HR rules" },
                             "commands": [{ "type": "com.okta.user.profile.update", "value": { "title": "not applied" } }] }),
            _ => json!({}),
        };
        Reply::Json(200, body.to_string())
    });
    let csv = "login,email,firstName,lastName,title\n\
               link@example.org,link@example.org,Lin,K,Linked\n\
               nolinkid@example.org,nolinkid@example.org,No,Id,\n\
               ghost@example.org,ghost@example.org,Gho,St,\n\
               err@example.org,err@example.org,Er,Ror,\n\
               taken@example.org,taken@example.org,Tak,En,Dup\n";
    let job = import(&s, &app_id, csv, "text/csv").await;
    assert_eq!(counts(&job), (2, 1, 1, 0, 2), "{job}");
    assert_eq!(job["failedRows"][0]["row"], 3);
    assert!(job["failedRows"][0]["reason"].as_str().is_some_and(|r| r.contains("does not exist")), "{job}");
    assert_eq!(job["failedRows"][1]["row"], 5);
    assert!(job["failedRows"][1]["reason"].as_str().is_some_and(|r| r.contains("already exists")), "{job}");
    assert!(user(&s, "taken@example.org").await["profile"].get("title").is_none());

    // LINK_USER + user.update: the row's profile went to the chosen user; no new user.
    let t = user(&s, &target_id).await;
    assert_eq!(t["profile"]["title"], "Linked");
    assert_eq!(t["profile"]["login"], "link@example.org");
    // LINK_USER without user.update: the answer is invalid, the default (create) applies.
    assert_eq!(user(&s, "nolinkid@example.org").await["status"], "PROVISIONED");
    let processed = s.events_of("inline_hook.response.processed").await;
    assert!(processed.iter().any(|e| {
        e["outcome"]["result"] == "FAILURE"
            && e["debugContext"]["debugData"]["failureReason"]
                .as_str()
                .is_some_and(|r| r.contains("com.okta.user.update"))
    }));
    // The error object: a failure event with the errorSummary; the default action, no commands.
    let err_user = user(&s, "err@example.org").await;
    assert!(err_user["profile"].get("title").is_none());
    assert!(processed.iter().any(|e| e["outcome"]["result"] == "FAILURE"
        && e["debugContext"]["debugData"]["errorSummary"] == "Row rejected by HR rules"
        && e["debugContext"]["debugData"]["importRow"] == 4));
    s.stop().await;
}

async fn hook_failures_fail_open_unless_fail_closed(b: Backend) {
    let s = TestServer::start(b).await;
    let rx = Receiver::start().await;
    let hook = s.create_inline_hook("Import transform", IMPORT_HOOK, &rx.url).await;
    let hook_id = id_of(&hook);
    let upd = s.post(&format!("/api/v1/inlineHooks/{hook_id}"), json!({ "execution": { "timeoutMs": 300 } })).await;
    assert_eq!(upd.ok()["execution"]["timeoutMs"], 300);
    let app = create_app(&s, "HR", json!({ "inlineHookId": hook_id })).await;
    let app_id = id_of(&app);
    let big = format!("{{\"debugContext\":{{\"pad\":\"{}\"}}}}", "x".repeat(300 * 1024));
    rx.respond_with(move |r| {
        let login = r.json()["data"]["user"]["profile"]["login"].as_str().unwrap_or_default().to_owned();
        match login.split('@').next().unwrap_or_default() {
            "slow" => Reply::SlowJson(Duration::from_millis(800), 200, "{}".into()),
            "fivehundred" => Reply::Status(500),
            "malformed" => Reply::Json(200, "{not json".into()),
            "huge" => Reply::Json(200, big.clone()),
            "unknown" => {
                Reply::Json(200, json!({ "commands": [{ "type": "com.okta.frobnicate", "value": {} }] }).to_string())
            }
            "schema" => Reply::Json(
                200,
                json!({ "commands": [{ "type": "com.okta.user.profile.update", "value": { "shoeSize": 44 } }] })
                    .to_string(),
            ),
            _ => Reply::Status(204),
        }
    });
    let rows = ["slow", "fivehundred", "malformed", "huge", "unknown", "schema"];
    let mut csv = "login,email,firstName,lastName\n".to_owned();
    for r in rows {
        csv.push_str(&format!("{r}@example.org,{r}@example.org,{r},Row\n"));
    }
    let job = import(&s, &app_id, &csv, "text/csv").await;
    assert_eq!(counts(&job), (6, 0, 0, 0, 0), "every failure fails open: {job}");
    for r in rows {
        assert_eq!(user(&s, &format!("{r}@example.org")).await["profile"]["firstName"], r);
    }
    let calls = |who: &str| {
        rx.posts()
            .iter()
            .filter(|p| p.json()["data"]["user"]["profile"]["login"] == format!("{who}@example.org"))
            .count()
    };
    assert_eq!(calls("fivehundred"), 2, "a 5xx is retried once");
    assert_eq!(calls("slow"), 2, "a timeout is retried once");
    assert_eq!(calls("malformed"), 1, "a 2xx is not retried");
    let executed = s.events_of("inline_hook.executed").await;
    for reason in ["TIMEOUT", "HTTP_STATUS", "MALFORMED_RESPONSE", "RESPONSE_TOO_LARGE"] {
        assert!(executed.iter().any(|e| e["outcome"]["reason"] == reason), "{reason} recorded");
    }
    let processed = s.events_of("inline_hook.response.processed").await;
    assert!(processed.iter().any(|e| {
        e["debugContext"]["debugData"]["failureReason"].as_str().is_some_and(|r| r.contains("com.okta.frobnicate"))
    }));
    assert!(
        processed
            .iter()
            .any(|e| e["debugContext"]["debugData"]["failureReason"].as_str().is_some_and(|r| r.contains("shoeSize")))
    );

    // failClosed: the failing row fails with the reason; the others go on.
    let closed =
        s.post(&format!("/api/v1/inlineHooks/{hook_id}"), json!({ "execution": { "failMode": "failClosed" } })).await;
    assert_eq!(closed.ok()["execution"]["failMode"], "failClosed");
    let csv = "login,email,firstName,lastName\n\
               malformed2@example.org,malformed2@example.org,M,Two\n\
               fine@example.org,fine@example.org,Fine,Row\n";
    rx.respond_with(|r| {
        if r.json()["data"]["user"]["profile"]["login"] == "malformed2@example.org" {
            Reply::Json(200, "{not json".into())
        } else {
            Reply::Status(204)
        }
    });
    let job = import(&s, &app_id, csv, "text/csv").await;
    assert_eq!(counts(&job), (1, 0, 0, 0, 1), "{job}");
    assert_eq!(job["failedRows"][0]["row"], 1);
    assert!(job["failedRows"][0]["reason"].as_str().is_some_and(|r| r.contains("MALFORMED")), "{job}");
    s.get("/api/v1/users/malformed2@example.org").await.expect_error(404, "E0000007");

    // Shadow mode: the hook is asked, its effect recorded, the default applies.
    s.post(&format!("/api/v1/inlineHooks/{hook_id}"), json!({ "execution": { "failMode": null, "shadow": true } }))
        .await
        .ok();
    rx.always_json(
        200,
        &json!({ "commands": [{ "type": "com.okta.user.profile.update", "value": { "title": "shadow" } }] })
            .to_string(),
    );
    let job =
        import(&s, &app_id, "login,email,firstName,lastName\nsh@example.org,sh@example.org,Sh,Adow\n", "text/csv")
            .await;
    assert_eq!(counts(&job), (1, 0, 0, 0, 0));
    assert!(user(&s, "sh@example.org").await["profile"].get("title").is_none());
    let processed = s.events_of("inline_hook.response.processed").await;
    assert!(
        processed
            .iter()
            .any(|e| e["debugContext"]["debugData"]["shadowEffect"].as_str().is_some_and(|x| x.contains("shadow")))
    );
    s.stop().await;
}

async fn cli_imports_and_reports_json(b: Backend) {
    let s = TestServer::start(b).await;
    let app = create_app(&s, "HR", json!(null)).await;
    let app_id = id_of(&app);
    let dir = crate::harness::tempdir::Dir::new("cli-import");
    let file = dir.0.join("users.csv");
    std::fs::write(
        &file,
        "login,email,firstName,lastName\ngus@example.org,gus@example.org,Gus,One\nnot-an-email,x,Bad,Row\n",
    )
    .expect("write the file");
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_haken"))
            .args(["users", "import"])
            .args(&args)
            .args(["--url", &s.base, "--token", TOKEN])
            .env_remove("HAKEN_TOKEN")
            .env_remove("HAKEN_URL")
            .output()
            .expect("haken users import runs");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let path = file.display().to_string();
    let (status, out, err) = run(vec![path.clone(), "--app".into(), app_id.clone(), "--json".into()]);
    assert!(status.success(), "row failures do not fail the command: {out} {err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("one JSON object ({e}): {out}"));
    assert_eq!(report["status"], "COMPLETED");
    assert_eq!(report["counts"]["created"], 1);
    assert_eq!(report["counts"]["failed"], 1);
    assert_eq!(report["failedRows"][0]["row"], 2);
    assert_eq!(user(&s, "gus@example.org").await["profile"]["firstName"], "Gus");

    // Plain report, and a re-run that creates nothing.
    let (status, out, _) = run(vec![path.clone(), "--app".into(), app_id.clone()]);
    assert!(status.success());
    assert!(out.contains("created 0") && out.contains("skipped 1"), "{out}");
    assert!(out.contains("row 2"), "failed rows listed with their reasons: {out}");

    // A job that fails as a whole (bad header) exits non-zero; so does an unknown app.
    std::fs::write(&file, "login,login\n").expect("write");
    let (status, out, err) = run(vec![path.clone(), "--app".into(), app_id.clone(), "--json".into()]);
    assert!(!status.success(), "{out} {err}");
    let (status, _, err) = run(vec![path, "--app".into(), "0oanothere0000000000".into()]);
    assert!(!status.success());
    assert!(err.contains("E0000007"), "{err}");
    s.stop().await;
}

/// A job whose server died mid-import (it says RUNNING, and nothing has committed for longer
/// than a batch can take) is answered as FAILED with the reason, everywhere, and the app can
/// import again.
async fn abandoned_jobs_are_reported_failed(b: Backend) {
    let s = TestServer::start(b).await;
    let app = create_app(&s, "Crashed source", json!({ "matching": ["LOGIN"] })).await;
    let app_id = id_of(&app);
    let done =
        import(&s, &app_id, "userName,email,firstName,lastName\nlive@example.org,live@example.org,Li,Ve\n", "text/csv")
            .await;
    assert_eq!(done["status"], "COMPLETED");
    // The document a server leaves behind when it is killed in the middle of a job.
    let then =
        haken_core::Timestamp(haken_core::Timestamp::now().millis() - haken_core::app::ABANDONED_AFTER_MS - 60_000);
    let mut job: haken_core::app::ImportJob =
        s.store().get_doc(&id_of(&done)).await.ok().flatten().expect("stored job");
    job.id = "ijbcrashed0000000001".into();
    job.status = haken_core::app::JobStatus::Running;
    job.finished = None;
    job.created = then;
    job.started = Some(then);
    job.heartbeat = Some(then);
    s.store().insert_doc(&job, &[]).await.expect("stored");
    let listed = s.get(&format!("/api/v1/apps/{app_id}/imports")).await;
    let listed = listed.ok().as_array().cloned().unwrap_or_default();
    let crashed = listed.iter().find(|j| j["id"] == "ijbcrashed0000000001").cloned().unwrap_or_default();
    assert_eq!(crashed["status"], "FAILED", "{crashed}");
    let got = s.get(&format!("/api/v1/apps/{app_id}/imports/ijbcrashed0000000001")).await;
    let got = got.ok().clone();
    assert_eq!(got["status"], "FAILED");
    assert!(got["error"].as_str().is_some_and(|e| e.contains("import the file again")), "{got}");
    assert!(got["finished"].is_string());
    // Recorded once, with its event; a live job is untouched.
    let stored: haken_core::app::ImportJob =
        s.store().get_doc("ijbcrashed0000000001").await.ok().flatten().expect("stored job");
    assert_eq!(stored.status, haken_core::app::JobStatus::Failed);
    let ended = s.events_of("system.import.complete").await;
    assert!(
        ended.iter().any(|e| e["outcome"]["reason"] == "ABANDONED" && e["target"][0]["id"] == "ijbcrashed0000000001")
    );
    assert_eq!(s.get(&format!("/api/v1/apps/{app_id}/imports/{}", id_of(&done))).await.ok()["status"], "COMPLETED");
    let again =
        import(&s, &app_id, "userName,email,firstName,lastName\nlive@example.org,live@example.org,Li,Ve\n", "text/csv")
            .await;
    assert_eq!(again["status"], "COMPLETED");
    assert_eq!(again["counts"]["created"], 0);
    s.stop().await;
}

/// Matching by email and by name uses what the profile says now: keys written by a later
/// profile change, not those of the user's creation.
async fn match_keys_follow_profile_changes(b: Backend) {
    let s = TestServer::start(b).await;
    let ann = s.create_user("ann@example.org", "Ann", "Lee").await;
    let id = id_of(&ann);
    s.post(&format!("/api/v1/users/{id}"), json!({ "profile": { "email": "Ann.Ng@Example.org", "lastName": "Ng" } }))
        .await
        .ok();
    let by_email = create_app(&s, "By email", json!({ "matching": ["EMAIL"] })).await;
    let csv = "userName,email,firstName,lastName\nann@example.org,ANN.NG@example.org,Ann,Ng\n";
    let job = import(&s, &id_of(&by_email), csv, "text/csv").await;
    let (created, linked, _, _, failed) = counts(&job);
    assert_eq!((created, linked, failed), (0, 1, 0), "matched by the new email: {job}");
    let by_name = create_app(&s, "By name", json!({ "matching": ["FIRST_AND_LAST_NAME"] })).await;
    let csv = "userName,email,firstName,lastName\nann@example.org,ann.ng@example.org,ANN,ng\n";
    let job = import(&s, &id_of(&by_name), csv, "text/csv").await;
    let (created, linked, _, _, failed) = counts(&job);
    assert_eq!((created, linked, failed), (0, 1, 0), "matched by the new name: {job}");
    s.stop().await;
}
