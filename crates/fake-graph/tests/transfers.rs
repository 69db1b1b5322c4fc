//! Downloads (downloadUrl, Range, expiry, /content) and uploads (upload sessions) over real HTTP.

mod common;

use common::*;
use fake_graph::quickxorhash::quick_xor_hash;
use fake_graph::{FakeGraphConfig, Flavour, RouteClass, FRAGMENT_ALIGN};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

async fn download_url(api: &Api, path: &str) -> String {
    api.get_ok(path).await["@microsoft.graph.downloadUrl"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn download_url_ranges_and_no_bearer() {
    let (g, api) = business().await;
    let data = pattern(100_000, 7);
    g.drive().put_file("/f.bin", data.clone()).unwrap();
    g.drive().put_file("/empty.bin", Vec::new()).unwrap();
    let url = download_url(&api, "/me/drive/root:/f.bin").await;
    let anon = anon(&api);
    let r = anon.get(&url).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], &data[..]);
    assert_eq!(r.header("accept-ranges").unwrap(), "bytes");
    assert_eq!(r.header("content-length").unwrap(), "100000");
    assert!(r.header("etag").is_some());
    // Range forms.
    let cases: &[(&str, usize, usize)] = &[
        ("bytes=0-1023", 0, 1023),
        ("bytes=99990-", 99_990, 99_999),
        ("bytes=-10", 99_990, 99_999),
        ("bytes=50000-200000", 50_000, 99_999),
    ];
    for (h, a, b) in cases {
        let r = anon.send(Method::GET, &url, None, &[("Range", h)]).await;
        assert_eq!(r.status, 206, "{h}");
        assert_eq!(r.header("content-range").unwrap(), format!("bytes {a}-{b}/100000"));
        assert_eq!(&r.body[..], &data[*a..=*b]);
    }
    // Unsatisfiable → 416 + Content-Range: bytes */N + invalidRange (A6).
    let r = anon.send(Method::GET, &url, None, &[("Range", "bytes=100000-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range").unwrap(), "bytes */100000");
    assert_eq!(r.code(), "invalidRange");
    let empty_url = download_url(&api, "/me/drive/root:/empty.bin").await;
    let r = anon.send(Method::GET, &empty_url, None, &[("Range", "bytes=0-")]).await;
    assert_eq!(
        (r.status, r.header("content-range").unwrap().as_str()),
        (416, "bytes */0")
    );
    assert_eq!(anon.get(&empty_url).await.status, 200);
    // A bearer header is ignored by the download host.
    let r = api.send(Method::GET, &url, None, &[("Range", "bytes=0-0")]).await;
    assert_eq!(r.status, 206);
    // Bytes actually served are counted.
    let s = g.stats();
    assert!(
        s.download_bytes > 100_000 + 1024 + 10 + 10 + 50_000,
        "{}",
        s.download_bytes
    );
    assert!(s.download_bytes < 400_000, "{}", s.download_bytes);
    assert_eq!(s.count(RouteClass::Download), 9);
    assert_eq!(
        s.recent_of(RouteClass::Download)[1].range.as_deref(),
        Some("bytes=0-1023")
    );
}

#[tokio::test]
async fn content_redirects_and_folder_content_fails() {
    let (g, api) = business().await;
    g.drive().put_file("/dir/f.txt", &b"hello"[..]).unwrap();
    let r = api.get("/me/drive/root:/dir/f.txt:/content").await;
    assert_eq!(r.status, 302);
    let loc = r.header("location").unwrap();
    assert!(loc.starts_with(&g.base_url()) && loc.contains("/_dl/"), "{loc}");
    assert_eq!(&anon(&api).get(&loc).await.body[..], b"hello");
    let etag = g.drive().etag("/dir/f.txt").unwrap();
    let r = api
        .send(
            Method::GET,
            "/me/drive/root:/dir/f.txt:/content",
            None,
            &[("If-None-Match", &etag)],
        )
        .await;
    assert_eq!(r.status, 304);
    let r = api.get("/me/drive/root:/dir:/content").await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalidRequest"));
    // Following the redirect with a normal client works too.
    let follow = reqwest::Client::builder().no_proxy().build().unwrap();
    let body = follow
        .get(format!("{}/me/drive/root:/dir/f.txt:/content", g.graph_url()))
        .bearer_auth(api.token.as_ref().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body[..], b"hello");
}

#[tokio::test]
async fn download_urls_expire_and_are_bound_to_a_version() {
    let mut cfg = FakeGraphConfig::for_flavour(Flavour::Business);
    cfg.download_url_ttl = Duration::from_secs(2);
    let (g, api) = start(cfg).await;
    g.drive().put_file("/f.txt", &b"version one"[..]).unwrap();
    let url = download_url(&api, "/me/drive/root:/f.txt").await;
    // Content changes after issue: the URL still serves the old version until it expires.
    g.drive().put_file("/f.txt", &b"version two"[..]).unwrap();
    assert_eq!(&anon(&api).get(&url).await.body[..], b"version one");
    let fresh = download_url(&api, "/me/drive/root:/f.txt").await;
    assert_ne!(fresh, url);
    assert_eq!(&anon(&api).get(&fresh).await.body[..], b"version two");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let r = anon(&api).get(&url).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "unauthenticated");
    assert_eq!(r.inner_codes()[0], "expiredToken");
    // Re-reading the item gives a working URL.
    let again = download_url(&api, "/me/drive/root:/f.txt").await;
    assert_eq!(anon(&api).get(&again).await.status, 200);
    // Knob: expire everything now.
    g.faults().expire_download_urls();
    assert_eq!(anon(&api).get(&again).await.status, 401);
    let newest = download_url(&api, "/me/drive/root:/f.txt").await;
    assert_eq!(anon(&api).get(&newest).await.status, 200);
}

#[tokio::test]
async fn truncated_download_breaks_the_connection() {
    let (g, api) = business().await;
    g.drive().put_file("/f.bin", pattern(2_000_000, 1)).unwrap();
    let url = download_url(&api, "/me/drive/root:/f.bin").await;
    g.faults().truncate_next_downloads(1, 1000);
    let res = http().get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.is_err(), "body must end early");
    let ok = anon(&api).get(&url).await;
    assert_eq!(ok.body.len(), 2_000_000);
}

async fn create_session(api: &Api, path: &str, item: Value) -> (u16, Value) {
    let r = api.json(Method::POST, path, &json!({ "item": item })).await;
    let v = if r.body.is_empty() { Value::Null } else { r.json() };
    (r.status, v)
}

async fn put_fragment(api: &Api, url: &str, data: &[u8], start: usize, total: usize) -> Resp {
    let range = format!("bytes {}-{}/{}", start, start + data.len() - 1, total);
    anon(api)
        .send(Method::PUT, url, Some(data.to_vec()), &[("Content-Range", &range)])
        .await
}

#[tokio::test]
async fn upload_session_happy_path_and_resume() {
    let (g, api) = business().await;
    let a = FRAGMENT_ALIGN as usize;
    let total = 3 * a + 12_345;
    let data = pattern(total, 3);
    let mtime = "2021-05-06T07:08:09Z";
    let (status, s) = create_session(
        &api,
        "/me/drive/root:/big.bin:/createUploadSession",
        json!({ "@microsoft.graph.conflictBehavior": "fail", "name": "big.bin", "fileSize": total, "fileSystemInfo": { "lastModifiedDateTime": mtime } }),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["nextExpectedRanges"], json!(["0-"]));
    assert!(s["expirationDateTime"].is_string());
    let url = s["uploadUrl"].as_str().unwrap().to_string();
    assert!(url.starts_with(&g.base_url()));
    let r = put_fragment(&api, &url, &data[..2 * a], 0, total).await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json()["nextExpectedRanges"], json!([format!("{}-", 2 * a)]));
    // Resume: ask the session where to continue.
    let st = anon(&api).get(&url).await;
    assert_eq!(st.status, 200);
    assert_eq!(st.json()["nextExpectedRanges"], json!([format!("{}-", 2 * a)]));
    let r = put_fragment(&api, &url, &data[2 * a..3 * a], 2 * a, total).await;
    assert_eq!(r.status, 202);
    assert!(
        !g.drive().exists("/big.bin"),
        "nothing is committed before the last byte"
    );
    let r = put_fragment(&api, &url, &data[3 * a..], 3 * a, total).await;
    assert_eq!(r.status, 201, "{r:?}");
    let item = r.json();
    assert_eq!(item["name"], "big.bin");
    assert_eq!(item["size"], total);
    assert_eq!(item["file"]["hashes"]["quickXorHash"], quick_xor_hash(&data));
    assert_eq!(item["fileSystemInfo"]["lastModifiedDateTime"], mtime);
    assert_eq!(&g.drive().file_bytes("/big.bin").unwrap()[..], &data[..]);
    // The session is gone after commit.
    let r = anon(&api).get(&url).await;
    assert_eq!((r.status, r.inner_codes()[0].as_str()), (404, "uploadSessionNotFound"));
    // No Authorization header was sent to the upload URL.
    let st = g.stats();
    assert_eq!(st.upload_url_requests_with_authorization, 0);
    assert!(st.last_upload_url_headers.iter().all(|(k, _)| k != "authorization"));
    assert!(
        st.last_upload_url_headers.iter().any(|(k, _)| k == "content-range") || st.count(RouteClass::UploadUrl) > 0
    );

    // Overwrite by id → 200, same id.
    let id = item["id"].as_str().unwrap();
    let (status, s) = create_session(
        &api,
        &format!("/me/drive/items/{id}/createUploadSession"),
        json!({ "@microsoft.graph.conflictBehavior": "replace" }),
    )
    .await;
    assert_eq!(status, 200);
    let url = s["uploadUrl"].as_str().unwrap();
    let r = put_fragment(&api, url, b"tiny", 0, 4).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["id"], id);
    assert_eq!(&g.drive().file_bytes("/big.bin").unwrap()[..], b"tiny");
}

#[tokio::test]
async fn upload_session_fragment_rules() {
    let (g, api) = business().await;
    let a = FRAGMENT_ALIGN as usize;
    let total = 2 * a + 10;
    let data = pattern(total, 9);
    let (_, s) = create_session(&api, "/me/drive/root:/f.bin:/createUploadSession", json!({})).await;
    let url = s["uploadUrl"].as_str().unwrap().to_string();
    // Misaligned non-final fragment → 400 (A8 strict).
    let r = put_fragment(&api, &url, &data[..1000], 0, total).await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalidRequest"));
    // Missing / malformed Content-Range → 400.
    let r = anon(&api).send(Method::PUT, &url, Some(data[..a].to_vec()), &[]).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("Content-Range"));
    let r = anon(&api)
        .send(
            Method::PUT,
            &url,
            Some(data[..a].to_vec()),
            &[("Content-Range", "bytes 0-10/*")],
        )
        .await;
    assert_eq!(r.status, 400);
    // Length mismatch → 400.
    let r = anon(&api)
        .send(
            Method::PUT,
            &url,
            Some(data[..a].to_vec()),
            &[("Content-Range", &format!("bytes 0-{}/{total}", a))],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not match"));
    // Authorization on the upload URL → 401 (A9 strict), counted.
    let r = api
        .send(
            Method::PUT,
            &url,
            Some(data[..a].to_vec()),
            &[("Content-Range", &format!("bytes 0-{}/{total}", a - 1))],
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"));
    assert_eq!(g.stats().upload_url_requests_with_authorization, 1);
    // Out of order (gap) → 416 fragmentOutOfOrder.
    let r = put_fragment(&api, &url, &data[a..2 * a], a, total).await;
    assert_eq!((r.status, r.code().as_str()), (416, "invalidRange"));
    assert_eq!(r.inner_codes()[0], "fragmentOutOfOrder");
    // First fragment OK, then an overlap → 416 fragmentOverlap; status says where to continue.
    assert_eq!(put_fragment(&api, &url, &data[..a], 0, total).await.status, 202);
    let r = put_fragment(&api, &url, &data[..a], 0, total).await;
    assert_eq!((r.status, r.inner_codes()[0].as_str()), (416, "fragmentOverlap"));
    let r = put_fragment(&api, &url, &data[a / 2..a + a / 2], a / 2, total).await;
    assert_eq!(r.inner_codes()[0], "fragmentOverlap");
    assert_eq!(
        anon(&api).get(&url).await.json()["nextExpectedRanges"],
        json!([format!("{a}-")])
    );
    // Total differs from the first fragment's → 400 fragmentLengthMismatch.
    let r = put_fragment(&api, &url, &data[a..2 * a], a, total + 1).await;
    assert_eq!((r.status, r.inner_codes()[0].as_str()), (400, "fragmentLengthMismatch"));
    // Fragment of 60 MiB or more → 413 before the body is read (A7).
    let path = url.trim_start_matches(&g.base_url()).to_string();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Range: bytes {a}-{}/{}\r\nContent-Length: 62914560\r\n\r\n",
        a + 62_914_560 - 1,
        200_000_000
    );
    assert_eq!(raw_status(&g.base_url(), &head).await, 413);
    // The rest is accepted; a final fragment needs no alignment.
    assert_eq!(put_fragment(&api, &url, &data[a..2 * a], a, total).await.status, 202);
    assert_eq!(put_fragment(&api, &url, &data[2 * a..], 2 * a, total).await.status, 201);
    assert_eq!(&g.drive().file_bytes("/f.bin").unwrap()[..], &data[..]);
}

#[tokio::test]
async fn upload_session_lenient_modes() {
    let mut cfg = FakeGraphConfig::for_flavour(Flavour::Business);
    cfg.strict_fragment_alignment = false;
    cfg.strict_upload_auth = false;
    let (g, api) = start(cfg).await;
    let data = pattern(5000, 1);
    let (_, s) = create_session(&api, "/me/drive/root:/f.bin:/createUploadSession", json!({})).await;
    let url = s["uploadUrl"].as_str().unwrap().to_string();
    // Misaligned fragment with an Authorization header: both tolerated.
    let r = api
        .send(
            Method::PUT,
            &url,
            Some(data[..1000].to_vec()),
            &[("Content-Range", "bytes 0-999/5000")],
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(put_fragment(&api, &url, &data[1000..], 1000, 5000).await.status, 201);
    assert_eq!(g.stats().upload_url_requests_with_authorization, 1);
}

#[tokio::test]
async fn upload_session_expiry_cancel_and_defer() {
    let mut cfg = FakeGraphConfig::for_flavour(Flavour::Business);
    cfg.upload_session_ttl = Duration::from_secs(3);
    let (g, api) = start(cfg).await;
    let a = FRAGMENT_ALIGN as usize;
    let data = pattern(4 * a, 5);
    let (_, s) = create_session(&api, "/me/drive/root:/f.bin:/createUploadSession", json!({})).await;
    let url = s["uploadUrl"].as_str().unwrap().to_string();
    // Each accepted fragment extends the lifetime (A10): t=0 and t=1.6 s, still alive at t=3.2 s.
    assert_eq!(put_fragment(&api, &url, &data[..a], 0, 4 * a).await.status, 202);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(put_fragment(&api, &url, &data[a..2 * a], a, 4 * a).await.status, 202);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        anon(&api).get(&url).await.status,
        200,
        "extended by the second fragment"
    );
    // A status GET does not extend it.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let r = anon(&api).get(&url).await;
    assert_eq!((r.status, r.code().as_str()), (404, "itemNotFound"));
    assert_eq!(r.inner_codes()[0], "uploadSessionNotFound");
    assert_eq!(
        put_fragment(&api, &url, &data[2 * a..3 * a], 2 * a, 4 * a).await.status,
        404
    );

    // Cancel.
    let (_, s) = create_session(&api, "/me/drive/root:/f.bin:/createUploadSession", json!({})).await;
    let url = s["uploadUrl"].as_str().unwrap().to_string();
    assert_eq!(anon(&api).delete(&url).await.status, 204);
    assert_eq!(anon(&api).get(&url).await.status, 404);
    assert_eq!(put_fragment(&api, &url, &data[..a], 0, 2 * a).await.status, 404);

    // Knob: expire every session now.
    let (_, s) = create_session(&api, "/me/drive/root:/g.bin:/createUploadSession", json!({})).await;
    g.faults().expire_upload_sessions();
    assert_eq!(anon(&api).get(s["uploadUrl"].as_str().unwrap()).await.status, 404);

    // deferCommit: the last byte answers 202; POST commits.
    let r = api
        .json(
            Method::POST,
            "/me/drive/root:/d.bin:/createUploadSession",
            &json!({ "item": {}, "deferCommit": true }),
        )
        .await;
    let url = r.json()["uploadUrl"].as_str().unwrap().to_string();
    let r = put_fragment(&api, &url, b"deferred", 0, 8).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["nextExpectedRanges"], json!([]));
    assert!(!g.drive().exists("/d.bin"));
    let r = anon(&api).send(Method::POST, &url, Some(Vec::new()), &[]).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(&g.drive().file_bytes("/d.bin").unwrap()[..], b"deferred");
}

#[tokio::test]
async fn upload_session_conflicts_quota_and_zero_bytes() {
    let mut cfg = FakeGraphConfig::for_flavour(Flavour::Business);
    cfg.quota_total = 10 << 20;
    let (g, api) = start(cfg).await;
    g.drive().put_file("/exists.txt", &b"x"[..]).unwrap();
    // Default conflictBehavior for sessions is fail (A4) → 409 at creation.
    let (status, v) = create_session(&api, "/me/drive/root:/exists.txt:/createUploadSession", json!({})).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "nameAlreadyExists");
    // Name in the body must match the URL.
    let (status, _) = create_session(
        &api,
        "/me/drive/root:/a.txt:/createUploadSession",
        json!({ "name": "b.txt" }),
    )
    .await;
    assert_eq!(status, 400);
    // Parent must exist.
    let (status, _) = create_session(&api, "/me/drive/root:/no/a.txt:/createUploadSession", json!({})).await;
    assert_eq!(status, 404);
    // If-Match mismatch → 412.
    let r = api
        .send(
            Method::POST,
            "/me/drive/root:/exists.txt:/createUploadSession",
            Some(br#"{"item":{"@microsoft.graph.conflictBehavior":"replace"}}"#.to_vec()),
            &[("If-Match", "\"stale\""), ("Content-Type", "application/json")],
        )
        .await;
    assert_eq!(r.status, 412);
    // Name taken meanwhile → 409 at commit; the session survives and can be retried after the conflict is gone.
    let (_, s) = create_session(
        &api,
        "/me/drive/root:/late.txt:/createUploadSession",
        json!({ "@microsoft.graph.conflictBehavior": "fail" }),
    )
    .await;
    let url = s["uploadUrl"].as_str().unwrap().to_string();
    g.drive().put_file("/late.txt", &b"other device"[..]).unwrap();
    let r = put_fragment(&api, &url, b"mine", 0, 4).await;
    assert_eq!((r.status, r.code().as_str()), (409, "nameAlreadyExists"));
    assert_eq!(anon(&api).get(&url).await.status, 200);
    g.drive().remove("/late.txt").unwrap();
    let r = anon(&api).send(Method::POST, &url, Some(Vec::new()), &[]).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(&g.drive().file_bytes("/late.txt").unwrap()[..], b"mine");
    // rename at commit.
    let (_, s) = create_session(
        &api,
        "/me/drive/root:/exists.txt:/createUploadSession",
        json!({ "@microsoft.graph.conflictBehavior": "rename" }),
    )
    .await;
    let r = put_fragment(&api, s["uploadUrl"].as_str().unwrap(), b"r", 0, 1).await;
    assert_eq!(r.json()["name"], "exists 1.txt");
    // Quota: declared fileSize over the remaining quota → 507, no session.
    let (status, v) = create_session(
        &api,
        "/me/drive/root:/huge.bin:/createUploadSession",
        json!({ "fileSize": 20 << 20 }),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str().unwrap()),
        (507, "quotaLimitReached")
    );
    // Over the 250 GB file size limit.
    let (status, v) = create_session(
        &api,
        "/me/drive/root:/huge.bin:/createUploadSession",
        json!({ "fileSize": 2u64 << 40 }),
    )
    .await;
    assert_eq!(
        (status, v["error"]["innerError"]["code"].as_str().unwrap()),
        (400, "maxFileSizeExceeded")
    );
    // Zero bytes: the session can be created, but no fragment can carry 0 bytes (A11).
    let (status, s) = create_session(
        &api,
        "/me/drive/root:/zero.bin:/createUploadSession",
        json!({ "fileSize": 0 }),
    )
    .await;
    assert_eq!(status, 200);
    let url = s["uploadUrl"].as_str().unwrap();
    for cr in ["bytes 0-0/0", "bytes 0--1/0"] {
        let r = anon(&api)
            .send(Method::PUT, url, Some(Vec::new()), &[("Content-Range", cr)])
            .await;
        assert_eq!(r.status, 400, "{cr}");
    }
}

#[tokio::test]
async fn upload_fragment_lost_response_then_overlap() {
    let (g, api) = business().await;
    let a = FRAGMENT_ALIGN as usize;
    let data = pattern(2 * a + 1, 2);
    let (_, s) = create_session(&api, "/me/drive/root:/f.bin:/createUploadSession", json!({})).await;
    let url = s["uploadUrl"].as_str().unwrap().to_string();
    g.faults().fail_next_upload_after_accept(1);
    let r = put_fragment(&api, &url, &data[..a], 0, data.len()).await;
    assert_eq!(r.status, 500);
    // The retry overlaps data the server kept; the client asks for the status and continues.
    let r = put_fragment(&api, &url, &data[..a], 0, data.len()).await;
    assert_eq!(r.inner_codes()[0], "fragmentOverlap");
    let next = anon(&api).get(&url).await.json()["nextExpectedRanges"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(next, format!("{a}-"));
    assert_eq!(put_fragment(&api, &url, &data[a..], a, data.len()).await.status, 201);
    assert_eq!(g.stats().injected_failures, 1);
}

#[tokio::test]
async fn hashes_match_the_reference_vectors() {
    let (g, api) = personal().await;
    let mib: Vec<u8> = (0..1024 * 1024).map(|k| (k % 256) as u8).collect();
    let r = api.put("/me/drive/root:/mib.bin:/content", &mib).await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json()["file"]["hashes"]["quickXorHash"],
        "QkGEfSisZcA7k+FCh7x72dbCayY="
    );
    let fox = b"The quick brown fox jumps over the lazy dog";
    g.drive().put_file("/fox.txt", &fox[..]).unwrap();
    let v = api.get_ok("/me/drive/root:/fox.txt").await;
    assert_eq!(v["file"]["hashes"]["quickXorHash"], "bMSlbysmxJL6S75XwfMcQZOpcr4=");
    assert_eq!(
        v["file"]["hashes"]["sha1Hash"],
        "2FD4E1C67A2D28FCED849EE1BB76E7391B93EB12"
    );
    // Upload session hashing is incremental and equal to one-shot hashing.
    let a = FRAGMENT_ALIGN as usize;
    let data = pattern(3 * a + 77, 4);
    let (_, s) = create_session(&api, "/me/drive/root:/s.bin:/createUploadSession", json!({})).await;
    let url = s["uploadUrl"].as_str().unwrap().to_string();
    let mut off = 0;
    for chunk in data.chunks(a) {
        put_fragment(&api, &url, chunk, off, data.len()).await;
        off += chunk.len();
    }
    let v = api.get_ok("/me/drive/root:/s.bin").await;
    assert_eq!(v["file"]["hashes"]["quickXorHash"], quick_xor_hash(&data));
    assert_eq!(v["file"]["hashes"]["sha256Hash"].as_str().unwrap().len(), 64);
}
