//! Authentication, rate limits, and Okta's answers for unknown paths and methods.

use reqwest::Method;

use crate::both;
use crate::harness::{Backend, TOKEN, TestServer};

both!(tokens_are_required, rate_limit_per_token, unknown_paths_and_methods);

async fn tokens_are_required(b: Backend) {
    let s = TestServer::start(b).await;
    for path in ["/api/v1/users", "/api/v1/groups", "/api/v1/logs", "/api/v1/meta/schemas/user/default"] {
        s.send(Method::GET, path, None, None, None).await.expect_error(401, "E0000011");
        s.send(Method::GET, path, Some("wrong-token"), None, None).await.expect_error(401, "E0000011");
    }
    let a = s.send(Method::GET, "/api/v1/users", None, None, None).await;
    assert!(a.header("x-okta-request-id").is_some());
    // The scheme without a space, as the Okta Python SDK 3.x sends it.
    let resp = s
        .http
        .get(format!("{}/api/v1/users", s.base))
        .header("Authorization", format!("SSWS{TOKEN}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 200);
    let resp = s
        .http
        .get(format!("{}/api/v1/users", s.base))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 401);
    s.stop().await;
}

async fn rate_limit_per_token(b: Backend) {
    let s = TestServer::start_with(b, |c| c.rate_limit_per_minute = 5).await;
    let mut last = None;
    for i in 0..5 {
        let a = s.get("/api/v1/users").await;
        a.ok();
        assert_eq!(a.header("x-rate-limit-limit"), Some("5"));
        assert_eq!(a.header("x-rate-limit-remaining"), Some((4 - i).to_string().as_str()));
        last = a.header("x-rate-limit-reset").map(str::to_owned);
    }
    let a = s.get("/api/v1/users").await;
    a.expect_error(429, "E0000047");
    assert_eq!(a.header("x-rate-limit-remaining"), Some("0"));
    assert_eq!(a.header("x-rate-limit-reset").map(str::to_owned), last);
    assert!(a.header("date").is_some(), "SDKs need Date beside X-Rate-Limit-Reset to back off");
    s.stop().await;
}

async fn unknown_paths_and_methods(b: Backend) {
    let s = TestServer::start(b).await;
    s.get("/api/v1/nothing-here").await.expect_error(404, "E0000008");
    s.call(Method::PATCH, "/api/v1/users", None).await.expect_error(405, "E0000022");
    let h = s.send(Method::GET, "/healthz", None, None, None).await;
    assert_eq!(h.ok()["status"], "ok");
    s.stop().await;
}
