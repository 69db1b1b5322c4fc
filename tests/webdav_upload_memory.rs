//! An upload streams the file from disk: the client's memory does not grow with the file's size.
//! Measured with a counting global allocator, which is why this test has a binary of its own (no
//! other test allocates alongside it), against Apache (out of process, so the server's buffers do
//! not count).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use cloudmount::remote::{ItemId, Precondition, Remote, UploadCtx, UploadSource, UploadTarget};
use cloudmount::webdav::DavRemote;
use common::apache::ApacheServer;
use common::files;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_128_mib_upload_needs_a_few_mib_of_memory() {
    const LEN: u64 = 128 << 20;
    const LIMIT: usize = 24 << 20;
    let server = ApacheServer::start();
    let stage = tempfile::tempdir().unwrap();
    let src = files::put_random_file(stage.path(), "big.bin", 11, LEN);
    let small = files::put_file(stage.path(), "small.bin", b"warm-up");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let r = DavRemote::new(common::remote::dav_config(
        &server.url(),
        Duration::from_secs(60),
        Duration::from_secs(5),
    ))
    .unwrap();
    let root = ItemId::new("");
    let t = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    rt.block_on(async {
        // Warm up: the capability probe, a connection in the pool, lazily built statics.
        r.upload(
            UploadTarget::new(&root, "small.bin", Precondition::Absent),
            UploadSource::file(&small, t),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
        let baseline = CURRENT.load(Ordering::SeqCst);
        PEAK.store(baseline, Ordering::SeqCst);
        let e = r
            .upload(
                UploadTarget::new(&root, "big.bin", Precondition::Absent),
                UploadSource::file(&src, t),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        let grew = PEAK.load(Ordering::SeqCst).saturating_sub(baseline);
        assert_eq!(e.size, LEN);
        assert!(
            grew < LIMIT,
            "uploading {} MiB took {} MiB of memory at the peak",
            LEN >> 20,
            grew >> 20
        );
        eprintln!("peak growth during a {} MiB upload: {} KiB", LEN >> 20, grew >> 10);
    });
    // Byte-exact on the server.
    files::assert_same_files(&server.root().join("big.bin"), &src, "the uploaded file on the server");
}
