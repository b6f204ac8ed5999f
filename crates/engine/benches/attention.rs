//! Attention on the KV cache at the shapes that matter: one generated token (SmolLM2's 9
//! query heads over 3 KV heads of 64; Gemma 3 270M's 4 over 1 of 256) at short and long
//! (up to 4096 positions) context, and a 512-token prompt. Throughput is multiply-adds (q·k and p·v) per second,
//! counted as 2 FLOP each.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferrite_engine::kv_cache::{KvCache, KvType};
use ferrite_engine::ops::{attention, AttnParams};
use ferrite_quant::matmul::ThreadPool;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    // Threads: FERRITE_BENCH_THREADS (default 1), as in the kernel benchmarks.
    let threads = std::env::var("FERRITE_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let pool = ThreadPool::new(threads);
    let shapes = [
        ("smollm2", 9, 3, 64, 1, 64),
        ("smollm2", 9, 3, 64, 1, 512),
        ("smollm2", 9, 3, 64, 1, 4095),
        ("gemma3", 4, 1, 256, 1, 512),
        ("smollm2", 9, 3, 64, 512, 0),
    ];
    for (name, n_head, n_head_kv, hd, n_tok, pos0) in shapes {
        let p = AttnParams {
            n_head,
            n_head_kv,
            head_dim_k: hd,
            head_dim_v: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            softcap: None,
            window: None,
        };
        let n_kv = pos0 + n_tok;
        let dim = n_head_kv * hd;
        let mut kv = KvCache::new(KvType::F16, 1, 4096, dim, dim);
        // Deterministic, varied values: scores of a few units, like a real model's.
        let vals = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + seed) % 1000) as f32 / 500.0 - 1.0) * 2.0)
                .collect()
        };
        kv.write(0, 0, &vals(n_kv * dim, 1), &vals(n_kv * dim, 2));
        let q = vals(n_tok * n_head * hd, 3);
        let mut out = vec![0.0; n_tok * n_head * hd];
        let visible: usize = (pos0 + 1..=n_kv).sum();
        g.throughput(Throughput::Elements((2 * 2 * n_head * hd * visible) as u64));
        let id = format!("{name}/tokens{n_tok}/ctx{n_kv}");
        g.bench_function(id, |b| {
            b.iter(|| {
                let (k, v) = kv.view(0, n_kv);
                attention(&pool, &q, k, v, pos0, n_tok, &p, &mut out);
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
