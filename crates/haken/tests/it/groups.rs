//! Groups API: CRUD, membership and their events.

use reqwest::Method;
use serde_json::json;

use crate::both;
use crate::harness::{Backend, TestServer};

both!(group_crud_and_membership, group_listing_and_bad_input);

async fn group_crud_and_membership(b: Backend) {
    let s = TestServer::start(b).await;
    let g = s.post("/api/v1/groups", json!({ "profile": { "name": "Engineering", "description": "Builders" } })).await;
    let g = g.ok().clone();
    let gid = g["id"].as_str().unwrap_or_default().to_owned();
    assert!(gid.starts_with("00g"));
    assert_eq!(g["type"], "OKTA_GROUP");
    assert_eq!(g["objectClass"], json!(["okta:user_group"]));
    assert!(g["_links"]["logo"].is_array());

    let dup = s.post("/api/v1/groups", json!({ "profile": { "name": "engineering" } })).await;
    dup.expect_error(400, "E0000001");
    assert!(dup.causes().iter().any(|c| c.starts_with("name:")));

    let renamed = s
        .put(&format!("/api/v1/groups/{gid}"), json!({ "profile": { "name": "Eng", "description": "Renamed" } }))
        .await;
    assert_eq!(renamed.ok()["profile"]["name"], "Eng");

    let u = s.create_user("member@example.org", "Mem", "Ber").await;
    let uid = u["id"].as_str().unwrap_or_default();
    let add = s.call(Method::PUT, &format!("/api/v1/groups/{gid}/users/{uid}"), None).await;
    assert_eq!(add.status.as_u16(), 204);
    // Adding twice is harmless and writes no second event.
    assert_eq!(s.call(Method::PUT, &format!("/api/v1/groups/{gid}/users/{uid}"), None).await.status.as_u16(), 204);
    let members = s.get(&format!("/api/v1/groups/{gid}/users")).await;
    assert_eq!(members.ok()[0]["id"], uid);
    let groups = s.get(&format!("/api/v1/users/{uid}/groups")).await;
    assert_eq!(groups.ok()[0]["id"], gid.as_str());

    s.call(Method::PUT, &format!("/api/v1/groups/{gid}/users/00unothere0000000000"), None)
        .await
        .expect_error(404, "E0000007");
    s.call(Method::PUT, &format!("/api/v1/groups/00gnothere0000000000/users/{uid}"), None)
        .await
        .expect_error(404, "E0000007");

    let adds = s.events_of("group.user_membership.add").await;
    assert_eq!(adds.len(), 1);
    let kinds: Vec<&str> =
        adds[0]["target"].as_array().map(|t| t.iter().filter_map(|x| x["type"].as_str()).collect()).unwrap_or_default();
    assert_eq!(kinds, vec!["User", "UserGroup"]);

    assert_eq!(s.delete(&format!("/api/v1/groups/{gid}/users/{uid}")).await.status.as_u16(), 204);
    assert_eq!(s.get(&format!("/api/v1/groups/{gid}/users")).await.ok().as_array().map(Vec::len), Some(0));
    assert_eq!(s.events_of("group.user_membership.remove").await.len(), 1);

    // A user created with groupIds joins at once, with its membership event.
    let with = s
        .post(
            "/api/v1/users",
            json!({ "profile": { "login": "joined@example.org", "email": "joined@example.org", "firstName": "J", "lastName": "O" }, "groupIds": [gid] }),
        )
        .await;
    let jid = with.ok()["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(s.get(&format!("/api/v1/users/{jid}/groups")).await.ok()[0]["id"], gid.as_str());

    assert_eq!(s.delete(&format!("/api/v1/groups/{gid}")).await.status.as_u16(), 204);
    s.get(&format!("/api/v1/groups/{gid}")).await.expect_error(404, "E0000007");
    assert_eq!(s.get(&format!("/api/v1/users/{jid}/groups")).await.ok().as_array().map(Vec::len), Some(0));
    for t in ["group.lifecycle.create", "group.profile.update", "group.lifecycle.delete"] {
        assert_eq!(s.events_of(t).await.len(), 1, "{t}");
    }
    s.stop().await;
}

async fn group_listing_and_bad_input(b: Backend) {
    let s = TestServer::start(b).await;
    for name in ["Alpha", "Beta", "Alphabet", "Gamma"] {
        s.post("/api/v1/groups", json!({ "profile": { "name": name } })).await.ok();
    }
    let names = |a: &crate::harness::Answer| -> Vec<String> {
        a.ok()
            .as_array()
            .map(|v| v.iter().map(|g| g["profile"]["name"].as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default()
    };
    assert_eq!(names(&s.get("/api/v1/groups?q=alp").await), vec!["Alpha", "Alphabet"]);
    let mut all = Vec::new();
    let mut url = "/api/v1/groups?limit=3".to_owned();
    loop {
        let a = s.get(&url).await;
        all.extend(names(&a));
        match a.next_link() {
            Some(n) => url = n,
            None => break,
        }
    }
    assert_eq!(all, vec!["Alpha", "Beta", "Alphabet", "Gamma"]);
    let f = crate::users::urlencode("profile.name sw \"Ga\"");
    assert_eq!(names(&s.get(&format!("/api/v1/groups?filter={f}")).await), vec!["Gamma"]);

    s.post("/api/v1/groups", json!({ "profile": {} })).await.expect_error(400, "E0000001");
    s.post("/api/v1/groups", json!({ "profile": { "name": "X", "color": "red" } })).await.expect_error(400, "E0000001");
    s.post("/api/v1/groups", json!({ "profile": { "name": "x".repeat(256) } })).await.expect_error(400, "E0000001");
    s.put("/api/v1/groups/00gnothere0000000000", json!({ "profile": { "name": "Y" } }))
        .await
        .expect_error(404, "E0000007");
    s.delete("/api/v1/groups/00gnothere0000000000").await.expect_error(404, "E0000007");
    s.stop().await;
}
