//! Drive/site resolution, item addressing, driveItem shape, children paging, simple PUT, folders,
//! rename/move, delete, copy — over real HTTP.

mod common;

use common::*;
use fake_graph::{FakeGraphConfig, Flavour};
use reqwest::Method;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test]
async fn drive_and_site_resolution_business() {
    let (g, api) = business().await;
    let me = api.get_ok("/me").await;
    let upn = me["userPrincipalName"].as_str().unwrap().to_string();
    let drive = api.get_ok("/me/drive").await;
    assert_eq!(drive["driveType"], "business");
    let id = drive["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("b!"), "{id}");
    assert_eq!(id, g.drive().id());
    assert!(drive["quota"]["total"].as_u64().unwrap() > 0);
    assert_eq!(drive["quota"]["state"], "normal");
    assert_eq!(drive["owner"]["user"]["id"], me["id"]);
    let drives = api.get_ok("/me/drives").await;
    assert_eq!(drives["value"][0]["id"], id.as_str());
    assert_eq!(api.get_ok(&format!("/drives/{}", enc(&id))).await["id"], id.as_str());
    assert_eq!(
        api.get_ok(&format!("/users/{}/drive", enc(&upn))).await["id"],
        id.as_str()
    );
    assert_eq!(
        api.get_ok(&format!("/users/{}/drive", me["id"].as_str().unwrap()))
            .await["id"],
        id.as_str()
    );
    assert_eq!(api.get("/users/nobody%40contoso.com/drive").await.status, 404);
    let r = api.get("/drives/b!doesnotexist").await;
    assert_eq!((r.status, r.code().as_str()), (404, "itemNotFound"));

    // Sites: root, by host, by path, by id, libraries.
    let root = api.get_ok("/sites/root").await;
    assert_eq!(api.get_ok("/sites/contoso.sharepoint.com").await["id"], root["id"]);
    let eng = api.get_ok("/sites/contoso.sharepoint.com:/sites/eng").await;
    assert_eq!(eng["name"], "eng");
    assert_eq!(eng["webUrl"], "https://contoso.sharepoint.com/sites/eng");
    let eng_id = eng["id"].as_str().unwrap().to_string();
    assert_eq!(eng_id.split(',').count(), 3);
    assert_eq!(api.get_ok(&format!("/sites/{eng_id}")).await["id"], eng_id.as_str());
    assert_eq!(
        api.get_ok("/sites/contoso.sharepoint.com:/sites/ENG/").await["id"],
        eng_id.as_str()
    );
    let libs = api.get_ok(&format!("/sites/{eng_id}/drives")).await;
    let names: Vec<&str> = libs["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Documents", "Archive"]);
    assert!(libs["value"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["driveType"] == "documentLibrary"));
    let by_path = api.get_ok("/sites/contoso.sharepoint.com:/sites/eng:/drives").await;
    assert_eq!(by_path["value"], libs["value"]);
    let default_lib = api.get_ok(&format!("/sites/{eng_id}/drive")).await;
    assert_eq!(default_lib["name"], "Documents");
    assert_eq!(api.get("/sites/contoso.sharepoint.com:/sites/nope").await.status, 404);

    // A library is a separate drive with its own items.
    let archive = g.library("/sites/eng", "archive").expect("library");
    archive.put_file("/2023/report.txt", &b"old"[..]).unwrap();
    let archive_id = libs["value"][1]["id"].as_str().unwrap();
    assert_eq!(archive_id, archive.id());
    let item = api
        .get_ok(&format!("/drives/{}/root:/2023/report.txt", enc(archive_id)))
        .await;
    assert_eq!(item["size"], 3);
    assert_eq!(item["parentReference"]["driveType"], "documentLibrary");
    assert_eq!(api.get("/me/drive/root:/2023/report.txt").await.status, 404);
    // Addressing through the site path works too.
    assert_eq!(
        api.get_ok(&format!("/sites/{eng_id}/drive/root")).await["root"],
        json!({})
    );
}

#[tokio::test]
async fn app_only_tokens_cannot_use_me() {
    let (g, mut api) = business().await;
    api.token = Some(g.issue_app_token());
    for p in ["/me", "/me/drive", "/me/drive/root"] {
        let r = api.get(p).await;
        assert_eq!(r.status, 400, "{p}: {r:?}");
        assert_eq!(r.code(), "BadRequest");
        assert_eq!(
            r.json()["error"]["message"],
            "/me request is only valid with delegated authentication flow."
        );
    }
    let upn = g.config().user_principal_name;
    assert_eq!(
        api.get_ok(&format!("/users/{}/drive", enc(&upn))).await["id"],
        g.drive().id().as_str()
    );
    assert_eq!(
        api.get_ok(&format!("/drives/{}/root", enc(&g.drive().id()))).await["root"],
        json!({})
    );
}

#[tokio::test]
async fn personal_flavour_shapes() {
    let (g, api) = personal().await;
    let drive = api.get_ok("/me/drive").await;
    assert_eq!(drive["driveType"], "personal");
    let id = drive["id"].as_str().unwrap();
    assert!(
        id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{id}"
    );
    assert!(drive["quota"].get("fileCount").is_none());
    let r = api.get("/sites/root").await;
    assert_eq!((r.status, r.code().as_str()), (400, "BadRequest"));

    g.drive().put_file("/Docs/a.txt", &b"hello world"[..]).unwrap();
    let f = api.get_ok("/me/drive/root:/Docs/a.txt").await;
    let fid = f["id"].as_str().unwrap();
    assert!(fid.contains('!'), "{fid}");
    let hashes = &f["file"]["hashes"];
    assert_eq!(hashes["quickXorHash"], "aCgDG9jwBhDc4Q1yawMZAAAAAAA=");
    assert_eq!(hashes["sha1Hash"], "2AAE6C35C94FCFB415DBE95F408B9CE91EE846ED");
    assert_eq!(
        hashes["sha256Hash"],
        "B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9"
    );
    assert_eq!(f["parentReference"]["path"], "/drive/root:/Docs");
    // Millisecond timestamps on personal.
    assert!(
        f["lastModifiedDateTime"].as_str().unwrap().contains('.'),
        "{}",
        f["lastModifiedDateTime"]
    );
    // Folder cTag exists and changes when a descendant changes; eTag does not.
    let folder = api.get_ok("/me/drive/root:/Docs").await;
    let (fe, fc) = (folder["eTag"].clone(), folder["cTag"].clone());
    assert!(fc.is_string());
    g.drive().put_file("/Docs/b.txt", &b"x"[..]).unwrap();
    let folder2 = api.get_ok("/me/drive/root:/Docs").await;
    assert_eq!(folder2["eTag"], fe);
    assert_ne!(folder2["cTag"], fc);
    assert_eq!(folder2["folder"]["childCount"], 2);
    assert_eq!(folder2["size"], 12);
    // The root has no parentReference on personal.
    let root = api.get_ok("/me/drive/root").await;
    assert!(root.get("parentReference").is_none());
    assert_eq!(root["root"], json!({}));
}

#[tokio::test]
async fn business_item_shape_and_tags() {
    let (g, api) = business().await;
    let drive_id = g.drive().id();
    g.drive()
        .put_file("/Documents/report.docx", &b"hello world"[..])
        .unwrap();
    let f = api.get_ok("/me/drive/root:/Documents/report.docx").await;
    let etag = f["eTag"].as_str().unwrap().to_string();
    let ctag = f["cTag"].as_str().unwrap().to_string();
    assert!(etag.starts_with("\"{") && etag.ends_with(",1\""), "{etag}");
    assert!(ctag.starts_with("\"c:{"), "{ctag}");
    let id = f["id"].as_str().unwrap();
    assert!(id.starts_with("01") && id.len() == 34, "{id}");
    assert_eq!(f["size"], 11);
    assert_eq!(
        f["file"]["mimeType"],
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
    assert_eq!(
        f["file"]["hashes"],
        json!({ "quickXorHash": "aCgDG9jwBhDc4Q1yawMZAAAAAAA=" })
    );
    assert_eq!(f["parentReference"]["driveId"], drive_id.as_str());
    assert_eq!(f["parentReference"]["driveType"], "business");
    assert_eq!(
        f["parentReference"]["path"],
        format!("/drives/{drive_id}/root:/Documents")
    );
    assert!(f["@microsoft.graph.downloadUrl"].as_str().unwrap().contains("/_dl/"));
    assert!(!f["lastModifiedDateTime"].as_str().unwrap().contains('.'));
    assert!(f["fileSystemInfo"]["lastModifiedDateTime"].is_string());
    let folder = api.get_ok("/me/drive/root:/Documents").await;
    assert!(folder.get("cTag").is_none(), "business folders have no cTag");
    assert_eq!(folder["folder"]["childCount"], 1);
    let root = api.get_ok("/me/drive/root").await;
    assert_eq!(
        root["parentReference"],
        json!({ "driveId": drive_id, "driveType": "business" })
    );

    // If-None-Match with the eTag or cTag → 304; HEAD works.
    let r = api
        .send(
            Method::GET,
            "/me/drive/root:/Documents/report.docx",
            None,
            &[("If-None-Match", &etag)],
        )
        .await;
    assert_eq!(r.status, 304);
    let r = api
        .send(
            Method::GET,
            "/me/drive/root:/Documents/report.docx",
            None,
            &[("If-None-Match", &ctag)],
        )
        .await;
    assert_eq!(r.status, 304);
    let r = api
        .send(Method::HEAD, "/me/drive/root:/Documents/report.docx", None, &[])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag").unwrap(), etag);

    // Metadata change: eTag changes, cTag not. Content change: both.
    g.drive()
        .set_mtime(
            "/Documents/report.docx",
            std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
        .unwrap();
    let f2 = api.get_ok(&format!("/me/drive/items/{id}")).await;
    assert_ne!(f2["eTag"], f["eTag"]);
    assert_eq!(f2["cTag"], f["cTag"]);
    assert_eq!(f2["fileSystemInfo"]["lastModifiedDateTime"], "2023-11-14T22:13:20Z");
    g.drive()
        .put_file("/Documents/report.docx", &b"hello world!"[..])
        .unwrap();
    let f3 = api.get_ok(&format!("/me/drive/items/{id}")).await;
    assert_ne!(f3["eTag"], f2["eTag"]);
    assert_ne!(f3["cTag"], f2["cTag"]);
    assert_eq!(f3["size"], 12);
    // Folder eTag does not change when descendants change.
    assert_eq!(api.get_ok("/me/drive/root:/Documents").await["eTag"], folder["eTag"]);
    // $select keeps only the listed properties (+id); downloadUrl only when named.
    let s = api.get_ok(&format!("/me/drive/items/{id}?$select=name,size")).await;
    assert_eq!(s.as_object().unwrap().len(), 3, "{s}");
    let s = api
        .get_ok(&format!("/me/drive/items/{id}?$select=id,@microsoft.graph.downloadUrl"))
        .await;
    assert!(s["@microsoft.graph.downloadUrl"].is_string());
    // $expand=children
    let e = api.get_ok("/me/drive/root:/Documents?$expand=children").await;
    assert_eq!(e["children"][0]["name"], "report.docx");
}

#[tokio::test]
async fn path_addressing_with_encoded_segments() {
    let (g, api) = business().await;
    let names = [
        "a b.txt",
        "hash#tag.txt",
        "100%.txt",
        "a%20b.txt", // a literal percent-encoding inside a name must not be decoded twice
        "c++ notes.txt",
        "semi;colon=eq&amp's (1)!.txt",
        "Ünïcødé €.txt",
        "日本語ファイル.txt",
        "brackets[1].bin",
    ];
    let folder = "Dir With Spaces & #";
    for (i, n) in names.iter().enumerate() {
        let path = format!("/me/drive/root:/{}/{}:/content", enc(folder), enc(n));
        let r = if i == 0 {
            // The first upload creates nothing: the parent folder is missing (A18).
            let r = api.put(&path, b"x").await;
            assert_eq!((r.status, r.code().as_str()), (404, "itemNotFound"));
            g.drive().mkdir(&format!("/{folder}")).unwrap();
            api.put(&path, n.as_bytes()).await
        } else {
            api.put(&path, n.as_bytes()).await
        };
        assert_eq!(r.status, 201, "{n}: {r:?}");
        assert_eq!(r.json()["name"], *n);
    }
    let mut listed: Vec<String> = g.drive().list(&format!("/{folder}"));
    listed.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
    for n in names {
        let item = api.get_ok(&format!("/me/drive/root:/{}/{}", enc(folder), enc(n))).await;
        assert_eq!(item["name"], n);
        let bytes = g.drive().file_bytes(&format!("/{folder}/{n}")).unwrap();
        assert_eq!(&bytes[..], n.as_bytes());
    }
    // "a%20b.txt" and "a b.txt" are different files.
    let spaced = api.get_ok(&format!("/me/drive/root:/{}/a%20b.txt", enc(folder))).await;
    let literal = api
        .get_ok(&format!("/me/drive/root:/{}/a%2520b.txt", enc(folder)))
        .await;
    assert_eq!(spaced["name"], "a b.txt");
    assert_eq!(literal["name"], "a%20b.txt");
    // '+' is a literal plus in paths, never a space.
    assert_eq!(
        api.get_ok(&format!("/me/drive/root:/{}/c++%20notes.txt", enc(folder)))
            .await["name"],
        "c++ notes.txt"
    );
    assert_eq!(
        api.get(&format!("/me/drive/root:/{}/c%20%20notes.txt", enc(folder)))
            .await
            .status,
        404
    );
    // An encoded ':' belongs to the name (not a delimiter), and ':' is not a valid name character.
    let r = api.get(&format!("/me/drive/root:/{}/a%3Ab.txt:", enc(folder))).await;
    assert_eq!((r.status, r.code().as_str()), (404, "itemNotFound"));
    let r = api
        .put(&format!("/me/drive/root:/{}/a%3Ab.txt:/content", enc(folder)), b"x")
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.inner_codes()[0], "invalidPath");
    // Trailing colon optional; path relative to an item id; parentReference.path is percent-encoded.
    let folder_item = api.get_ok(&format!("/me/drive/root:/{}:", enc(folder))).await;
    let fid = folder_item["id"].as_str().unwrap();
    let via_id = api
        .get_ok(&format!("/me/drive/items/{fid}:/{}:", enc("hash#tag.txt")))
        .await;
    assert_eq!(via_id["name"], "hash#tag.txt");
    assert_eq!(
        via_id["parentReference"]["path"],
        format!("/drives/{}/root:/Dir%20With%20Spaces%20&%20%23", g.drive().id())
    );
    let kids = api.get_ok(&format!("/me/drive/root:/{}:/children", enc(folder))).await;
    assert_eq!(kids["value"].as_array().unwrap().len(), names.len());
    // `items/root` is an alias of the root.
    assert_eq!(api.get_ok("/me/drive/items/root").await["root"], json!({}));
    // Invalid UTF-8 after decoding.
    assert_eq!(api.get("/me/drive/root:/%FF%FE").await.status, 400);
}

#[tokio::test]
async fn names_are_case_insensitive_and_case_preserving() {
    let (g, api) = business().await;
    let id = g.drive().put_file("/Folder-A/Foo.txt", &b"one"[..]).unwrap();
    let item = api.get_ok("/me/drive/root:/folder-a/foo.TXT").await;
    assert_eq!(item["id"], id.as_str());
    assert_eq!(item["name"], "Foo.txt");
    // Replacing via a differently-cased path hits the same item.
    let r = api.put("/me/drive/root:/FOLDER-A/FOO.TXT:/content", b"two").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["id"], id.as_str());
    assert_eq!(r.json()["name"], "Foo.txt");
    // Creating a folder that differs only by case conflicts.
    let r = api
        .json(
            Method::POST,
            "/me/drive/root/children",
            &json!({ "name": "FOLDER-a", "folder": {} }),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (409, "nameAlreadyExists"));
    // A case-only rename is allowed.
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{id}"),
            &json!({ "name": "FOO.txt" }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(g.drive().list("/folder-a"), vec!["FOO.txt"]);
    // Item ids are case-sensitive.
    assert_eq!(
        api.get(&format!("/me/drive/items/{}", id.to_lowercase())).await.status,
        404
    );
    // Creating a file in another case with conflictBehavior=fail conflicts, by simple PUT and by
    // upload session; the stored spelling stays.
    let r = api
        .put(
            "/me/drive/root:/folder-a/foo.TXT:/content?@microsoft.graph.conflictBehavior=fail",
            b"three",
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (409, "nameAlreadyExists"));
    let r = api
        .json(
            Method::POST,
            "/me/drive/root:/FOLDER-A/Foo.Txt:/createUploadSession",
            &json!({ "item": { "@microsoft.graph.conflictBehavior": "fail" } }),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (409, "nameAlreadyExists"));
    // Moving another item onto a name in another case conflicts too.
    let other = g.drive().put_file("/Folder-A/bar.txt", &b"bar"[..]).unwrap();
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{other}?@microsoft.graph.conflictBehavior=fail"),
            &json!({ "name": "foo.txt" }),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (409, "nameAlreadyExists"));
    // Children listings keep the stored spelling; non-ASCII letters fold too.
    g.drive().put_file("/Folder-A/Ärger.txt", &b"x"[..]).unwrap();
    assert_eq!(
        api.get_ok("/me/drive/root:/folder-a/äRGER.TXT").await["name"],
        "Ärger.txt"
    );
    let kids = api.get_ok("/me/drive/root:/FOLDER-A:/children").await;
    let mut names: Vec<&str> = kids["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["FOO.txt", "bar.txt", "Ärger.txt"]);
}

#[tokio::test]
async fn children_paging_over_2500_items() {
    let (g, api) = business().await;
    let d = g.drive();
    d.mkdir("/big").unwrap();
    for i in 0..2500 {
        d.put_file(&format!("/big/file-{i:05}.txt"), format!("{i}").into_bytes())
            .unwrap();
    }
    // Default page size 200.
    let (items, pages) = api.list_all("/me/drive/root:/big:/children").await;
    assert_eq!(items.len(), 2500);
    assert_eq!(pages, 13);
    let names: HashSet<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2500);
    assert!(items.iter().all(|i| i["@microsoft.graph.downloadUrl"].is_string()));
    // $top=1000 → 3 pages; nextLink is absolute and keeps the query options.
    let first = api
        .get_ok("/me/drive/root:/big:/children?$top=1000&$select=id,name")
        .await;
    assert_eq!(first["value"].as_array().unwrap().len(), 1000);
    let next = first["@odata.nextLink"].as_str().unwrap();
    assert!(next.starts_with(&g.graph_url()), "{next}");
    assert!(next.contains("top=1000") && next.contains("select="), "{next}");
    assert!(first["value"][0].get("@microsoft.graph.downloadUrl").is_none());
    assert_eq!(first["value"][0].as_object().unwrap().len(), 2);
    let (items, pages) = api.list_all("/me/drive/root:/big:/children?$top=1000").await;
    assert_eq!((items.len(), pages), (2500, 3));
    let mut sorted: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    let listed = sorted.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "default order is by name");
    // Limits (A20).
    for bad in ["0", "1001", "-1", "abc"] {
        let r = api.get(&format!("/me/drive/root:/big:/children?$top={bad}")).await;
        assert_eq!((r.status, r.code().as_str()), (400, "invalidRequest"), "$top={bad}");
    }
    // Exactly one page: no nextLink.
    let one = api.get_ok("/me/drive/root/children").await;
    assert!(one.get("@odata.nextLink").is_none());
    // Business supports $orderby=name only.
    let desc = api
        .get_ok("/me/drive/root:/big:/children?$orderby=name%20desc&$top=1")
        .await;
    assert_eq!(desc["value"][0]["name"], "file-02499.txt");
    assert_eq!(api.get("/me/drive/root:/big:/children?$orderby=size").await.status, 400);
}

#[tokio::test]
async fn simple_put_create_replace_and_conflicts() {
    let (g, api) = business().await;
    let r = api.put("/me/drive/root:/a.txt:/content", b"one").await;
    assert_eq!(r.status, 201, "{r:?}");
    let item = r.json();
    let id = item["id"].as_str().unwrap().to_string();
    assert_eq!(item["file"]["mimeType"], "text/plain");
    // Replace (default conflictBehavior for PUT is replace, A4) → 200, same id, new tags.
    let r = api.put("/me/drive/root:/a.txt:/content", b"two!").await;
    assert_eq!(r.status, 200);
    let replaced = r.json();
    assert_eq!(replaced["id"], id.as_str());
    assert_ne!(replaced["eTag"], item["eTag"]);
    assert_ne!(replaced["cTag"], item["cTag"]);
    assert_eq!(replaced["size"], 4);
    // By id.
    let r = api.put(&format!("/me/drive/items/{id}/content"), b"three").await;
    assert_eq!(r.status, 200);
    assert_eq!(&g.drive().file_bytes("/a.txt").unwrap()[..], b"three");
    // fail → 409; rename → "a 1.txt", "a 2.txt"; query string and replace explicit.
    let r = api
        .put(
            "/me/drive/root:/a.txt:/content?@microsoft.graph.conflictBehavior=fail",
            b"x",
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (409, "nameAlreadyExists"));
    let r = api
        .put(
            "/me/drive/root:/a.txt:/content?@microsoft.graph.conflictBehavior=rename",
            b"x",
        )
        .await;
    assert_eq!((r.status, r.json()["name"].as_str().unwrap()), (201, "a 1.txt"));
    let r = api
        .put(
            "/me/drive/root:/a.txt:/content?@microsoft.graph.conflictBehavior=rename",
            b"x",
        )
        .await;
    assert_eq!(r.json()["name"], "a 2.txt");
    // By parent id + name.
    let root = api.get_ok("/me/drive/root").await["id"].as_str().unwrap().to_string();
    let r = api.put(&format!("/me/drive/items/{root}:/b.txt:/content"), b"b").await;
    assert_eq!(r.status, 201);
    // If-Match mismatch → 412, match → 200.
    let etag = api.get_ok("/me/drive/root:/b.txt").await["eTag"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api
        .send(
            Method::PUT,
            "/me/drive/root:/b.txt:/content",
            Some(b"bb".to_vec()),
            &[("If-Match", "\"{00000000-0000-0000-0000-000000000000},1\"")],
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (412, "resourceModified"));
    let r = api
        .send(
            Method::PUT,
            "/me/drive/root:/b.txt:/content",
            Some(b"bb".to_vec()),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(r.status, 200);
    // Target is a folder → 409; parent missing → 404 (A18).
    g.drive().mkdir("/dir").unwrap();
    let r = api.put("/me/drive/root:/dir:/content", b"x").await;
    assert_eq!((r.status, r.code().as_str()), (409, "nameAlreadyExists"));
    let r = api.put("/me/drive/root:/no/such/parent.txt:/content", b"x").await;
    assert_eq!((r.status, r.code().as_str()), (404, "itemNotFound"));
    // Zero-byte file.
    let r = api.put("/me/drive/root:/empty.bin:/content", b"").await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["size"], 0);
    assert_eq!(
        r.json()["file"]["hashes"]["quickXorHash"],
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
    );
    // Invalid names (docs/onedrive.md, Names and limits) → 400 invalidRequest / invalidPath.
    for bad in [
        "CON.txt",
        "con",
        "desktop.ini",
        ".lock",
        "trailing.",
        " lead.txt",
        "trail.txt ",
        "x_vti_y",
        "~$lock.docx",
        "a*b",
        "q?.txt",
        "lpt1.log",
    ] {
        let r = api.put(&format!("/me/drive/root:/{}:/content", enc(bad)), b"x").await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert_eq!(r.code(), "invalidRequest");
        assert_eq!(r.inner_codes()[0], "invalidPath", "{bad}");
    }
    let long = "n".repeat(256);
    let r = api.put(&format!("/me/drive/root:/{long}:/content"), b"x").await;
    assert_eq!(r.inner_codes()[0], "pathIsTooLong");
    // More than 250 MB announced → 413 before the body is read (A1).
    let head = format!(
        "PUT /v1.0/me/drive/root:/huge.bin:/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 262144001\r\n\r\n",
        api.token.as_ref().unwrap()
    );
    assert_eq!(raw_status(&g.base_url(), &head).await, 413);
}

#[tokio::test]
async fn create_folders() {
    let (g, api) = business().await;
    let r = api
        .json(
            Method::POST,
            "/me/drive/root/children",
            &json!({ "name": "New Folder", "folder": {} }),
        )
        .await;
    assert_eq!(r.status, 201);
    let f = r.json();
    assert_eq!(f["folder"]["childCount"], 0);
    assert_eq!(f["size"], 0);
    // Default conflict behaviour for create is fail (A4).
    let r = api
        .json(
            Method::POST,
            "/me/drive/root/children",
            &json!({ "name": "new folder", "folder": {} }),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (409, "nameAlreadyExists"));
    let r = api
        .json(
            Method::POST,
            "/me/drive/root/children",
            &json!({ "name": "New Folder", "folder": {}, "@microsoft.graph.conflictBehavior": "rename" }),
        )
        .await;
    assert_eq!(r.json()["name"], "New Folder 1");
    // Query wins over body (A3).
    let r = api
        .json(
            Method::POST,
            "/me/drive/root/children?@microsoft.graph.conflictBehavior=fail",
            &json!({ "name": "New Folder", "folder": {}, "@microsoft.graph.conflictBehavior": "rename" }),
        )
        .await;
    assert_eq!(r.status, 409);
    g.drive().put_file("/New Folder/x.txt", &b"x"[..]).unwrap();
    let r = api
        .json(
            Method::POST,
            "/me/drive/root/children",
            &json!({ "name": "New Folder", "folder": {}, "@microsoft.graph.conflictBehavior": "replace" }),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_ne!(r.json()["id"], f["id"]);
    assert!(g.drive().list("/New Folder").is_empty());
    // Nested by path; parent missing → 404; no folder facet → 400; bad name → 400.
    let r = api
        .json(
            Method::POST,
            "/me/drive/root:/New%20Folder:/children",
            &json!({ "name": "sub", "folder": {} }),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = api
        .json(
            Method::POST,
            "/me/drive/root:/missing:/children",
            &json!({ "name": "sub", "folder": {} }),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = api
        .json(
            Method::POST,
            "/me/drive/root/children",
            &json!({ "name": "f.txt", "file": {} }),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .json(
            Method::POST,
            "/me/drive/root/children",
            &json!({ "name": "bad.", "folder": {} }),
        )
        .await;
    assert_eq!((r.status, r.inner_codes()[0].as_str()), (400, "invalidPath"));
    let r = api
        .json(
            Method::POST,
            "/me/drive/root/children",
            &json!({ "name": "forms", "folder": {} }),
        )
        .await;
    assert_eq!(r.status, 400, "business: 'forms' folder at the root is reserved");
}

#[tokio::test]
async fn rename_move_and_patch_rules() {
    let (g, api) = business().await;
    let d = g.drive();
    let a = d.put_file("/src/a.txt", &b"a"[..]).unwrap();
    let b = d.put_file("/src/b.txt", &b"b"[..]).unwrap();
    let dst = d.mkdir("/dst").unwrap();
    let src = d.item_id("/src").unwrap();
    let root = d.root_id();
    let before = api.get_ok(&format!("/me/drive/items/{a}")).await;
    // Rename.
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{a}"),
            &json!({ "name": "renamed.txt" }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let after = r.json();
    assert_eq!(
        (after["id"].as_str().unwrap(), after["name"].as_str().unwrap()),
        (a.as_str(), "renamed.txt")
    );
    assert_ne!(after["eTag"], before["eTag"]);
    assert_eq!(after["cTag"], before["cTag"]);
    // Move (+rename) into another folder.
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{a}"),
            &json!({ "parentReference": { "id": dst }, "name": "moved.txt" }),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["parentReference"]["id"], dst.as_str());
    assert_eq!(d.path_of(&a).unwrap(), "/dst/moved.txt");
    // Conflict fail → 409; replace file over file → ok.
    d.put_file("/dst/b.txt", &b"other"[..]).unwrap();
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{b}"),
            &json!({ "parentReference": { "id": dst } }),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (409, "nameAlreadyExists"));
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{b}?@microsoft.graph.conflictBehavior=replace"),
            &json!({ "parentReference": { "id": dst } }),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(&d.file_bytes("/dst/b.txt").unwrap()[..], b"b");
    // Folder replace over a folder → 409.
    d.mkdir("/dst/src").unwrap();
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{src}?@microsoft.graph.conflictBehavior=replace"),
            &json!({ "parentReference": { "id": dst } }),
        )
        .await;
    assert_eq!(r.status, 409);
    // rename conflict behaviour.
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{src}?@microsoft.graph.conflictBehavior=rename"),
            &json!({ "parentReference": { "id": dst } }),
        )
        .await;
    assert_eq!(r.json()["name"], "src 1");
    // Into itself / a descendant → 400.
    let inner = d.mkdir("/dst/src 1/inner").unwrap();
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{src}"),
            &json!({ "parentReference": { "id": inner } }),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalidRequest"));
    // `root` is not an alias in parentReference.id; the real root id works; path works too.
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{a}"),
            &json!({ "parentReference": { "id": "root" } }),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{a}"),
            &json!({ "parentReference": { "id": root } }),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{a}"),
            &json!({ "parentReference": { "path": "/drive/root:/dst" } }),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(d.path_of(&a).unwrap(), "/dst/moved.txt");
    // Cross-drive → 400; read-only property → 400 propertyNotUpdateable; missing parent → 404.
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{a}"),
            &json!({ "parentReference": { "driveId": "b!other", "id": root } }),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .json(Method::PATCH, &format!("/me/drive/items/{a}"), &json!({ "size": 5 }))
        .await;
    assert_eq!((r.status, r.inner_codes()[0].as_str()), (400, "propertyNotUpdateable"));
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{a}"),
            &json!({ "parentReference": { "id": "01NOSUCHITEM" } }),
        )
        .await;
    assert_eq!(r.status, 404);
    // fileSystemInfo only: eTag changes, cTag not, value echoed (business: whole seconds).
    let cur = api.get_ok(&format!("/me/drive/items/{a}")).await;
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{a}"),
            &json!({ "fileSystemInfo": { "lastModifiedDateTime": "2024-01-01T10:20:30.456Z" } }),
        )
        .await;
    let v = r.json();
    assert_eq!(v["fileSystemInfo"]["lastModifiedDateTime"], "2024-01-01T10:20:30Z");
    assert_ne!(v["eTag"], cur["eTag"]);
    assert_eq!(v["cTag"], cur["cTag"]);
    // If-Match.
    let r = api
        .send(
            Method::PATCH,
            &format!("/me/drive/items/{a}"),
            Some(br#"{"name":"z.txt"}"#.to_vec()),
            &[("If-Match", "\"nope\""), ("Content-Type", "application/json")],
        )
        .await;
    assert_eq!(r.status, 412);
    // The root cannot be renamed.
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{root}"),
            &json!({ "name": "x" }),
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn delete_items() {
    let (g, api) = business().await;
    let d = g.drive();
    let f = d.put_file("/a/b/c.txt", &b"c"[..]).unwrap();
    let a = d.item_id("/a").unwrap();
    g.faults().lock_item("/a/b/c.txt").unwrap();
    let r = api.delete(&format!("/me/drive/items/{a}")).await;
    assert_eq!(r.status, 423);
    assert_eq!(r.code(), "accessDenied");
    assert_eq!(r.inner_codes()[0], "resourceLocked");
    g.faults().unlock_item("/a/b/c.txt").unwrap();
    let r = api
        .send(
            Method::DELETE,
            &format!("/me/drive/items/{a}"),
            None,
            &[("If-Match", "\"bad\"")],
        )
        .await;
    assert_eq!(r.status, 412);
    let r = api.delete("/me/drive/root:/a").await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(api.get(&format!("/me/drive/items/{f}")).await.status, 404);
    assert_eq!(api.delete(&format!("/me/drive/items/{a}")).await.status, 404);
    let root = d.root_id();
    let r = api.delete(&format!("/me/drive/items/{root}")).await;
    assert_eq!((r.status, r.code().as_str()), (403, "accessDenied"));
    assert_eq!(d.used_bytes(), 0);
}

/// Polls a monitor URL until it answers 200 (bounded: 30 s).
async fn wait_monitor(anon: &Api, monitor: &str) -> serde_json::Value {
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = anon.get(monitor).await;
        if r.status == 200 {
            return r.json();
        }
        assert_eq!(r.status, 202, "{r:?}");
    }
    panic!("monitor {monitor} never completed");
}

#[tokio::test]
async fn copy_with_monitor() {
    let mut cfg = FakeGraphConfig::for_flavour(Flavour::Business);
    cfg.async_op_delay = Duration::from_millis(1500);
    let (g, api) = start(cfg).await;
    let d = g.drive();
    d.put_file("/src/one.txt", &b"1"[..]).unwrap();
    d.put_file("/src/sub/two.txt", &b"22"[..]).unwrap();
    let dst = d.mkdir("/dst").unwrap();
    let src = d.item_id("/src").unwrap();
    let r = api
        .json(
            Method::POST,
            &format!("/me/drive/items/{src}/copy"),
            &json!({ "parentReference": { "driveId": d.id(), "id": dst }, "name": "copy" }),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert!(r.body.is_empty());
    let monitor = r.header("location").unwrap();
    // The monitor needs no Authorization.
    let anon = anon(&api);
    let first = anon.get(&monitor).await;
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(first.json()["status"], "inProgress");
    let done = wait_monitor(&anon, &monitor).await;
    assert_eq!(done["status"], "completed");
    let new_id = done["resourceId"].as_str().unwrap();
    let copied = api.get_ok(&format!("/me/drive/items/{new_id}")).await;
    assert_eq!(copied["name"], "copy");
    assert_eq!(copied["size"], 3);
    assert_eq!(&d.file_bytes("/dst/copy/sub/two.txt").unwrap()[..], b"22");
    assert!(d.exists("/src/sub/two.txt"));
    // Name conflict is rejected at once.
    let r = api
        .json(
            Method::POST,
            &format!("/me/drive/items/{src}/copy"),
            &json!({ "parentReference": { "id": dst }, "name": "copy" }),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (409, "nameAlreadyExists"));
    // Injected failure is reported by the monitor.
    g.faults().fail_next_async_ops(1);
    let r = api
        .json(
            Method::POST,
            &format!("/me/drive/items/{src}/copy"),
            &json!({ "name": "copy2" }),
        )
        .await;
    let monitor = r.header("location").unwrap();
    let failed = wait_monitor(&anon, &monitor).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"]["code"].is_string());
    assert!(!d.exists("/src/copy2"));
    // Copy into another drive (a SharePoint library).
    let lib = g.library("/sites/eng", "Documents").unwrap();
    let r = api
        .json(
            Method::POST,
            &format!("/me/drive/items/{src}/copy"),
            &json!({ "parentReference": { "driveId": lib.id(), "id": lib.root_id() } }),
        )
        .await;
    assert_eq!(r.status, 202);
    let monitor = r.header("location").unwrap();
    wait_monitor(&anon, &monitor).await;
    assert_eq!(&lib.file_bytes("/src/one.txt").unwrap()[..], b"1");
}

#[tokio::test]
async fn async_moves_answer_202_and_complete() {
    let (g, api) = business().await;
    let d = g.drive();
    let f = d.put_file("/a.txt", &b"a"[..]).unwrap();
    let dst = d.mkdir("/dst").unwrap();
    g.faults().async_moves(true);
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{f}"),
            &json!({ "parentReference": { "id": dst } }),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let status = anon(&api).get(&r.header("location").unwrap()).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["status"], "completed");
    assert_eq!(status.json()["resourceId"], f.as_str());
    assert_eq!(d.path_of(&f).unwrap(), "/dst/a.txt");
    // Renames without a move stay synchronous; invalid moves fail at once.
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{f}"),
            &json!({ "name": "b.txt" }),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = api
        .json(
            Method::PATCH,
            &format!("/me/drive/items/{dst}"),
            &json!({ "parentReference": { "id": dst } }),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn correlation_headers_and_error_body_shape() {
    let (_g, api) = business().await;
    let r = api
        .send(
            Method::GET,
            "/me/drive/root:/nope",
            None,
            &[("client-request-id", "abc-123")],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("client-request-id").unwrap(), "abc-123");
    let rid = r.header("request-id").unwrap();
    let v = r.json();
    assert_eq!(v["error"]["code"], "itemNotFound");
    assert!(v["error"]["message"].is_string());
    assert_eq!(v["error"]["innerError"]["request-id"], rid.as_str());
    assert_eq!(v["error"]["innerError"]["client-request-id"], "abc-123");
    assert!(v["error"]["innerError"]["date"].is_string());
    let r = api.get("/me/drive/root:/x:/bogus").await;
    assert_eq!((r.status, r.code().as_str()), (400, "BadRequest"));
    let r = api.send(Method::POST, "/me/drive/root", None, &[]).await;
    assert_eq!(r.status, 405);
}
