//! `ferrite bench`: prompt-processing and generation speed, measured like llama.cpp's
//! `llama-bench` so the two can be compared on the same files and thread counts.
//!
//! `ppN`: N prompt tokens evaluated in one call (batches of 512), from an empty context, no
//! sampling. `tgN`: N tokens evaluated one at a time from an empty context. With `-d D`
//! (`ppN @ dD`, `tgN @ dD`) the context first holds D tokens, evaluated once per test and
//! untimed, and each repetition starts again from them: attention then reads D cached
//! positions per token, the long-conversation case. Each test runs once to warm up, then
//! `-r` times; tokens are pseudo-random ids (seeded), as in llama-bench.
//!
//! Generation reads every weight once per token, so beyond a few hundred MB it runs at the
//! speed of memory, not of the kernels. Each `tgN` result therefore also gives the bandwidth
//! it achieved (bytes read per token × tokens/s), and `--roofline` measures what the machine
//! can stream at the same thread count, right before each repetition, so the two can be
//! compared: a tg result near 100% of its roofline can only get faster by reading fewer bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use ferrite_engine::{LoadOptions, Model, SessionOptions};
use ferrite_gguf::GgmlType;
use ferrite_quant::pool::ThreadPool;

#[derive(clap::Args)]
pub struct Args {
    /// Model files (GGUF); also accepted as `-m MODEL`, repeatable.
    models: Vec<PathBuf>,
    #[arg(short = 'm', long = "model")]
    model_flags: Vec<PathBuf>,
    /// Prompt tokens for the ppN test (0: skip). Comma-separated for several.
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Generated tokens for the tgN test (0: skip). Comma-separated for several.
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// Context depth: tokens already in the KV cache when each test starts (untimed).
    /// Comma-separated for several.
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    n_depth: Vec<usize>,
    /// Thread counts, e.g. `-t 1,2` (default: physical cores).
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Measured repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    reps: usize,
    /// Print one JSON array of results instead of a table.
    #[arg(long)]
    json: bool,
    /// Before each tgN repetition, measure the memory read bandwidth of the same number of
    /// threads, and report generation's bandwidth as a share of it.
    #[arg(long)]
    roofline: bool,
}

/// Bytes the bandwidth probe streams: far more than any last-level cache, so every pass
/// reads memory.
const PROBE_BYTES: usize = 512 << 20;

/// Chunk of the probe buffer one thread takes at a time, as matmul deals out weight rows.
const PROBE_CHUNK: usize = 1 << 18;

/// Best of three passes of `pool`'s threads reading all of `buf`, in bytes/s. The buffer
/// holds non-zero data the caller wrote, so its pages are real memory, not the shared zero
/// page.
fn read_bandwidth(pool: &ThreadPool, buf: &[u64]) -> f64 {
    let sink = AtomicU64::new(0);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        pool.run_chunks(buf.len().div_ceil(PROBE_CHUNK / 8), |c| {
            let words = &buf[c * PROBE_CHUNK / 8..((c + 1) * PROBE_CHUNK / 8).min(buf.len())];
            let folded = words.iter().fold(0u64, |acc, &w| acc ^ w);
            sink.fetch_xor(folded, Ordering::Relaxed);
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink.load(Ordering::Relaxed));
    std::mem::size_of_val(buf) as f64 / best
}

struct Info {
    path: String,
    arch: String,
    ty: String,
    size: u64,
    params: u64,
}

fn model_info(path: &std::path::Path, model: &Model) -> Info {
    let file = model.gguf();
    let mut by_type: BTreeMap<GgmlType, u64> = BTreeMap::new();
    let (mut size, mut params) = (0, 0);
    for t in file.tensors() {
        size += t.n_bytes;
        params += t.n_elements;
        if t.dims.len() >= 2 {
            *by_type.entry(t.ty).or_default() += t.n_bytes;
        }
    }
    // The file type as its writer declared it (llama-bench prints the same), else the type
    // holding most matrix bytes (a Q4_K_M file is mostly Q5_0/Q8_0 bytes on small models).
    let declared = file
        .metadata()
        .get_u64("general.file_type")
        .ok()
        .flatten()
        .and_then(|id| {
            super::quantize::TARGETS
                .iter()
                .find(|t| u64::from(t.ftype) == id)
        })
        .map(|t| t.name.to_string());
    let ty = declared.unwrap_or_else(|| {
        by_type
            .iter()
            .max_by_key(|(_, b)| **b)
            .map(|(t, _)| t.to_string())
            .unwrap_or_default()
    });
    Info {
        path: path.display().to_string(),
        arch: model.config().arch.clone(),
        ty,
        size,
        params,
    }
}

struct Sample {
    test: String,
    threads: usize,
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    ts: Vec<f64>,
    /// tgN tests: mean bytes read per generated token ([`ferrite_engine::models::Decoder::bytes_per_token`]).
    bytes_per_token: Option<u64>,
    /// With `--roofline`: the machine's read bandwidth (bytes/s) before each repetition.
    machine_bw: Vec<f64>,
}

impl Sample {
    /// Mean achieved bandwidth of a tgN test, bytes/s.
    fn achieved_bw(&self) -> Option<f64> {
        self.bytes_per_token.map(|b| b as f64 * mean_sd(&self.ts).0)
    }

    /// Mean share of the machine's read bandwidth each repetition achieved.
    fn roofline_share(&self) -> Option<f64> {
        let b = self.bytes_per_token? as f64;
        if self.machine_bw.len() != self.ts.len() || self.ts.is_empty() {
            return None;
        }
        let shares: Vec<f64> = self
            .ts
            .iter()
            .zip(&self.machine_bw)
            .map(|(t, bw)| b * t / bw)
            .collect();
        Some(mean_sd(&shares).0)
    }
}

fn tokens(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % n_vocab as u64) as u32
        })
        .collect()
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut paths = args.models.clone();
    paths.extend(args.model_flags.iter().cloned());
    if paths.is_empty() {
        bail!("no model given (ferrite bench MODEL.gguf or -m MODEL.gguf)");
    }
    if args.reps == 0 {
        bail!("-r must be at least 1");
    }
    let threads = if args.threads.is_empty() {
        vec![ferrite_engine::session::physical_cores()]
    } else {
        args.threads.clone()
    };
    if threads.contains(&0) {
        bail!("-t: thread counts must be at least 1");
    }
    let probe: Option<Vec<u64>> = args
        .roofline
        .then(|| (0..PROBE_BYTES as u64 / 8).map(|i| i | 1).collect());
    let mut results = Vec::new();
    if !args.json {
        print!("| model | size | params | type | threads | test | t/s | GB/s |");
        println!(
            "{}",
            if args.roofline {
                " roofline GB/s | % |"
            } else {
                ""
            }
        );
        print!("| --- | ---: | ---: | --- | ---: | --- | ---: | ---: |");
        println!("{}", if args.roofline { " ---: | ---: |" } else { "" });
    }
    for path in &paths {
        let model = Model::load(path, LoadOptions::default())
            .with_context(|| format!("loading {}", path.display()))?;
        let info = model_info(path, &model);
        let n_vocab = model.config().n_vocab;
        for &t in &threads {
            let mut tests: Vec<(usize, usize, usize)> = Vec::new();
            for &depth in &args.n_depth {
                tests.extend(
                    args.n_prompt
                        .iter()
                        .filter(|&&p| p > 0)
                        .map(|&p| (p, 0, depth)),
                );
                tests.extend(
                    args.n_gen
                        .iter()
                        .filter(|&&n| n > 0)
                        .map(|&n| (0, n, depth)),
                );
            }
            for (np, ng, depth) in tests {
                let opts = SessionOptions {
                    n_ctx: Some((depth + np + ng).max(16)),
                    n_threads: Some(t),
                    ..SessionOptions::default()
                };
                let kv_type = opts.kv_type;
                let mut session = model.session(opts)?;
                let toks = tokens(np.max(ng), n_vocab, 1234);
                if depth > 0 {
                    session.eval(&tokens(depth, n_vocab, 4321))?;
                }
                let mut ts = Vec::new();
                let mut machine_bw = Vec::new();
                for rep in 0..=args.reps {
                    session.truncate(depth);
                    if rep > 0 && ng > 0 {
                        if let Some(buf) = &probe {
                            machine_bw.push(read_bandwidth(session.pool(), buf));
                        }
                    }
                    let start = Instant::now();
                    if np > 0 {
                        session.eval(&toks[..np])?;
                    } else {
                        for &tok in &toks[..ng] {
                            session.eval(&[tok])?;
                        }
                    }
                    let secs = start.elapsed().as_secs_f64();
                    if rep > 0 {
                        ts.push((np + ng) as f64 / secs);
                    }
                }
                // Mean bytes per generated token over the test's positions.
                let bytes_per_token = (ng > 0).then(|| {
                    let decoder = model.decoder();
                    (depth..depth + ng)
                        .map(|pos| decoder.bytes_per_token(pos, kv_type))
                        .sum::<u64>()
                        / ng as u64
                });
                let test = if np > 0 {
                    format!("pp{np}")
                } else {
                    format!("tg{ng}")
                };
                let s = Sample {
                    test: if depth > 0 {
                        format!("{test} @ d{depth}")
                    } else {
                        test
                    },
                    threads: t,
                    n_prompt: np,
                    n_gen: ng,
                    n_depth: depth,
                    ts,
                    bytes_per_token,
                    machine_bw,
                };
                let (m, sd) = mean_sd(&s.ts);
                let gbs =
                    |bw: Option<f64>| bw.map_or("-".to_string(), |b| format!("{:.1}", b / 1e9));
                if !args.json {
                    print!(
                        "| {} | {:.2} MiB | {:.2} M | {} | {} | {} | {m:.2} ± {sd:.2} | {} |",
                        info.arch,
                        info.size as f64 / (1024.0 * 1024.0),
                        info.params as f64 / 1e6,
                        info.ty,
                        t,
                        s.test,
                        gbs(s.achieved_bw()),
                    );
                    if args.roofline {
                        let machine = (!s.machine_bw.is_empty()).then(|| mean_sd(&s.machine_bw).0);
                        let share = s
                            .roofline_share()
                            .map_or("-".to_string(), |x| format!("{:.0}", 100.0 * x));
                        print!(" {} | {share} |", gbs(machine));
                    }
                    println!();
                }
                let mut result = serde_json::json!({
                    "model_filename": info.path,
                    "model_arch": info.arch,
                    "model_type": info.ty,
                    "model_size": info.size,
                    "model_n_params": info.params,
                    "n_threads": s.threads,
                    "test": s.test,
                    "n_prompt": s.n_prompt,
                    "n_gen": s.n_gen,
                    "n_depth": s.n_depth,
                    "avg_ts": m,
                    "stddev_ts": sd,
                    "samples_ts": s.ts,
                    "isa": format!("{:?}", ferrite_quant::kernels::Isa::best()),
                });
                if let Some(b) = s.bytes_per_token {
                    result["bytes_per_token"] = b.into();
                    result["avg_bytes_per_s"] = s.achieved_bw().unwrap_or(0.0).into();
                }
                if !s.machine_bw.is_empty() {
                    result["samples_machine_read_bytes_per_s"] = s.machine_bw.clone().into();
                    result["avg_roofline_share"] = s.roofline_share().unwrap_or(0.0).into();
                }
                results.push(result);
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}
