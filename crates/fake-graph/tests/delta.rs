//! Delta: initial enumeration, paging, deltaLink, incremental changes from out-of-band edits, token
//! semantics, 410 resync, flavour differences.

mod common;

use common::*;
use fake_graph::{FakeGraphConfig, Flavour};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Runs one delta round from `start`; returns (items, pages, deltaLink).
async fn round(api: &Api, start: &str) -> (Vec<Value>, usize, String) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut url = start.to_string();
    loop {
        let v = api.get_ok(&url).await;
        pages += 1;
        assert!(pages < 1000, "delta round never ends");
        items.extend(v["value"].as_array().unwrap().iter().cloned());
        match (v["@odata.nextLink"].as_str(), v["@odata.deltaLink"].as_str()) {
            (Some(n), None) => url = n.to_string(),
            (None, Some(d)) => return (items, pages, d.to_string()),
            other => panic!("exactly one of nextLink/deltaLink expected: {other:?}"),
        }
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn initial_enumeration_is_paged_and_parents_first() {
    let (g, api) = business().await;
    let d = g.drive();
    for i in 0..30 {
        for j in 0..10 {
            d.put_file(&format!("/dir{i:02}/sub/f{j}.txt"), vec![b'x'; j]).unwrap();
        }
    }
    // 1 root + 30 dirs + 30 subs + 300 files = 361 items.
    let (items, pages, link) = round(&api, "/me/drive/root/delta?$top=100").await;
    assert_eq!(items.len(), 361);
    assert_eq!(pages, 4);
    assert!(link.starts_with(&g.graph_url()) && link.contains("token="), "{link}");
    assert_eq!(items[0]["root"], json!({}), "the root comes first");
    let mut seen = HashSet::new();
    for it in &items {
        if let Some(p) = it["parentReference"]["id"].as_str() {
            assert!(seen.contains(p), "parent {p} of {} not seen before it", it["name"]);
            assert!(it["parentReference"].get("path").is_none(), "delta never returns path");
        }
        assert!(it.get("cTag").is_none(), "business delta omits cTag");
        seen.insert(it["id"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 361);
    // Default page size is 200; pages honour $top up to 1000.
    let (_, pages, _) = round(&api, "/me/drive/root/delta").await;
    assert_eq!(pages, 2);
    let (_, pages, _) = round(&api, "/me/drive/root/delta?$top=5000").await;
    assert_eq!(pages, 1);
    // $select carries over into nextLinks.
    let first = api.get_ok("/me/drive/root/delta?$top=100&$select=id,name").await;
    assert!(first["@odata.nextLink"].as_str().unwrap().contains("select"));
    assert_eq!(first["value"][1].as_object().unwrap().len(), 2);
    // Nothing changed → one empty page with a deltaLink.
    let v = api.get_ok(&link).await;
    assert_eq!(v["value"], json!([]));
    assert!(v["@odata.deltaLink"].is_string());
}

#[tokio::test]
async fn incremental_changes_from_another_device() {
    let (g, api) = business().await;
    let d = g.drive();
    let keep = d.put_file("/keep/unchanged.txt", &b"k"[..]).unwrap();
    let modify = d.put_file("/work/modify.txt", &b"1"[..]).unwrap();
    let rename = d.put_file("/work/rename.txt", &b"r"[..]).unwrap();
    let doomed_dir = d.mkdir("/work/doomed").unwrap();
    let doomed_file = d.put_file("/work/doomed/inside.txt", &b"i"[..]).unwrap();
    let (_, _, link) = round(&api, "/me/drive/root/delta").await;

    d.put_file("/work/modify.txt", &b"22"[..]).unwrap();
    d.rename("/work/rename.txt", "/keep/renamed twice.txt").unwrap();
    d.rename("/keep/renamed twice.txt", "/keep/renamed.txt").unwrap();
    let created = d.put_file("/new/deep/created.txt", &b"new"[..]).unwrap();
    d.remove("/work/doomed").unwrap();

    let (items, _, link2) = round(&api, &link).await;
    let by_id: HashMap<String, &Value> = items
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_string(), i))
        .collect();
    assert_eq!(by_id.len(), items.len(), "each item once per round");
    // Changed items with their latest state.
    assert_eq!(by_id[&modify]["size"], 2);
    assert_eq!(by_id[&rename]["name"], "renamed.txt");
    assert_eq!(
        by_id[&rename]["parentReference"]["id"],
        d.item_id("/keep").unwrap().as_str()
    );
    assert_eq!(by_id[&created]["name"], "created.txt");
    assert!(by_id[&created]["file"]["hashes"]["quickXorHash"].is_string());
    // Ancestors of changed items are included (business style, A14); untouched siblings are not.
    for p in ["/", "/work", "/keep", "/new", "/new/deep"] {
        assert!(by_id.contains_key(&d.item_id(p).unwrap()), "ancestor {p} missing");
    }
    assert!(!by_id.contains_key(&keep));
    // Deletions carry `deleted`, come last, and on business have no name.
    for gone in [&doomed_dir, &doomed_file] {
        let it = by_id[gone];
        assert_eq!(it["deleted"]["state"], "deleted");
        assert!(it.get("name").is_none());
        assert!(it.get("cTag").is_none());
    }
    let first_deleted = items.iter().position(|i| i.get("deleted").is_some()).unwrap();
    assert!(items[first_deleted..].iter().all(|i| i.get("deleted").is_some()));
    // Parents before children in the live part.
    let pos: HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(i, v)| (v["id"].as_str().unwrap(), i))
        .collect();
    for it in &items[..first_deleted] {
        if let Some(p) = it["parentReference"]["id"].as_str() {
            if let Some(pp) = pos.get(p) {
                assert!(*pp < pos[it["id"].as_str().unwrap()]);
            }
        }
    }
    // Next round: nothing.
    let (items, _, _) = round(&api, &link2).await;
    assert!(items.is_empty(), "{items:?}");
}

#[tokio::test]
async fn api_changes_also_feed_delta() {
    let (_g, api) = business().await;
    let (_, _, link) = round(&api, "/me/drive/root/delta").await;
    let r = api.put("/me/drive/root:/via-api.txt:/content", b"x").await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = api
        .json(
            Method::POST,
            "/me/drive/root/children",
            &json!({ "name": "folder", "folder": {} }),
        )
        .await;
    let folder = r.json()["id"].as_str().unwrap().to_string();
    let (items, _, link) = round(&api, &link).await;
    let got: HashSet<String> = ids(&items).into_iter().collect();
    assert!(got.contains(&id) && got.contains(&folder));
    api.json(
        Method::PATCH,
        &format!("/me/drive/items/{id}"),
        &json!({ "parentReference": { "id": folder } }),
    )
    .await;
    let (items, _, _) = round(&api, &link).await;
    let moved = items.iter().find(|i| i["id"] == id.as_str()).unwrap();
    assert_eq!(moved["parentReference"]["id"], folder.as_str());
}

#[tokio::test]
async fn delta_tokens_are_reusable_and_latest_skips_history() {
    let (g, api) = business().await;
    let d = g.drive();
    d.put_file("/old.txt", &b"o"[..]).unwrap();
    let latest = api.get_ok("/me/drive/root/delta?token=latest").await;
    assert_eq!(latest["value"], json!([]));
    assert!(latest.get("@odata.nextLink").is_none());
    let t0 = latest["@odata.deltaLink"].as_str().unwrap().to_string();
    let a = d.put_file("/a.txt", &b"a"[..]).unwrap();
    let (items, _, t1) = round(&api, &t0).await;
    let got = ids(&items);
    assert!(got.contains(&a));
    assert!(
        !got.contains(&d.item_id("/old.txt").unwrap()),
        "history before token=latest is not replayed"
    );
    // The same deltaLink can be used again (a client that crashed before saving the new one).
    let (again, _, _) = round(&api, &t0).await;
    assert_eq!(ids(&again), got);
    let b = d.put_file("/b.txt", &b"b"[..]).unwrap();
    let (from_t1, _, _) = round(&api, &t1).await;
    assert!(ids(&from_t1).contains(&b) && !ids(&from_t1).contains(&a));
    let (from_t0, _, _) = round(&api, &t0).await;
    assert!(ids(&from_t0).contains(&b) && ids(&from_t0).contains(&a));
    // A malformed token is a client bug → 400.
    let r = api.get("/me/drive/root/delta?token=garbage!!").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn resync_410_variants() {
    let (g, api) = business().await;
    let d = g.drive();
    d.put_file("/x.txt", &b"x"[..]).unwrap();
    let (_, _, link) = round(&api, "/me/drive/root/delta").await;
    // Injected: the next token-bearing request answers 410 with Location to a fresh enumeration.
    g.faults().delta_resync_next();
    let r = api.get(&link).await;
    assert_eq!(r.status, 410, "{r:?}");
    assert_eq!(r.code(), "resyncRequired");
    assert_eq!(r.inner_codes()[0], "resyncChangesApplyDifferences");
    let loc = r.header("location").unwrap();
    let (items, _, fresh) = round(&api, &loc).await;
    assert_eq!(items.len(), 2, "a full enumeration: root + x.txt");
    // The fault is consumed: the old link works again.
    assert_eq!(api.get(&link).await.status, 200);
    // Invalidating all tokens; configurable inner code.
    g.faults().set_resync_inner_code("resyncChangesUploadDifferences");
    g.faults().invalidate_delta_tokens();
    for l in [&link, &fresh] {
        let r = api.get(l).await;
        assert_eq!(r.status, 410);
        assert_eq!(r.inner_codes()[0], "resyncChangesUploadDifferences");
    }
    // A nextLink of a round dies too.
    for i in 0..5 {
        d.put_file(&format!("/f{i}.txt"), &b"f"[..]).unwrap();
    }
    let page = api.get_ok("/me/drive/root/delta?$top=2").await;
    let next = page["@odata.nextLink"].as_str().unwrap().to_string();
    g.faults().invalidate_delta_tokens();
    assert_eq!(api.get(&next).await.status, 410);
    // Initial enumeration is never resynced.
    g.faults().delta_resync_next();
    assert_eq!(api.get("/me/drive/root/delta").await.status, 200);
}

#[tokio::test]
async fn later_pages_fail_on_request() {
    let (g, api) = business().await;
    let d = g.drive();
    for i in 0..5 {
        d.put_file(&format!("/f{i}.txt"), &b"f"[..]).unwrap();
    }
    g.faults().fail_next_delta_pages(2, 503);
    // A round of one page is not hit.
    assert!(api.get_ok("/me/drive/root/delta?$top=100").await["@odata.deltaLink"].is_string());
    let page = api.get_ok("/me/drive/root/delta?$top=2").await;
    let next = page["@odata.nextLink"].as_str().unwrap().to_string();
    assert_eq!(api.get(&next).await.status, 503);
    assert_eq!(api.get(&next).await.status, 503);
    assert_eq!(g.stats().injected_failures, 2);
    // Used up: the same page is served now.
    assert_eq!(api.get(&next).await.status, 200);
    g.faults().fail_next_delta_pages(u32::MAX, 500);
    assert_eq!(api.get(&next).await.status, 500);
    g.faults().clear();
    assert_eq!(api.get(&next).await.status, 200);
}

#[tokio::test]
async fn tokens_expire_by_age() {
    let mut cfg = FakeGraphConfig::for_flavour(Flavour::Business);
    cfg.delta_token_max_age = Some(Duration::from_secs(2));
    let (_g, api) = start(cfg).await;
    let (_, _, link) = round(&api, "/me/drive/root/delta").await;
    assert_eq!(api.get(&link).await.status, 200);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(api.get(&link).await.status, 410);
}

#[tokio::test]
async fn timestamp_tokens_on_business() {
    let (g, api) = business().await;
    let d = g.drive();
    let before = d.put_file("/before.txt", &b"b"[..]).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let now = std::time::SystemTime::now();
    let secs = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = d.put_file("/after.txt", &b"a"[..]).unwrap();
    // Format the timestamp like a client would.
    let token = {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // civil_from_days for the test's own formatting
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
        format!(
            "{y:04}-{m:02}-{day:02}T{:02}%3A{:02}%3A{:02}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    };
    let (items, _, _) = round(&api, &format!("/me/drive/root/delta?token={token}")).await;
    let got = ids(&items);
    assert!(got.contains(&after), "{got:?}");
    assert!(!got.contains(&before));
}

#[tokio::test]
async fn folder_delta_is_personal_only() {
    let (g, api) = business().await;
    g.drive().mkdir("/sub").unwrap();
    let r = api.get("/me/drive/root:/sub:/delta").await;
    assert_eq!((r.status, r.code().as_str()), (400, "notSupported"));
    assert_eq!(
        r.json()["error"]["message"],
        "view.delta can only be called on the root."
    );

    let (g, api) = personal().await;
    let d = g.drive();
    d.put_file("/sub/in.txt", &b"i"[..]).unwrap();
    d.put_file("/other/out.txt", &b"o"[..]).unwrap();
    let (items, _, link) = round(&api, "/me/drive/root:/sub:/delta").await;
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["sub", "in.txt"]);
    assert!(items[1]["cTag"].is_string(), "personal delta keeps cTag");
    d.put_file("/other/out2.txt", &b"o"[..]).unwrap();
    d.remove("/sub/in.txt").unwrap();
    let (items, _, _) = round(&api, &link).await;
    let del = items
        .iter()
        .find(|i| i.get("deleted").is_some())
        .expect("delete record");
    assert_eq!(del["name"], "in.txt", "personal delete records keep the name");
    assert!(del.get("size").is_none() && del.get("cTag").is_none());
    assert!(
        items.iter().all(|i| i["name"] != "out2.txt"),
        "changes outside the folder are not reported"
    );
    // Whole-drive delta on personal works as well.
    let (items, _, _) = round(&api, "/me/drive/root/delta").await;
    assert_eq!(items.len(), 5, "root, sub, other, out.txt, out2.txt");
}
