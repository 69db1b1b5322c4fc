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
        meta: Default::default(),
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

fn local_content(key: &str) -> crate::vfs::local::LocalContent {
    let file = tempfile::tempfile().unwrap();
    let mut local = crate::vfs::local::LocalContent::new(
        key.into(),
        crate::vfs::local::NodeId::Local,
        (
            std::path::PathBuf::from(format!("/nonexistent/{key}")),
            std::sync::Arc::new(file),
        ),
        0,
        SystemTime::UNIX_EPOCH,
    );
    local.state = crate::vfs::local::FileState::Dirty;
    local.writers = 1;
    local
}

fn local_entry(key: &str, name: &str) -> Entry {
    let mut e = entry(&format!("\0pending:{key}"), EntryKind::File, "1");
    e.name = name.into();
    e.version = None;
    e
}

#[test]
fn the_name_indexes_follow_renames_detaches_and_removals() {
    let now = Instant::now();
    let later = now + Duration::from_secs(5);
    let t = table().with_case_insensitive_names(true);
    t.set_listing(ROOT_INO, vec![], later);
    let a = t.insert_local(ROOT_INO, local_entry("k1", "Notes.txt"), local_content("k1"));
    assert_eq!(t.by_local_key("k1"), Some(a));
    assert!(matches!(t.listed_child(ROOT_INO, "NOTES.TXT", now), Some(Some(e)) if e.name == "Notes.txt"));
    t.with_node(a, |n| n.entry.name = "Plan.txt".into());
    assert!(
        matches!(t.listed_child(ROOT_INO, "notes.txt", now), Some(None)),
        "the old name is free"
    );
    assert!(matches!(t.listed_child(ROOT_INO, "plan.TXT", now), Some(Some(e)) if e.name == "Plan.txt"));
    assert_eq!(
        t.known_child(ROOT_INO, "PLAN.txt").map(|e| e.name).as_deref(),
        Some("Plan.txt")
    );
    t.detach(a);
    assert!(
        matches!(t.listed_child(ROOT_INO, "Plan.txt", now), Some(None)),
        "detached: no lookup finds it"
    );
    assert_eq!(t.by_local_key("k1"), Some(a), "its content still has its key");
    t.remove_item(a);
    assert_eq!(t.by_local_key("k1"), None);
    assert!(t.local_below(ROOT_INO).is_empty());
}

/// The unit-level twin of tests/vfs_namespace.rs, with names compared case-insensitively (the
/// Graph case, which the in-memory remote does not have): creating a file, finding it under
/// another spelling and landing its upload cost the same with 10,000 files in the folder as
/// with none.
#[test]
fn a_create_costs_the_same_in_a_full_folder_where_names_ignore_case() {
    let later = Instant::now() + Duration::from_secs(3600);
    let t = table().with_case_insensitive_names(true);
    t.set_listing(ROOT_INO, vec![entry("dir", EntryKind::Directory, "1")], later);
    let dir = t
        .upsert(ROOT_INO, entry("dir", EntryKind::Directory, "1"), later, 1)
        .ino;
    t.set_listing(dir, vec![], later);
    let mut costs = Vec::new();
    for i in 0..10_000u32 {
        let before = t.work();
        let (key, name) = (format!("k{i}"), format!("File-{i}.TXT"));
        assert!(matches!(
            t.listed_child(dir, &name.to_lowercase(), Instant::now()),
            Some(None)
        ));
        assert_eq!(t.path_of(dir).as_deref(), Some("dir"));
        let ino = t.insert_local(dir, local_entry(&key, &name), local_content(&key));
        assert!(t.get(dir).is_some());
        assert!(matches!(
            t.listed_child(dir, &name.to_uppercase(), Instant::now()),
            Some(Some(_))
        ));
        // Its upload lands: the node takes its server id and the listing the name.
        let landed = entry(&format!("dir/{name}"), EntryKind::File, "1");
        assert_eq!(t.by_local_key(&key), Some(ino));
        t.with_node(ino, |n| {
            n.local = None;
            n.entry = landed.clone();
        });
        t.listing_insert(dir, landed);
        t.forget(ino, 1);
        costs.push(t.work() - before);
    }
    let (first, last) = (costs[..1000].iter().sum::<u64>(), costs[9000..].iter().sum::<u64>());
    assert!(last <= 2 * first, "first 1,000: {first}, last 1,000: {last}");
    assert_eq!(t.listing_of(dir).unwrap().len(), 10_000);
}
