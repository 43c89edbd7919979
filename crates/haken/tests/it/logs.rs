//! System Log: every change has its event with all fields; polling and bounded queries;
//! filters, keywords, paging and bad parameters.

use serde_json::json;

use crate::both;
use crate::harness::{Backend, TestServer};
use crate::users::urlencode;

both!(events_have_every_field, polling_and_bounded_queries, log_query_errors);

async fn events_have_every_field(b: Backend) {
    let s = TestServer::start(b).await;
    let created = s.post("/api/v1/users", json!({ "profile": { "login": "log@example.org", "email": "log@example.org", "firstName": "L", "lastName": "G" } })).await;
    let rid = created.header("x-okta-request-id").unwrap_or_default().to_owned();
    assert_eq!(rid.len(), 25);
    let id = created.ok()["id"].as_str().unwrap_or_default().to_owned();
    let f = urlencode(&format!("eventType eq \"user.lifecycle.create\" and target.id eq \"{id}\""));
    let (events, _) = s.poll_logs(&format!("/api/v1/logs?filter={f}"), |e| !e.is_empty()).await;
    assert_eq!(events.len(), 1);
    let ev = &events[0];
    for field in [
        "uuid",
        "published",
        "eventType",
        "version",
        "severity",
        "displayMessage",
        "actor",
        "client",
        "outcome",
        "target",
        "transaction",
        "debugContext",
        "authenticationContext",
        "securityContext",
        "request",
        "legacyEventType",
    ] {
        assert!(ev.get(field).is_some(), "field {field} missing in {ev}");
    }
    assert_eq!(ev["version"], "0");
    assert_eq!(ev["severity"], "INFO");
    assert_eq!(ev["outcome"]["result"], "SUCCESS");
    assert_eq!(ev["debugContext"]["debugData"]["requestId"], rid.as_str());
    assert_eq!(ev["transaction"]["type"], "WEB");
    assert_eq!(ev["client"]["ipAddress"], "127.0.0.1");
    assert_eq!(ev["request"]["ipChain"][0]["ip"], "127.0.0.1");
    assert_eq!(ev["target"][0]["alternateId"], "log@example.org");
    assert!(ev["transaction"]["detail"]["requestApiTokenId"].as_str().is_some_and(|t| t.starts_with("00T")));
    assert_eq!(ev["actor"]["id"], ev["transaction"]["detail"]["requestApiTokenId"]);
    assert!(ev["published"].as_str().is_some_and(|p| p.ends_with('Z') && p.len() == 24));
    s.stop().await;
}

async fn polling_and_bounded_queries(b: Backend) {
    let s = TestServer::start(b).await;
    for i in 0..5 {
        s.post("/api/v1/groups", json!({ "profile": { "name": format!("g{i}") } })).await.ok();
    }
    let f = urlencode("eventType eq \"group.lifecycle.create\"");
    // Polling: pages of 2 (a page never holds more), a next link on every page.
    let (events, url) = s.poll_logs(&format!("/api/v1/logs?limit=2&filter={f}"), |e| e.len() >= 5).await;
    let names: Vec<&str> = events.iter().map(|e| e["target"][0]["displayName"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, vec!["g0", "g1", "g2", "g3", "g4"]);
    let first = s.get(&format!("/api/v1/logs?limit=2&filter={f}")).await;
    assert!(first.ok().as_array().is_some_and(|a| a.len() <= 2));
    // New events appear at the poller's cursor.
    s.post("/api/v1/groups", json!({ "profile": { "name": "late" } })).await.ok();
    let (late, _) = s.poll_logs(&url, |e| !e.is_empty()).await;
    assert_eq!(late[0]["target"][0]["displayName"], "late");

    // Bounded, descending: newest first, no next link after the last page.
    let since = urlencode(&haken_core::Timestamp(haken_core::Timestamp::now().millis() - 60_000).to_rfc3339());
    let until = urlencode(&haken_core::Timestamp(haken_core::Timestamp::now().millis() + 60_000).to_rfc3339());
    let mut url = format!("/api/v1/logs?since={since}&until={until}&sortOrder=DESCENDING&limit=4&filter={f}");
    let mut desc = Vec::new();
    let mut pages = 0;
    loop {
        let a = s.get(&url).await;
        pages += 1;
        desc.extend(
            a.ok()
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| e["target"][0]["displayName"].as_str().unwrap_or_default().to_owned()),
        );
        match a.next_link() {
            Some(n) => url = n,
            None => break,
        }
        assert!(pages < 5);
    }
    assert_eq!(desc, vec!["late", "g4", "g3", "g2", "g1", "g0"]);
    assert_eq!(pages, 2);

    // Keywords: all must match.
    let a = s.get("/api/v1/logs?q=create%20okta%20group&limit=100").await;
    assert_eq!(a.ok().as_array().map(Vec::len), Some(6));
    let a = s.get("/api/v1/logs?q=g3").await;
    assert_eq!(a.ok().as_array().map(Vec::len), Some(1));
    s.stop().await;
}

async fn log_query_errors(b: Backend) {
    let s = TestServer::start(b).await;
    s.get("/api/v1/logs?since=2001-01-01T00:00:00Z").await.expect_error(400, "E0000053");
    s.get("/api/v1/logs?since=yesterday").await.expect_error(400, "E0000053");
    s.get(&format!("/api/v1/logs?filter={}", urlencode("eventType eq"))).await.expect_error(400, "E0000053");
    s.get(&format!("/api/v1/logs?filter={}", urlencode("published gt \"2020-01-01T00:00:00Z\"")))
        .await
        .expect_error(400, "E0000053");
    s.get(&format!("/api/v1/logs?filter={}", urlencode("debugContext.debugData.url co \"x\"")))
        .await
        .expect_error(400, "E0000031");
    s.get("/api/v1/logs?limit=1001").await.expect_error(400, "E0000053");
    s.get("/api/v1/logs?sortOrder=SIDEWAYS").await.expect_error(400, "E0000053");
    s.get("/api/v1/logs?q=a%20b%20c%20d%20e%20f%20g%20h%20i%20j%20k").await.expect_error(400, "E0000001");
    s.get("/api/v1/logs?after=bogus").await.expect_error(400, "E0000029");
    s.stop().await;
}

/// PostgreSQL writers commit out of `seq` order. A poller must not move past an event whose
/// transaction is still open, even when a later-numbered event is already committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_polling_never_skips_a_late_commit() {
    use sqlx::Connection;
    if !crate::harness::postgres_available().await {
        return;
    }
    let s = TestServer::start(Backend::Postgres).await;
    let url = s.database_url().expect("postgres");
    let insert =
        "INSERT INTO log_events (uuid, published, event_type, data) VALUES ($1, $2, 'group.lifecycle.create', $3)";
    let event = |uuid: &str| {
        let mut ev = haken_core::log_event::EventContext::system("test").event(
            "group.lifecycle.create",
            "late",
            haken_core::Timestamp::now(),
        );
        ev.uuid = uuid.to_owned();
        serde_json::to_string(&ev).unwrap_or_default()
    };
    let mut a = sqlx::PgConnection::connect(&url).await.expect("connect a");
    let mut b = sqlx::PgConnection::connect(&url).await.expect("connect b");
    // A gets its transaction id first; B takes a lower seq and stays open; A commits a higher seq.
    sqlx::query("BEGIN").execute(&mut a).await.expect("begin a");
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut a).await.expect("xid a");
    sqlx::query("BEGIN").execute(&mut b).await.expect("begin b");
    let now = haken_core::Timestamp::now().millis();
    sqlx::query(insert)
        .bind("00000000-0000-4000-8000-00000000000b")
        .bind(now)
        .bind(event("00000000-0000-4000-8000-00000000000b"))
        .execute(&mut b)
        .await
        .expect("b inserts");
    sqlx::query(insert)
        .bind("00000000-0000-4000-8000-00000000000a")
        .bind(now)
        .bind(event("00000000-0000-4000-8000-00000000000a"))
        .execute(&mut a)
        .await
        .expect("a inserts");
    sqlx::query("COMMIT").execute(&mut a).await.expect("commit a");

    let f = urlencode("displayMessage eq \"late\"");
    let (first, next) = s.poll_logs(&format!("/api/v1/logs?filter={f}"), |e| !e.is_empty()).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["uuid"], "00000000-0000-4000-8000-00000000000a");
    sqlx::query("COMMIT").execute(&mut b).await.expect("commit b");
    let (late, _) = s.poll_logs(&next, |e| !e.is_empty()).await;
    assert_eq!(late[0]["uuid"], "00000000-0000-4000-8000-00000000000b", "the late commit is not skipped");
    s.stop().await;
}
