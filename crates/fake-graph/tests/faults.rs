//! Fault injection: throttling with Retry-After bookkeeping, 5xx per route class, 423, 507, stats.

mod common;

use common::*;
use fake_graph::{FakeGraph, FakeGraphConfig, Flavour, RouteClass, Scope};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn throttling_429_with_retry_after_and_pause_bookkeeping() {
    let (g, api) = business().await;
    g.faults().throttle_next(Scope::Graph, 1, 429, Some(1));
    let r = api.get("/me/drive/root").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").unwrap(), "1");
    assert_eq!(r.code(), "activityLimitReached");
    assert_eq!(r.inner_codes(), vec!["throttledRequest", "quota"]);
    // A client that waits is fine.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(api.get("/me/drive/root").await.status, 200);
    assert!(g.stats().pause_violations.is_empty());
    assert_eq!(g.stats().throttled_responses, 1);

    // A client that retries at once is recorded — any Graph request during the pause counts.
    g.faults().throttle_next(Scope::Graph, 1, 429, Some(2));
    assert_eq!(api.get("/me/drive/root").await.status, 429);
    assert_eq!(api.get("/me").await.status, 200, "the throttle was single-shot");
    let s = g.stats();
    assert_eq!(s.pause_violations.len(), 1);
    let v = &s.pause_violations[0];
    assert_eq!(
        (v.class, v.method.as_str(), v.path.as_str()),
        (RouteClass::DriveInfo, "GET", "/v1.0/me")
    );
    assert!(
        v.early_by > Duration::from_millis(500) && v.early_by <= Duration::from_secs(2),
        "{v:?}"
    );
    // Requests outside the throttle's scope don't count (download hosts are not Graph).
    g.drive().put_file("/f.txt", &b"x"[..]).unwrap();
    g.reset_stats();
    let url = api.get_ok("/me/drive/root:/f.txt").await["@microsoft.graph.downloadUrl"]
        .as_str()
        .unwrap()
        .to_string();
    g.faults().throttle_next(RouteClass::Metadata, 1, 429, Some(5));
    assert_eq!(api.get("/me/drive/root").await.status, 429);
    assert_eq!(anon(&api).get(&url).await.status, 200);
    assert_eq!(api.get("/me/drive/root/children").await.status, 200);
    assert!(
        g.stats().pause_violations.is_empty(),
        "{:?}",
        g.stats().pause_violations
    );
    assert_eq!(api.get("/me/drive/root").await.status, 200);
    assert_eq!(g.stats().pause_violations.len(), 1);
}

#[tokio::test]
async fn throttle_503_without_retry_after_and_every_nth() {
    let (g, api) = business().await;
    g.faults().throttle_next(Scope::Graph, 2, 503, None);
    for _ in 0..2 {
        let r = api.get("/me").await;
        assert_eq!(r.status, 503);
        assert!(r.header("retry-after").is_none());
        assert_eq!(r.code(), "serviceNotAvailable");
    }
    assert_eq!(api.get("/me").await.status, 200);
    assert!(g.stats().pause_violations.is_empty());
    // Every 3rd request.
    g.faults().throttle_every(Scope::Graph, 3, 429, Some(0));
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(api.get("/me").await.status);
        }
        v
    };
    assert_eq!(statuses, vec![200, 200, 429, 200, 200, 429]);
    g.faults().clear();
    assert_eq!(api.get("/me").await.status, 200);
}

#[tokio::test]
async fn failures_per_route_class() {
    let (g, api) = business().await;
    g.drive().put_file("/f.txt", &b"hello"[..]).unwrap();
    let url = api.get_ok("/me/drive/root:/f.txt").await["@microsoft.graph.downloadUrl"]
        .as_str()
        .unwrap()
        .to_string();
    g.faults().fail_next(RouteClass::Download, 2, 500);
    g.faults().fail_next(RouteClass::SimpleUpload, 1, 504);
    assert_eq!(
        api.get("/me/drive/root:/f.txt").await.status,
        200,
        "other classes are unaffected"
    );
    let r = anon(&api).get(&url).await;
    assert_eq!((r.status, r.code().as_str()), (500, "generalException"));
    assert_eq!(anon(&api).get(&url).await.status, 500);
    assert_eq!(&anon(&api).get(&url).await.body[..], b"hello");
    let r = api.put("/me/drive/root:/g.txt:/content", b"g").await;
    assert_eq!(r.status, 504);
    assert!(!g.drive().exists("/g.txt"), "a failed request changed nothing");
    assert_eq!(api.put("/me/drive/root:/g.txt:/content", b"g").await.status, 201);
    let s = g.stats();
    assert_eq!(s.injected_failures, 3);
    assert_eq!(s.count(RouteClass::Download), 3);
    assert_eq!(s.count(RouteClass::SimpleUpload), 2);
    assert_eq!(s.count(RouteClass::Metadata), 2);
}

#[tokio::test]
async fn identity_endpoints_can_be_throttled() {
    let (g, _) = business().await;
    g.faults().throttle_next(RouteClass::Token, 1, 429, Some(1));
    let r = http()
        .post(format!("{}/common/oauth2/v2.0/token", g.login_url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "client_id={}&grant_type=refresh_token&refresh_token={}",
            g.client_id(),
            g.issue_tokens().1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["error"], "temporarily_unavailable");
}

#[tokio::test]
async fn locked_items_answer_423() {
    let (g, api) = business().await;
    let d = g.drive();
    let id = d.put_file("/doc.docx", &b"v1"[..]).unwrap();
    g.faults().lock_item("/doc.docx").unwrap();
    let r = api.put("/me/drive/root:/doc.docx:/content", b"v2").await;
    assert_eq!(r.status, 423);
    assert_eq!(r.code(), "accessDenied");
    assert_eq!(r.inner_codes()[0], "resourceLocked");
    assert_eq!(
        api.json(
            Method::PATCH,
            &format!("/me/drive/items/{id}"),
            &json!({ "name": "x.docx" })
        )
        .await
        .status,
        423
    );
    assert_eq!(api.delete(&format!("/me/drive/items/{id}")).await.status, 423);
    let r = api
        .json(
            Method::POST,
            &format!("/me/drive/items/{id}/createUploadSession"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 423);
    // Reads still work.
    assert_eq!(api.get(&format!("/me/drive/items/{id}")).await.status, 200);
    g.faults().unlock_item("/doc.docx").unwrap();
    assert_eq!(api.put("/me/drive/root:/doc.docx:/content", b"v2").await.status, 200);
}

#[tokio::test]
async fn quota_507() {
    let (g, api) = business().await;
    g.faults().quota_exceeded(true);
    let drive = api.get_ok("/me/drive").await;
    assert_eq!(drive["quota"]["state"], "exceeded");
    let r = api.put("/me/drive/root:/a.txt:/content", b"a").await;
    assert_eq!((r.status, r.code().as_str()), (507, "quotaLimitReached"));
    let r = api
        .json(
            Method::POST,
            "/me/drive/root/children",
            &json!({ "name": "d", "folder": {} }),
        )
        .await;
    assert_eq!(r.status, 507);
    let r = api
        .json(
            Method::POST,
            "/me/drive/root:/big.bin:/createUploadSession",
            &json!({ "item": { "fileSize": 10 } }),
        )
        .await;
    assert_eq!(r.status, 507);
    g.faults().quota_exceeded(false);
    assert_eq!(api.put("/me/drive/root:/a.txt:/content", b"a").await.status, 201);

    // A real (small) quota: 1000 bytes.
    let mut cfg = FakeGraphConfig::for_flavour(Flavour::Personal);
    cfg.quota_total = 1000;
    let (g, api) = start(cfg).await;
    assert_eq!(api.put("/me/drive/root:/a.bin:/content", &[0u8; 950]).await.status, 201);
    let q = api.get_ok("/me/drive").await["quota"].clone();
    assert_eq!(
        (q["used"].as_u64(), q["remaining"].as_u64(), q["state"].as_str()),
        (Some(950), Some(50), Some("nearing"))
    );
    assert_eq!(api.put("/me/drive/root:/b.bin:/content", &[0u8; 200]).await.status, 507);
    // Shrinking a file is always fine; the freed space is usable.
    assert_eq!(api.put("/me/drive/root:/a.bin:/content", &[0u8; 100]).await.status, 200);
    assert_eq!(api.put("/me/drive/root:/b.bin:/content", &[0u8; 200]).await.status, 201);
    assert_eq!(g.drive().used_bytes(), 300);
}

#[test]
fn spawned_server_works_from_sync_code() {
    let g = FakeGraph::spawn(FakeGraphConfig::default()).unwrap();
    g.drive().put_file("/sync.txt", &b"sync"[..]).unwrap();
    let (token, _) = g.issue_tokens();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = rt.block_on(async {
        http()
            .get(format!("{}/me/drive/root:/sync.txt:/content", g.graph_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .headers()["location"]
            .to_str()
            .unwrap()
            .to_string()
    });
    assert!(body.contains("/_dl/"));
    let stats = g.stats();
    assert_eq!(stats.count(RouteClass::Content), 1);
    assert_eq!(stats.recent.last().unwrap().status, 302);
    assert!(stats.recent.last().unwrap().authorization);
}

#[tokio::test]
async fn download_urls_can_be_left_out_of_selected_responses() {
    let (g, api) = business().await;
    g.drive().put_file("/a.txt", &b"abc"[..]).unwrap();
    let sel = "$select=id,name,@microsoft.graph.downloadUrl";
    let dl = "@microsoft.graph.downloadUrl";
    assert!(api.get_ok(&format!("/me/drive/root:/a.txt?{sel}")).await[dl].is_string());
    g.faults().omit_selected_download_urls(true);
    let item = api.get_ok(&format!("/me/drive/root:/a.txt?{sel}")).await;
    assert!(item.get(dl).is_none(), "{item}");
    assert_eq!(item["name"], "a.txt");
    let kids = api.get_ok(&format!("/me/drive/root/children?{sel}")).await;
    assert!(kids["value"][0].get(dl).is_none(), "{kids}");
    // Without $select the URL is still there.
    assert!(api.get_ok("/me/drive/root:/a.txt").await[dl].is_string());
    g.faults().clear();
    assert!(api.get_ok(&format!("/me/drive/root:/a.txt?{sel}")).await[dl].is_string());
}

/// `before_next` runs its hook once, when the next request of its class arrives and before it is
/// handled (and before a fault injected for it): another device's change at an exact moment.
#[tokio::test]
async fn a_hook_runs_before_the_next_request_of_its_class() {
    let (g, api) = business().await;
    let id = g.drive().put_file("/c.txt", &b"ours"[..]).unwrap();
    let etag = g.drive().etag("/c.txt").unwrap();
    let other = g.drive();
    g.faults().before_next(RouteClass::Write, move || {
        other.put_file("/c.txt", &b"theirs"[..]).unwrap();
    });
    assert_eq!(
        api.get_ok("/me/drive/root:/c.txt").await["size"],
        4,
        "reads do not run it"
    );
    let patch = json!({ "fileSystemInfo": { "lastModifiedDateTime": "2020-01-01T00:00:00Z" } });
    let r = api
        .send(
            Method::PATCH,
            &format!("/me/drive/items/{id}"),
            Some(patch.to_string().into_bytes()),
            &[("Content-Type", "application/json"), ("If-Match", etag.as_str())],
        )
        .await;
    assert_eq!(r.status, 412, "the hook's change landed before the PATCH: {r:?}");
    assert_eq!(&g.drive().file_bytes("/c.txt").unwrap()[..], b"theirs");
    let etag = g.drive().etag("/c.txt").unwrap();
    let r = api
        .send(
            Method::PATCH,
            &format!("/me/drive/items/{id}"),
            Some(patch.to_string().into_bytes()),
            &[("Content-Type", "application/json"), ("If-Match", etag.as_str())],
        )
        .await;
    assert_eq!(r.status, 200, "it ran once: {r:?}");
}
