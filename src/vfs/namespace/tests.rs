//! Unit tests of the inode table through its public methods.

use super::*;
use crate::remote::EntryKind;
use crate::remote::{Entry, ItemId, Version};
use std::time::Instant;
use std::time::{Duration, SystemTime};

fn entry(id: &str, kind: EntryKind, version: &str) -> Entry {
    Entry {
        id: ItemId::new(id),
        name: id.rsplit('/').next().unwrap().to_string(),
        kind,
        size: 3,
        mtime: SystemTime::UNIX_EPOCH,
        version: Some(Version::from_etag(version)),
    }
}

fn table() -> InodeTable {
    InodeTable::new(entry("", EntryKind::Directory, "r"), Instant::now())
}

#[test]
fn same_item_keeps_its_inode_and_reports_version_changes() {
    let t = table();
    let later = Instant::now() + Duration::from_secs(5);
    let a = t.upsert(ROOT_INO, entry("a", EntryKind::File, "1"), later, 1);
    assert!(a.replaced_tag.is_none());
    let b = t.upsert(ROOT_INO, entry("a", EntryKind::File, "2"), later, 1);
    assert_eq!(a.ino, b.ino);
    assert_eq!(b.replaced_tag, Some(Version::from_etag("1")));
    assert_eq!(t.get(a.ino).unwrap().lookups, 2);
}

#[test]
fn forget_drops_inode_at_zero_and_numbers_are_not_reused() {
    let t = table();
    let later = Instant::now() + Duration::from_secs(5);
    let a = t.upsert(ROOT_INO, entry("a", EntryKind::File, "1"), later, 2).ino;
    t.forget(a, 1);
    assert!(t.get(a).is_some());
    t.forget(a, 1);
    assert!(t.get(a).is_none());
    let again = t.upsert(ROOT_INO, entry("a", EntryKind::File, "1"), later, 1).ino;
    assert_ne!(a, again);
    t.forget(ROOT_INO, 100);
    assert!(t.get(ROOT_INO).is_some());
}

#[test]
fn listing_answers_lookups_only_while_fresh() {
    let t = table();
    let now = Instant::now();
    let later = now + Duration::from_secs(5);
    t.set_listing(ROOT_INO, vec![entry("a", EntryKind::File, "1")], later);
    assert!(matches!(t.listed_child(ROOT_INO, "a", now), Some(Some(_))));
    assert!(matches!(t.listed_child(ROOT_INO, "b", now), Some(None)));
    assert!(t.listed_child(ROOT_INO, "a", later).is_none());
}

#[test]
fn names_match_in_another_case_only_where_the_remote_says_so() {
    let now = Instant::now();
    let later = now + Duration::from_secs(5);
    let mut hello = entry("id-1", EntryKind::File, "1");
    hello.name = "Hello.txt".into();
    for ci in [false, true] {
        let t = table().with_case_insensitive_names(ci);
        t.set_listing(ROOT_INO, vec![hello.clone()], later);
        let found = |name: &str| t.listed_child(ROOT_INO, name, now).flatten().map(|e| e.name);
        assert_eq!(found("Hello.txt").as_deref(), Some("Hello.txt"));
        let other = ci.then(|| "Hello.txt".to_string());
        assert_eq!(found("HELLO.TXT"), other, "case-insensitive: {ci}");
        assert_eq!(t.known_child(ROOT_INO, "hello.TXT").map(|e| e.name), other);
        assert_eq!(found("Hello.tx"), None);
        t.listing_remove(ROOT_INO, "hello.txt");
        assert_eq!(found("Hello.txt").is_none(), ci, "removed by another spelling: {ci}");
    }
    assert!(same_name(true, "Straße Ä", "STRAßE ä"));
    assert!(!same_name(false, "a", "A"));
}

#[test]
fn relisting_drops_vanished_unreferenced_children() {
    let t = table();
    let later = Instant::now() + Duration::from_secs(5);
    let (listed, _) = t.set_listing(
        ROOT_INO,
        vec![entry("a", EntryKind::File, "1"), entry("b", EntryKind::File, "1")],
        later,
    );
    let (kept, _) = t.add_lookup(ROOT_INO, listed[1].0, &listed[1].1, later);
    let (_, replaced) = t.set_listing(ROOT_INO, vec![entry("b", EntryKind::File, "2")], later);
    assert_eq!(replaced.len(), 1);
    assert!(t.get(listed[0].0).is_none(), "unreferenced vanished child is dropped");
    assert!(t.get(kept).is_some(), "referenced child stays");
}

#[test]
fn a_listing_asked_for_before_our_changes_does_not_undo_them() {
    let t = table();
    let now = Instant::now();
    let later = now + Duration::from_secs(5);
    let (a, b) = (entry("a", EntryKind::File, "1"), entry("b", EntryKind::File, "1"));
    t.set_listing(ROOT_INO, vec![a.clone(), b.clone()], later);
    let asked_at = t.local_epoch();
    // While the next listing is on its way we delete b and a new c lands.
    t.listing_remove(ROOT_INO, "b");
    t.listing_insert(ROOT_INO, entry("c", EntryKind::File, "1"));
    let (children, _) = t.set_listing_asked_at(ROOT_INO, vec![a, b], later, asked_at);
    let mut names: Vec<String> = children.into_iter().map(|(_, e)| e.name).collect();
    names.sort();
    assert_eq!(names, ["a", "c"]);
    assert!(
        matches!(t.listed_child(ROOT_INO, "b", now), Some(None)),
        "b stays deleted"
    );
    assert!(
        matches!(t.listed_child(ROOT_INO, "c", now), Some(Some(_))),
        "c stays listed"
    );
    // A listing asked for after the changes is taken as it is.
    let fresh = vec![entry("a", EntryKind::File, "1")];
    let (children, _) = t.set_listing_asked_at(ROOT_INO, fresh, later, t.local_epoch());
    assert_eq!(children.len(), 1);
}

#[test]
fn cached_tag_tells_whether_page_cache_may_be_kept() {
    let t = table();
    let later = Instant::now() + Duration::from_secs(5);
    let a = t.upsert(ROOT_INO, entry("a", EntryKind::File, "1"), later, 1).ino;
    assert!(!t.note_cached_tag(a, &Version::from_etag("1")));
    assert!(t.note_cached_tag(a, &Version::from_etag("1")));
    assert!(!t.note_cached_tag(a, &Version::from_etag("2")));
}
