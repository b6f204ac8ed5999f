//! Allocation stays bounded by the file's size: hostile counts in a tiny file must not make the
//! parser reserve memory for what they claim. A counting global allocator records the largest
//! single request and the peak of live bytes while each hostile file is parsed.
//!
//! One test only: the counters are process-wide and tests run on parallel threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(live, Relaxed);
        LARGEST.fetch_max(l.size(), Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&n_tensors.to_le_bytes());
    v.extend_from_slice(&n_kv.to_le_bytes());
    v
}

fn kv(v: &mut Vec<u8>, key: &str, ty: u32, val: &[u8]) {
    v.extend_from_slice(&(key.len() as u64).to_le_bytes());
    v.extend_from_slice(key.as_bytes());
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(val);
}

#[test]
fn hostile_counts_allocate_nothing_large() {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    files.push(("2^60 tensors".into(), header(1 << 60, 0)));
    files.push(("2^60 keys".into(), header(0, 1 << 60)));
    // The largest counts a 100-byte file can hold without being refused on count alone.
    files.push(("4 tensors claimed in 100 bytes".into(), header(3, 0)));
    for elem in 0u32..=12 {
        let mut v = header(0, 1);
        let mut val = elem.to_le_bytes().to_vec();
        val.extend_from_slice(&(1u64 << 60).to_le_bytes());
        kv(&mut v, "big", 9, &val);
        files.push((format!("2^60 elements of type {elem}"), v));
    }
    let mut v = header(0, 1);
    kv(&mut v, "s", 8, &(1u64 << 60).to_le_bytes());
    files.push(("2^60-byte string".into(), v));
    let mut v = header(1, 0);
    v.extend_from_slice(&4u64.to_le_bytes());
    v.extend_from_slice(b"name");
    v.extend_from_slice(&4u32.to_le_bytes());
    for _ in 0..4 {
        v.extend_from_slice(&(1u64 << 15).to_le_bytes());
    }
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes());
    files.push(("2^60-element tensor".into(), v));

    for (what, mut bytes) in files {
        bytes.resize(100, 0);
        LARGEST.store(0, Relaxed);
        PEAK.store(LIVE.load(Relaxed), Relaxed);
        let base = LIVE.load(Relaxed);
        let r = ferrite_gguf::parse(&bytes);
        let largest = LARGEST.load(Relaxed);
        let peak = PEAK.load(Relaxed) - base;
        assert!(r.is_err(), "{what}: accepted");
        // Error messages and a few small vectors only.
        assert!(largest < 4096, "{what}: allocated {largest} bytes at once");
        assert!(peak < 16384, "{what}: peak {peak} bytes");
    }
}
