//! Kernel benchmarks: `matmul` per weight type on real model shapes.
//!
//! - `tg/<shape>/<type>` (and `<type>-packed` for the types the engine packs at load,
//!   [`ferrite_quant::repack`]): one activation row (token generation); throughput is weight bytes
//!   streamed (criterion prints GB/s as "GiB/s").
//! - `pp/<shape>/<type>`: 512 activation rows (prompt processing); throughput is counted in
//!   FLOPs (2·n·k·batch) as "elements", so "Gelem/s" reads as GFLOP/s.
//! - `pool/...`: the persistent pool against rayon, for an empty operation (dispatch cost)
//!   and for a matrix-vector product split the same way.
//!
//! Threads: `FERRITE_BENCH_THREADS` (default 2). `FERRITE_ISA=avx2|scalar` lowers the
//! kernel level. Shapes: SmolLM2-135M FFN up (k=576, n=1536) and a 1B llama FFN up
//! (k=2048, n=5632).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrite_gguf::GgmlType;
use ferrite_quant::kernels;
use ferrite_quant::matmul::{matmul, matmul_packed, BatchInvariant, ThreadPool};
use ferrite_quant::repack;
use half::{bf16, f16};

const SHAPES: &[(&str, usize, usize)] = &[("smollm2", 576, 1536), ("1b", 2048, 5632)];

const TG_TYPES: &[GgmlType] = &[
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_XS,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

const PP_TYPES: &[GgmlType] = &[
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

fn threads() -> usize {
    std::env::var("FERRITE_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Random weights with finite, moderate f16 scales (the kernels' speed does not depend on
/// the values, but NaN or subnormal scales could).
fn weights(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    match ty {
        GgmlType::F32 => (0..n).flat_map(|_| rng.f32().to_le_bytes()).collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| f16::from_f32(rng.f32()).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| bf16::from_f32(rng.f32()).to_le_bytes())
            .collect(),
        _ => {
            let fields: &[usize] = match ty {
                GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
                GgmlType::Q2_K => &[80, 82],
                GgmlType::Q3_K => &[108],
                GgmlType::Q6_K => &[208],
                _ => &[0],
            };
            let ts = ty.type_size() as usize;
            let mut w: Vec<u8> = (0..ty.row_bytes(n as u64).unwrap())
                .map(|_| rng.next() as u8)
                .collect();
            for b in w.chunks_exact_mut(ts) {
                for &at in fields {
                    b[at..at + 2].copy_from_slice(&f16::from_f32(rng.f32() * 0.05).to_le_bytes());
                }
            }
            w
        }
    }
}

fn bench_matmul(c: &mut Criterion, kind: &str, n_b: usize, types: &[GgmlType]) {
    let pool = ThreadPool::new(threads());
    let mut rng = Rng(42);
    for &(shape, k, n) in SHAPES {
        let mut g = c.benchmark_group(format!("{kind}/{shape}"));
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_secs(if n_b == 1 { 1 } else { 3 }));
        g.sample_size(10);
        let x: Vec<f32> = (0..n_b * k).map(|_| rng.f32()).collect();
        let mut y = vec![0f32; n_b * n];
        for &ty in types {
            if !(k as u64).is_multiple_of(ty.block_size()) {
                // e.g. k-quants on SmolLM2's 576-wide rows: such files use other types there.
                continue;
            }
            let w = weights(&mut rng, ty, n * k);
            if n_b == 1 {
                g.throughput(Throughput::Bytes(w.len() as u64));
            } else {
                g.throughput(Throughput::Elements((2 * n * k * n_b) as u64));
            }
            let isa = kernels::kernel(ty).map(|k| format!("{:?}", k.isa));
            let id = BenchmarkId::new(ty.to_string(), isa.unwrap_or_default());
            g.bench_function(id, |b| {
                b.iter(|| {
                    matmul(&pool, ty, black_box(&w), n, k, black_box(&x), n_b, &mut y).unwrap()
                })
            });
            if repack::worth_packing(ty) {
                // The layout the engine loads these types into on this CPU.
                let mut pw = vec![0u8; n * repack::packed_row_bytes(ty, k).unwrap()];
                repack::pack_rows(ty, k, &w, &mut pw);
                let isa = kernels::packed_kernel(ty).map(|k| format!("{:?}", k.isa));
                let id = BenchmarkId::new(format!("{ty}-packed"), isa.unwrap_or_default());
                g.bench_function(id, |b| {
                    b.iter(|| {
                        matmul_packed(&pool, ty, black_box(&pw), n, k, black_box(&x), n_b, &mut y)
                            .unwrap()
                    })
                });
                if n_b == 1 {
                    // A one-token prompt piece in the server: the GEMM's arithmetic on one
                    // row, so that it gets the bits the prompt's other tokens get.
                    let id = BenchmarkId::new(format!("{ty}-packed-gemm-row"), "rowwise");
                    g.bench_function(id, |b| {
                        let _rows = BatchInvariant::with_gemm_rows(1);
                        b.iter(|| {
                            matmul_packed(&pool, ty, black_box(&pw), n, k, black_box(&x), 1, &mut y)
                                .unwrap()
                        })
                    });
                }
                if n_b > 1 {
                    // What the server's batches (prompt chunks included) run: the row
                    // kernels, which give every row the bits it gets alone.
                    let id = BenchmarkId::new(format!("{ty}-packed-invariant"), "rows");
                    g.bench_function(id, |b| {
                        let _rows = BatchInvariant::enter();
                        b.iter(|| {
                            matmul_packed(
                                &pool,
                                ty,
                                black_box(&pw),
                                n,
                                k,
                                black_box(&x),
                                n_b,
                                &mut y,
                            )
                            .unwrap()
                        })
                    });
                }
            }
        }
        g.finish();
    }
}

fn tg(c: &mut Criterion) {
    bench_matmul(c, "tg", 1, TG_TYPES);
}

fn pp(c: &mut Criterion) {
    bench_matmul(c, "pp512", 512, PP_TYPES);
}

/// The persistent pool against rayon: per-operation dispatch, and a Q4_0 matrix-vector
/// product on the 1B shape with the same row chunks and kernel.
fn pool_vs_rayon(c: &mut Criterion) {
    let n_threads = threads();
    let pool = ThreadPool::new(n_threads);
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("pool");
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));
    g.bench_function("dispatch/ferrite", |b| {
        b.iter(|| {
            pool.run(|i, _| {
                black_box(i);
            })
        })
    });
    g.bench_function("dispatch/rayon", |b| {
        b.iter(|| {
            rayon.broadcast(|ctx| {
                black_box(ctx.index());
            })
        })
    });

    let (k, n) = (2048, 5632);
    let ty = GgmlType::Q4_0;
    let mut rng = Rng(7);
    let w = weights(&mut rng, ty, n * k);
    let x: Vec<f32> = (0..k).map(|_| rng.f32()).collect();
    let mut y = vec![0f32; n];
    let kern = kernels::kernel(ty).unwrap();
    let rb = w.len() / n;
    g.throughput(Throughput::Bytes(w.len() as u64));
    g.bench_function("matvec_q4_0_1b/ferrite", |b| {
        b.iter(|| matmul(&pool, ty, &w, n, k, &x, 1, &mut y))
    });
    let mut a = vec![0u8; kern.act.row_bytes(k).unwrap()];
    g.bench_function("matvec_q4_0_1b/rayon", |b| {
        b.iter(|| {
            use rayon::prelude::*;
            kernels::quantize_row(kern.act, &x, &mut a);
            let a = &a;
            rayon.install(|| {
                y.par_chunks_mut(16).enumerate().for_each(|(c, ys)| {
                    for (i, v) in ys.iter_mut().enumerate() {
                        let r = c * 16 + i;
                        *v = kern.dot(&w[r * rb..(r + 1) * rb], a);
                    }
                })
            })
        })
    });
    g.finish();
}

/// The ceiling generation runs into on large models: reading 768 MiB (more than any cache)
/// once per iteration on the pool's threads, each thread one contiguous run, like a
/// matrix-vector product. Compare with `tg/1b` (whose matrices stay in L3) and with
/// `ferrite bench` tokens/s × model bytes.
fn memory_stream(c: &mut Criterion) {
    let pool = ThreadPool::new(threads());
    let data: Vec<u64> = (0..(768usize << 20) / 8).map(|i| i as u64).collect();
    let mut g = c.benchmark_group("memory");
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(10);
    g.throughput(Throughput::Bytes((data.len() * 8) as u64));
    g.bench_function("stream_read_768mib", |b| {
        b.iter(|| {
            pool.run(|t, n| {
                let per = data.len().div_ceil(n);
                let run = &data[(t * per).min(data.len())..((t + 1) * per).min(data.len())];
                // Eight independent sums, so the adds never wait on each other.
                let mut acc = [0u64; 8];
                for c in run.chunks_exact(8) {
                    for (a, v) in acc.iter_mut().zip(c) {
                        *a = a.wrapping_add(*v);
                    }
                }
                black_box(acc);
            })
        })
    });
    g.finish();
}

criterion_group!(benches, pool_vs_rayon, tg, pp, memory_stream);
criterion_main!(benches);
