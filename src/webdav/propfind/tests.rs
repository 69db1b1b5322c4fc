//! Tests of the multistatus parser: real servers' answer shapes, broken and hostile documents.

use std::time::Duration;

use super::*;

fn parse(xml: &str) -> RemoteResult<Vec<DavResponse>> {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut out = Vec::new();
        parse_multistatus(xml.as_bytes(), |r| {
            out.push(r);
            Ok(())
        })
        .await?;
        Ok(out)
    })
}

fn date(s: &str) -> Option<SystemTime> {
    Some(httpdate::parse_http_date(s).unwrap())
}

#[test]
fn apache_style_with_lp1_prefix_and_404_propstat() {
    let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:ns0="DAV:">
<D:response xmlns:lp1="DAV:" xmlns:lp2="http://apache.org/dav/props/">
<D:href>/dav/dir%20one/</D:href>
<D:propstat>
<D:prop>
<lp1:resourcetype><D:collection/></lp1:resourcetype>
<lp1:getlastmodified>Sat, 22 Nov 2025 10:00:00 GMT</lp1:getlastmodified>
<lp1:getetag>"1000-5f1"</lp1:getetag>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
<D:propstat>
<D:prop>
<D:getcontentlength/>
<ns0:quota-available-bytes/>
</D:prop>
<D:status>HTTP/1.1 404 Not Found</D:status>
</D:propstat>
</D:response>
<D:response xmlns:lp1="DAV:">
<D:href>/dav/dir%20one/a.txt</D:href>
<D:propstat>
<D:prop>
<lp1:resourcetype/>
<lp1:getcontentlength>12</lp1:getcontentlength>
<lp1:getlastmodified>Sat, 22 Nov 2025 10:00:01 GMT</lp1:getlastmodified>
<lp1:getetag>W/"c-5f2"</lp1:getetag>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
</D:response>
</D:multistatus>"#;
    let r = parse(xml).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].href, "/dav/dir%20one/");
    assert!(r[0].props.collection);
    assert_eq!(r[0].props.content_length, None);
    assert_eq!(r[0].props.quota_available, None);
    assert_eq!(r[0].props.etag.as_deref(), Some("\"1000-5f1\""));
    assert_eq!(r[0].props.last_modified, date("Sat, 22 Nov 2025 10:00:00 GMT"));
    assert!(r[0].is_ok());
    assert!(!r[1].props.collection);
    assert_eq!(r[1].props.content_length, Some(12));
    assert_eq!(r[1].props.etag.as_deref(), Some("W/\"c-5f2\""));
}

#[test]
fn default_namespace_lowercase_prefix_and_absolute_hrefs() {
    let xml = r#"<multistatus xmlns="DAV:"><response>
<href>http://127.0.0.1:8080/remote.php/dav/files/u/My%20File%23.txt</href>
<propstat><prop><getcontentlength>42</getcontentlength><getetag>abc123</getetag>
<resourcetype/></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
    let r = parse(xml).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].href,
        "http://127.0.0.1:8080/remote.php/dav/files/u/My%20File%23.txt"
    );
    assert_eq!(r[0].props.content_length, Some(42));
    assert_eq!(r[0].props.etag.as_deref(), Some("abc123"));

    let xml = r#"<d:multistatus xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:response>
<d:href>/x/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype>
<oc:fileid>123</oc:fileid><d:quota-used-bytes>100</d:quota-used-bytes>
<d:quota-available-bytes>900</d:quota-available-bytes></d:prop>
<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#;
    let r = parse(xml).unwrap();
    assert!(r[0].props.collection);
    assert_eq!(r[0].props.quota_used, Some(100));
    assert_eq!(r[0].props.quota_available, Some(900));
}

#[test]
fn names_are_matched_by_namespace_not_prefix() {
    // `D:` bound to something else, and a `getetag` outside DAV:, are not ours.
    let xml = r#"<x:multistatus xmlns:x="DAV:" xmlns:D="urn:not-dav"><x:response>
<x:href>/a</x:href><x:propstat><x:prop><D:getetag>"wrong"</D:getetag>
<D:resourcetype><x:collection/></D:resourcetype><x:getcontentlength>7</x:getcontentlength></x:prop>
<x:status>HTTP/1.1 200 OK</x:status></x:propstat></x:response></x:multistatus>"#;
    let r = parse(xml).unwrap();
    assert_eq!(r[0].props.etag, None);
    assert!(!r[0].props.collection);
    assert_eq!(r[0].props.content_length, Some(7));
    // A document in another namespace entirely is rejected.
    assert!(parse(r#"<multistatus xmlns="urn:x"><response/></multistatus>"#).is_err());
}

#[test]
fn only_200_propstats_count_and_missing_props_stay_none() {
    let xml = r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/f</D:href>
<D:propstat><D:prop><D:getcontentlength>5</D:getcontentlength></D:prop><D:status>HTTP/1.1 403 Forbidden</D:status></D:propstat>
<D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>
<D:propstat><D:prop><D:getetag>"e"</D:getetag></D:prop></D:propstat>
<D:propstat><D:prop><D:getlastmodified>not a date</D:getlastmodified></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
</D:response></D:multistatus>"#;
    let r = parse(xml).unwrap();
    assert_eq!(r[0].props, Props::default());
    assert_eq!(r[0].propstat_statuses, vec![403, 404, 0, 200]);
}

#[test]
fn response_level_status_entities_cdata_and_comments() {
    let xml = r#"<?xml version="1.0"?>
<!-- a comment -->
<D:multistatus xmlns:D="DAV:">
<D:response><D:href>/gone</D:href><D:status>HTTP/1.1 404 Not Found</D:status></D:response>
<D:response><D:href>/a&amp;b%20&#x4E2D;</D:href><D:propstat><D:prop>
<D:getetag>&quot;q&quot;</D:getetag><D:getlastmodified><![CDATA[Sun, 06 Nov 1994 08:49:37 GMT]]></D:getlastmodified>
</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
</D:multistatus>"#;
    let r = parse(xml).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].status, Some(404));
    assert!(!r[0].is_ok());
    assert_eq!(r[1].href, "/a&b%20中");
    assert_eq!(r[1].props.etag.as_deref(), Some("\"q\""));
    assert_eq!(
        r[1].props.last_modified,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784111777))
    );
}

#[test]
fn broken_documents_are_errors_not_panics() {
    let bad = [
        "",
        "<html><body>Hello</body></html>",
        r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/a</D:href>"#,
        r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/a</D:wrong></D:response></D:multistatus>"#,
        r#"<D:multistatus xmlns:D="DAV:"><D:response><D:propstat/></D:response></D:multistatus>"#,
        r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>&bogus;</D:href></D:response></D:multistatus>"#,
        "<<<<",
    ];
    for doc in bad {
        assert!(parse(doc).is_err(), "accepted {doc:?}");
    }
    let deep = format!(
        r#"<D:multistatus xmlns:D="DAV:">{}{}</D:multistatus>"#,
        "<x>".repeat(1000),
        "</x>".repeat(1000)
    );
    assert!(parse(&deep).is_err());
    let long = format!(
        r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>{}</D:href></D:response></D:multistatus>"#,
        "a".repeat(MAX_TEXT + 1)
    );
    assert!(parse(&long).is_err());
    // An empty multistatus is fine: nothing to report.
    assert_eq!(parse(r#"<D:multistatus xmlns:D="DAV:"/>"#).unwrap(), vec![]);
}

/// `prefix`, then `len` bytes of `filler`, then `suffix`, parsed with the given limits.
fn parse_streamed(
    prefix: &str,
    filler: u8,
    len: u64,
    suffix: &str,
    max_event: u64,
    max_total: u64,
) -> RemoteResult<usize> {
    use tokio::io::AsyncReadExt;
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let body = prefix
            .as_bytes()
            .chain(tokio::io::repeat(filler).take(len))
            .chain(suffix.as_bytes());
        let mut n = 0;
        parse_multistatus_limited(tokio::io::BufReader::new(body), max_event, max_total, |_| {
            n += 1;
            Ok(())
        })
        .await?;
        Ok(n)
    })
}

#[test]
fn huge_text_nodes_are_refused_while_streaming_kept_or_not() {
    let open = r#"<D:multistatus xmlns:D="DAV:" xmlns:X="urn:x"><D:response><D:href>/a</D:href><D:propstat><D:prop>"#;
    let close = "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>";
    for (element, end) in [
        ("<X:junk>", "</X:junk>"),
        ("<D:displayname>", "</D:displayname>"),
        ("<D:getetag>", "</D:getetag>"),
        ("<X:junk><![CDATA[", "]]></X:junk>"),
        ("<!--", "-->"),
        ("<X:junk X:attr=\"", "\"/>"),
    ] {
        let big = parse_streamed(
            &format!("{open}{element}"),
            b'a',
            8 << 20,
            &format!("{end}{close}"),
            MAX_EVENT,
            MAX_ANSWER,
        );
        match big {
            Err(RemoteError::Protocol(m)) => assert!(m.contains("too large"), "{element}: {m}"),
            other => panic!("{element}: 8 MiB in one node accepted: {other:?}"),
        }
        // The same shape within the limits is fine.
        let small = parse_streamed(
            &format!("{open}{element}"),
            b'a',
            1000,
            &format!("{end}{close}"),
            MAX_EVENT,
            MAX_ANSWER,
        );
        assert_eq!(small.unwrap(), 1, "{element}");
    }
}

#[test]
fn answers_past_the_total_limit_or_count_are_refused() {
    let one = r#"<D:response><D:href>/a</D:href></D:response>"#;
    let doc = format!(r#"<D:multistatus xmlns:D="DAV:">{}</D:multistatus>"#, one.repeat(100));
    assert_eq!(parse_streamed(&doc, b' ', 0, "", MAX_EVENT, 1 << 20).unwrap(), 100);
    match parse_streamed(&doc, b' ', 0, "", MAX_EVENT, 2000) {
        Err(RemoteError::Protocol(m)) => assert!(m.contains("too large"), "{m}"),
        other => panic!("{other:?}"),
    }
    let many = format!(
        r#"<D:multistatus xmlns:D="DAV:">{}</D:multistatus>"#,
        one.repeat(MAX_RESPONSES + 1)
    );
    match parse(&many) {
        Err(RemoteError::Protocol(m)) => assert!(m.contains("too large"), "{m}"),
        other => panic!("{:?}", other.map(|v| v.len())),
    }
}

#[test]
fn sizes_must_be_sizes() {
    let doc = |size: &str| {
        format!(
            r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/f</D:href><D:propstat><D:prop><D:getcontentlength>{size}</D:getcontentlength></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#
        )
    };
    let props = |size: &str| parse(&doc(size)).unwrap().remove(0).props;
    assert_eq!(props("0").content_length, Some(0));
    assert_eq!(props(" 42 ").content_length, Some(42));
    assert_eq!(props(&i64::MAX.to_string()).content_length, Some(i64::MAX as u64));
    assert_eq!(props("").content_length, None);
    assert_eq!(props("").invalid, None);
    for bad in [
        "-1",
        "12abc",
        "1e3",
        "0x10",
        "9223372036854775808",
        "18446744073709551616",
    ] {
        let p = props(bad);
        assert_eq!(p.content_length, None, "{bad}");
        assert!(p.invalid.as_deref().is_some_and(|w| w.contains(bad)), "{bad}: {p:?}");
    }
}

#[test]
fn callback_errors_stop_the_parse() {
    let xml = r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/a</D:href></D:response><D:response><D:href>/b</D:href></D:response></D:multistatus>"#;
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut seen = 0;
    let res = rt.block_on(parse_multistatus(xml.as_bytes(), |_| {
        seen += 1;
        Err(RemoteError::Protocol("stop".into()))
    }));
    assert!(res.is_err());
    assert_eq!(seen, 1);
}

#[test]
fn status_lines() {
    assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
    assert_eq!(parse_status_line("  HTTP/1.1   404 Not Found "), Some(404));
    assert_eq!(parse_status_line("garbage"), None);
}

#[test]
fn our_dead_properties_by_namespace_and_only_well_formed_values() {
    let xml = r#"<D:multistatus xmlns:D="DAV:"><D:response xmlns:m="urn:x-cloudmount:meta:1" xmlns:o="urn:other">
<D:href>/f</D:href>
<D:propstat><D:prop>
<m:mode>0755</m:mode><o:uid>5</o:uid><m:gid>7<m:x/>8</m:gid><m:atime>  12.5 </m:atime>
<m:mtime>1.000000002</m:mtime><m:stamp>10:3</m:stamp><m:unknown>1</m:unknown>
</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
<D:propstat><D:prop><m:uid>9</m:uid></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>
</D:response>
<D:response><D:href>/g</D:href><D:propstat><D:prop xmlns:m="urn:x-cloudmount:meta:1">
<m:mode>rwxr-xr-x</m:mode><m:uid>-1</m:uid><m:mtime>yesterday</m:mtime><m:created><![CDATA[3]]></m:created>
</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
</D:multistatus>"#;
    let r = parse(xml).unwrap();
    let m = &r[0].props.dead.meta;
    assert_eq!(m.mode, Some(0o755));
    assert_eq!(
        m.uid, None,
        "a uid in another namespace, or in a 404 propstat, is not ours"
    );
    assert_eq!(m.gid, None, "a value holding an element is ignored");
    assert_eq!(m.atime, Some(SystemTime::UNIX_EPOCH + Duration::from_millis(12_500)));
    assert_eq!(m.mtime, Some(SystemTime::UNIX_EPOCH + Duration::new(1, 2)));
    assert_eq!(r[0].props.dead.stamp.as_deref(), Some("10:3"));
    let g = &r[1].props.dead.meta;
    assert_eq!((g.mode, g.uid, g.mtime), (None, None, None));
    assert_eq!(g.created, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(3)));
}
