//! Live heap of the running daemon against its RSS, by allocating thread.
//!
//!   CARGO_TARGET_DIR=target cargo build --release --manifest-path tools/daemon-memory/Cargo.toml
//!   target/release/daemon-memory CONFIG LISTEN DATA_DIR RULES [STORE]
//!
//! Runs `incidentd serve` (as `serve --config CONFIG --listen LISTEN
//! --data-dir DATA_DIR --rules RULES [--store STORE]`) with a global
//! allocator that tags every block with the kind of thread that allocated
//! it (runtime worker, blocking pool, SQLite worker, other) and prints on
//! stderr, every 5 s, the live bytes per kind, the live blocks and the
//! RSS; once the live blocks stop changing after a load (run
//! `scripts/rss_per_alert.py` against it), mimalloc's own statistics. The
//! gap between live bytes and RSS is what the allocator keeps: that is how
//! BENCHMARKS.md entry 21 found mimalloc v3 holding ~50 MB over ~72 MB of
//! live data at 100k alerts. The tag costs 16 bytes per block, so compare
//! RSS between runs of this tool, not with the daemon's.

use incidentd::app::commands;
use incidentd::config::Overrides;
use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};

const KINDS: [&str; 6] = ["main", "worker", "blocking", "sqlite", "other", "unknown"];
static LIVE: [AtomicI64; 6] = [const { AtomicI64::new(0) }; 6];
static BIG: [AtomicI64; 6] = [const { AtomicI64::new(0) }; 6];
static BLOCKS: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static KIND: Cell<u8> = const { Cell::new(255) };
}

fn kind() -> usize {
    KIND.with(|k| {
        let v = k.get();
        if v < 254 {
            return v as usize;
        }
        if v == 254 {
            return 5;
        }
        k.set(254);
        let t = std::thread::current();
        let n = t.name().unwrap_or("");
        let v = if n == "main" {
            0
        } else if n.starts_with("tokio-runtime-worker") {
            // Blocking pool threads carry the same name; tell them apart
            // by whether the thread is a runtime worker (has a core).
            1
        } else if n.starts_with("sqlx-sqlite") {
            3
        } else if n.starts_with("blocking") {
            2
        } else {
            4
        };
        k.set(v);
        v as usize
    })
}

const H: usize = 16;

struct Tagging;

// SAFETY: each block is mimalloc's with a 16-byte (or alignment-sized)
// header in front holding the allocating thread's kind and the size.
unsafe impl GlobalAlloc for Tagging {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let h = H.max(l.align());
        let Ok(outer) = Layout::from_size_align(l.size() + h, l.align().max(H)) else {
            return std::ptr::null_mut();
        };
        // SAFETY: non-zero size.
        let p = unsafe { MiMalloc.alloc(outer) };
        if p.is_null() {
            return p;
        }
        let k = kind();
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        LIVE[k].fetch_add(l.size() as i64, Ordering::Relaxed);
        if l.size() >= 64 << 10 {
            BIG[k].fetch_add(l.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: the header lies inside the block.
        unsafe {
            let q = p.add(h);
            (q.sub(8) as *mut u64).write_unaligned(k as u64);
            q
        }
    }
    unsafe fn dealloc(&self, q: *mut u8, l: Layout) {
        let h = H.max(l.align());
        // SAFETY: written by alloc.
        let k = unsafe { (q.sub(8) as *const u64).read_unaligned() } as usize;
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        LIVE[k].fetch_sub(l.size() as i64, Ordering::Relaxed);
        if l.size() >= 64 << 10 {
            BIG[k].fetch_sub(l.size() as i64, Ordering::Relaxed);
        }
        let outer = Layout::from_size_align(l.size() + h, l.align().max(H)).expect("layout");
        // SAFETY: the block alloc made.
        unsafe { MiMalloc.dealloc(q.sub(h), outer) }
    }
}

#[global_allocator]
static GLOBAL: Tagging = Tagging;

fn rss() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
        .map_or(0, |k| k * 1024)
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    std::thread::Builder::new()
        .name("reporter".into())
        .spawn(|| {
            let mut last = 0;
            let mut printed = false;
            loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                let b = BLOCKS.load(Ordering::Relaxed);
                if b == last && b > 100_000 && !printed {
                    printed = true;
                    // SAFETY: prints mimalloc's statistics to stderr.
                    unsafe { libmimalloc_sys::mi_stats_print(std::ptr::null_mut()) };
                }
                last = b;
                let live: Vec<i64> = LIVE.iter().map(|x| x.load(Ordering::Relaxed)).collect();
                let big: Vec<i64> = BIG.iter().map(|x| x.load(Ordering::Relaxed)).collect();
                let mut s = String::new();
                for (i, n) in KINDS.iter().enumerate() {
                    s.push_str(&format!(
                        " {n}={:.1}M(big {:.1}M)",
                        live[i] as f64 / 1e6,
                        big[i] as f64 / 1e6
                    ));
                }
                eprintln!(
                    "MEM total={:.1}M blocks={} rss={:.1}M{s}",
                    live.iter().sum::<i64>() as f64 / 1e6,
                    BLOCKS.load(Ordering::Relaxed),
                    rss() as f64 / 1e6
                );
            }
        })
        .expect("reporter");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name_fn(|| {
            // The runtime's workers are its first threads.
            static N: AtomicI64 = AtomicI64::new(0);
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
            if N.fetch_add(1, Ordering::Relaxed) < workers {
                "tokio-runtime-worker".into()
            } else {
                "blocking".into()
            }
        })
        .build()
        .expect("runtime");
    let _ = rt.block_on(async move {
        commands::serve(
            Some(PathBuf::from(&a[1])),
            Overrides {
                listen: Some(a[2].clone()),
                data_dir: Some(PathBuf::from(&a[3])),
                rules_dir: Some(PathBuf::from(&a[4])),
                cmdb: None,
                store: a.get(5).cloned(),
            },
        )
        .await
    });
}
