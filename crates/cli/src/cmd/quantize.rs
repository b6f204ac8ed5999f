//! `ferrite quantize IN OUT TYPE`: a copy of a model with its weights in another type, like
//! llama-quantize.
//!
//! TYPE is a tensor type (every weight matrix gets it) or one of llama.cpp's mixtures
//! (`Q4_K_M`, ...), whose rules give some tensors more bits: the output projection (or the tied
//! token embedding), and in the `_M`/`_L` mixes part of `attn_v`/`ffn_down`, which quantization
//! hurts most. Norms and other 1-D tensors stay F32. A tensor whose rows are not a whole number
//! of the chosen type's blocks falls back to a compatible type (as llama.cpp does) and the
//! command says so.
//!
//! The output is streamed: the header (all tensor types are decided up front) is written
//! first, then one tensor at a time, so memory holds one tensor's output plus per-thread
//! scratch, whatever the model size. The output is written to `OUT.part` and renamed at the end.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use ferrite_gguf::{GgmlType, GgufFile, HeaderWriter, Metadata, TensorInfo, TensorSpec, Value};
use ferrite_quant::quantize::{can_quantize, quantize, uses_imatrix};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF model
    input: PathBuf,
    /// Output GGUF file
    output: PathBuf,
    /// Target: a mixture (Q4_K_M, Q4_K_S, Q5_K_M, Q5_K_S, Q3_K_M, Q3_K_S, Q3_K_L, Q2_K,
    /// Q2_K_S, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, F16, BF16, F32)
    /// or a plain tensor type (Q4_K, Q5_K, Q3_K, MXFP4)
    #[arg(value_name = "TYPE")]
    ty: String,
    /// Allow input tensors that are already quantized (quality is lost twice)
    #[arg(long)]
    allow_requantize: bool,
    /// Every weight matrix gets TYPE: no mixture rules (fallbacks still apply)
    #[arg(long)]
    pure: bool,
    /// Importance matrix from llama-imatrix (GGUF, or the legacy .dat format)
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// Worker threads (default: all cores)
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// No progress bar
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// A target: llama.cpp's `LLAMA_FTYPE` id (written as `general.file_type`), its base tensor
/// type, and which mixture rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: &'static str,
    pub ftype: u32,
    pub base: GgmlType,
    pub mix: Mix,
}

/// The mixture rule sets of llama.cpp's `llama_tensor_get_type` that ferrite implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Only the output rule (and fallbacks).
    Plain,
    Q2K,
    Q2KS,
    Q3KS,
    Q3KM,
    Q3KL,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
    Iq4,
    Ternary,
    /// Every tensor gets the base type (plain tensor-type targets).
    None,
}

const fn t(name: &'static str, ftype: u32, base: GgmlType, mix: Mix) -> Target {
    Target {
        name,
        ftype,
        base,
        mix,
    }
}

/// Targets by name; ftype ids are llama.cpp's `LLAMA_FTYPE_MOSTLY_*`.
pub const TARGETS: &[Target] = &[
    t("F32", 0, GgmlType::F32, Mix::None),
    t("F16", 1, GgmlType::F16, Mix::None),
    t("BF16", 32, GgmlType::BF16, Mix::None),
    t("Q4_0", 2, GgmlType::Q4_0, Mix::Plain),
    t("Q4_1", 3, GgmlType::Q4_1, Mix::Plain),
    t("Q8_0", 7, GgmlType::Q8_0, Mix::Plain),
    t("Q5_0", 8, GgmlType::Q5_0, Mix::Plain),
    t("Q5_1", 9, GgmlType::Q5_1, Mix::Plain),
    t("Q2_K", 10, GgmlType::Q2_K, Mix::Q2K),
    t("Q3_K_S", 11, GgmlType::Q3_K, Mix::Q3KS),
    t("Q3_K_M", 12, GgmlType::Q3_K, Mix::Q3KM),
    t("Q3_K_L", 13, GgmlType::Q3_K, Mix::Q3KL),
    t("Q4_K_S", 14, GgmlType::Q4_K, Mix::Q4KS),
    t("Q4_K_M", 15, GgmlType::Q4_K, Mix::Q4KM),
    t("Q5_K_S", 16, GgmlType::Q5_K, Mix::Q5KS),
    t("Q5_K_M", 17, GgmlType::Q5_K, Mix::Q5KM),
    t("Q6_K", 18, GgmlType::Q6_K, Mix::Plain),
    t("Q2_K_S", 21, GgmlType::Q2_K, Mix::Q2KS),
    t("IQ4_NL", 25, GgmlType::IQ4_NL, Mix::Iq4),
    t("IQ4_XS", 30, GgmlType::IQ4_XS, Mix::Iq4),
    t("TQ1_0", 36, GgmlType::TQ1_0, Mix::Ternary),
    t("TQ2_0", 37, GgmlType::TQ2_0, Mix::Ternary),
    // Plain tensor types without a mixture of their own: every matrix gets the type.
    t("Q3_K", 12, GgmlType::Q3_K, Mix::None),
    t("Q4_K", 15, GgmlType::Q4_K, Mix::None),
    t("Q5_K", 17, GgmlType::Q5_K, Mix::None),
    t("MXFP4", 38, GgmlType::MXFP4, Mix::None),
];

pub fn parse_target(s: &str) -> anyhow::Result<Target> {
    if let Some(t) = TARGETS.iter().find(|t| t.name.eq_ignore_ascii_case(s)) {
        return Ok(*t);
    }
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    bail!(
        "unknown quantization type '{s}'; expected one of {}",
        names.join(", ")
    )
}

/// What the rules need to know about the model.
#[derive(Debug, Default)]
pub struct ModelFacts {
    /// `ffn_down` tensors in the file: llama.cpp's layer count for the `ffn_down` rules.
    pub n_ffn_down: usize,
    pub n_attention_wv: usize,
    pub n_gqa: u64,
    pub n_expert: u64,
    pub has_output: bool,
    pub has_imatrix: bool,
}

impl ModelFacts {
    pub fn of(file: &GgufFile, has_imatrix: bool) -> Self {
        let md = file.metadata();
        let arch = md.architecture().unwrap_or("llama").to_string();
        let get = |k: &str| md.get_u64(&format!("{arch}.{k}")).ok().flatten();
        let n_head = get("attention.head_count").unwrap_or(0);
        let n_head_kv = get("attention.head_count_kv").unwrap_or(n_head);
        ModelFacts {
            n_ffn_down: file
                .tensors()
                .iter()
                .filter(|t| t.name.contains("ffn_down"))
                .count(),
            n_attention_wv: file
                .tensors()
                .iter()
                .filter(|t| t.name.contains("attn_v.weight"))
                .count(),
            n_gqa: n_head.checked_div(n_head_kv).unwrap_or(1),
            n_expert: get("expert_count").unwrap_or(0),
            has_output: file.tensor("output.weight").is_some(),
            has_imatrix,
        }
    }
}

/// `blk.N.` → N.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// llama.cpp's choice of which layers get more bits in the `_M` mixes: the first and last
/// eighth, and every third layer in between.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Whether a tensor is a weight matrix to quantize at all (llama.cpp's exclusions).
pub fn is_quantizable(t: &TensorInfo) -> bool {
    let n = &t.name;
    // ggml_n_dims: trailing dimensions of 1 do not count.
    let n_dims = t.dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    n_dims >= 2
        && n.ends_with("weight")
        && !n.contains("_norm.weight")
        && !n.contains("ffn_gate_inp.weight")
        && !n.contains("pos_embd")
        && !n.contains("token_types")
        && !n.contains("ssm_conv1d")
        && !n.contains("attn_rel_b")
}

/// Counters llama.cpp keeps while walking the tensors in file order.
#[derive(Debug, Default)]
pub struct Walk {
    i_attention_wv: usize,
    i_ffn_down: usize,
}

/// The type the mixture rules pick for one tensor (before the row-size fallback).
pub fn rule_type(target: &Target, facts: &ModelFacts, walk: &mut Walk, name: &str) -> GgmlType {
    use GgmlType as G;
    let base = target.base;
    if target.mix == Mix::None {
        return base;
    }
    let is_output = name == "output.weight" || (!facts.has_output && name == "token_embd.weight");
    if is_output {
        return if base == G::Q8_0 || base == G::F16 || base == G::BF16 {
            base
        } else {
            G::Q6_K
        };
    }
    if name == "token_embd.weight" {
        return if target.mix == Mix::Ternary {
            G::Q4_K
        } else {
            base
        };
    }
    if name.contains("attn_v.weight") {
        // The layer number when the name has one: files need not list layers in numeric
        // order (SmolLM2's are sorted as strings), and llama.cpp's choices follow the layer.
        let i = layer_of(name).unwrap_or(walk.i_attention_wv);
        walk.i_attention_wv += 1;
        let n = facts.n_attention_wv;
        return match target.mix {
            Mix::Q2K => {
                if facts.n_gqa >= 4 {
                    G::Q4_K
                } else {
                    G::Q3_K
                }
            }
            Mix::Q2KS if facts.n_gqa >= 4 => G::Q4_K,
            Mix::Q3KM => {
                if i < 2 {
                    G::Q5_K
                } else {
                    G::Q4_K
                }
            }
            Mix::Q3KL => G::Q5_K,
            Mix::Q4KM | Mix::Q5KM if use_more_bits(i, n) => G::Q6_K,
            Mix::Q4KS if i < 4 => G::Q5_K,
            Mix::Iq4 if facts.n_gqa >= 4 || facts.n_expert >= 4 => G::Q5_K,
            _ if facts.n_expert == 8 => G::Q8_0,
            _ => base,
        };
    }
    if name.contains("ffn_down") {
        let i = layer_of(name).unwrap_or(walk.i_ffn_down);
        walk.i_ffn_down += 1;
        let n = facts.n_ffn_down.max(1);
        return match target.mix {
            Mix::Q2K => G::Q3_K,
            Mix::Q2KS if i < n / 8 => G::Q4_K,
            Mix::Q3KM => {
                if i < n / 16 {
                    G::Q5_K
                } else if use_more_bits(i, n) {
                    G::Q4_K
                } else {
                    G::Q3_K
                }
            }
            Mix::Q3KL => G::Q5_K,
            Mix::Q4KM | Mix::Q5KM if use_more_bits(i, n) => G::Q6_K,
            Mix::Plain if facts.has_imatrix && i < n / 8 && base == G::Q4_0 => G::Q4_1,
            Mix::Plain if facts.has_imatrix && i < n / 8 && base == G::Q5_0 => G::Q5_1,
            _ => base,
        };
    }
    if name.contains("attn_output.weight") {
        return match target.mix {
            Mix::Q2K => G::Q3_K,
            Mix::Q3KM => G::Q4_K,
            Mix::Q3KL => G::Q5_K,
            _ => base,
        };
    }
    if name.contains("attn_qkv.weight") {
        return match target.mix {
            Mix::Q3KM | Mix::Q3KL => G::Q4_K,
            Mix::Q4KM => G::Q5_K,
            Mix::Q5KM => G::Q6_K,
            _ => base,
        };
    }
    base
}

/// llama.cpp's replacement when a row length is not a multiple of the chosen type's block:
/// a 32-element type of similar size, else F16.
pub fn fallback(ty: GgmlType, row_len: u64) -> GgmlType {
    use GgmlType as G;
    if row_len.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let alt = match ty {
        G::Q2_K | G::Q3_K | G::IQ4_XS | G::TQ1_0 | G::TQ2_0 => G::IQ4_NL,
        G::Q4_K => G::Q5_0,
        G::Q5_K => G::Q5_1,
        G::Q6_K => G::Q8_0,
        _ => G::F16,
    };
    if row_len.is_multiple_of(alt.block_size()) {
        alt
    } else {
        G::F16
    }
}

/// Per-tensor importance: `values[m * row_len + c]` for matrix `m` (experts) and column `c`.
pub type Imatrix = HashMap<String, Vec<f32>>;

/// Reads an imatrix in llama.cpp's GGUF format (`<tensor>.in_sum2` / `<tensor>.counts`
/// pairs, the mean being their quotient) or its legacy binary `.dat` format.
pub fn load_imatrix(path: &Path) -> anyhow::Result<Imatrix> {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .with_context(|| format!("reading imatrix {}", path.display()))?;
    if &magic == b"GGUF" {
        load_imatrix_gguf(path)
    } else {
        load_imatrix_dat(path)
    }
}

fn f32_data(file: &GgufFile, t: &TensorInfo) -> anyhow::Result<Vec<f32>> {
    if t.ty != GgmlType::F32 {
        bail!("imatrix tensor '{}' is {}, expected F32", t.name, t.ty);
    }
    Ok(file
        .tensor_data(t)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn load_imatrix_gguf(path: &Path) -> anyhow::Result<Imatrix> {
    let file = GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Imatrix::new();
    for t in file.tensors() {
        let Some(name) = t.name.strip_suffix(".in_sum2") else {
            continue;
        };
        let counts_name = format!("{name}.counts");
        let counts_t = file
            .tensor(&counts_name)
            .with_context(|| format!("{}: '{}' has no '{counts_name}'", path.display(), t.name))?;
        let sums = f32_data(&file, t)?;
        let counts = f32_data(&file, counts_t)?;
        let row = t.row_len() as usize;
        if counts.is_empty() || sums.len() != row * counts.len() {
            bail!(
                "{}: '{}' has {} values for {} matrices of {row}",
                path.display(),
                t.name,
                sums.len(),
                counts.len()
            );
        }
        let mut v = Vec::with_capacity(sums.len());
        for (m, &c) in counts.iter().enumerate() {
            // A matrix never seen during calibration gets uniform importance.
            for &s in &sums[m * row..(m + 1) * row] {
                v.push(if c > 0.0 { s / c } else { 1.0 });
            }
        }
        out.insert(name.to_string(), v);
    }
    if out.is_empty() {
        bail!(
            "{}: no '<tensor>.in_sum2' entries: not an imatrix",
            path.display()
        );
    }
    Ok(out)
}

fn load_imatrix_dat(path: &Path) -> anyhow::Result<Imatrix> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut pos = 0usize;
    let bad = |what: &str, at: usize| {
        anyhow::anyhow!("{}: legacy imatrix: {what} at byte {at}", path.display())
    };
    let read_i32 = |pos: &mut usize| -> anyhow::Result<i32> {
        let b = bytes
            .get(*pos..*pos + 4)
            .ok_or_else(|| bad("truncated", *pos))?;
        *pos += 4;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let n = read_i32(&mut pos)?;
    if n <= 0 {
        bail!("{}: legacy imatrix with {n} entries", path.display());
    }
    let mut out = Imatrix::new();
    for _ in 0..n {
        let len = read_i32(&mut pos)?;
        let name = usize::try_from(len)
            .ok()
            .and_then(|l| bytes.get(pos..pos + l))
            .ok_or_else(|| bad("bad name length", pos))?;
        let name = String::from_utf8_lossy(name).into_owned();
        pos += len as usize;
        let ncall = read_i32(&mut pos)?;
        let nval = read_i32(&mut pos)?;
        let nval = usize::try_from(nval).map_err(|_| bad("negative value count", pos))?;
        let data = bytes
            .get(pos..pos + 4 * nval)
            .ok_or_else(|| bad("truncated values", pos))?;
        pos += 4 * nval;
        let div = if ncall > 0 { ncall as f32 } else { 1.0 };
        let v = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) / div)
            .collect();
        out.insert(name, v);
    }
    Ok(out)
}

/// The decided plan for one tensor.
struct Plan {
    spec: TensorSpec,
    /// Set when the rules' choice did not fit the row length.
    fallback_from: Option<GgmlType>,
}

/// Decides every tensor's output type (rules, then the row-size fallback).
fn plan(
    file: &GgufFile,
    target: &Target,
    pure: bool,
    has_imatrix: bool,
) -> anyhow::Result<Vec<Plan>> {
    let facts = ModelFacts::of(file, has_imatrix);
    let mut walk = Walk::default();
    let mut plans = Vec::with_capacity(file.tensors().len());
    for t in file.tensors() {
        let chosen = if !is_quantizable(t) {
            t.ty
        } else if pure {
            target.base
        } else {
            rule_type(target, &facts, &mut walk, &t.name)
        };
        let ty = fallback(chosen, t.row_len());
        if !can_quantize(ty) && ty != t.ty {
            bail!("tensor '{}': quantizing to {ty} is not supported", t.name);
        }
        plans.push(Plan {
            spec: TensorSpec::new(t.name.clone(), &t.dims, ty),
            fallback_from: (ty != chosen).then_some(chosen),
        });
    }
    Ok(plans)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let target = parse_target(&args.ty)?;
    if !can_quantize(target.base) {
        bail!("quantizing to {} is not supported", target.base);
    }
    let file =
        GgufFile::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    if !args.allow_requantize {
        if let Some(t) = file.tensors().iter().find(|t| t.ty.is_quantized()) {
            bail!(
                "{} is already quantized (tensor '{}' is {}); quantizing again loses quality \
                 twice: pass --allow-requantize to do it anyway",
                args.input.display(),
                t.name,
                t.ty
            );
        }
    }
    let imatrix = match &args.imatrix {
        Some(p) => Some(load_imatrix(p)?),
        None => None,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);

    let plans = plan(&file, &target, args.pure, imatrix.is_some())?;

    let mut metadata: Metadata = file.metadata().clone();
    metadata.set("general.file_type", Value::U32(target.ftype));
    metadata.set("general.quantization_version", Value::U32(2));

    let part = args.output.with_extension(match args.output.extension() {
        Some(e) => format!("{}.part", e.to_string_lossy()),
        None => "part".into(),
    });
    let result = write_model(
        &args,
        &file,
        &metadata,
        &plans,
        imatrix.as_ref(),
        threads,
        &part,
    );
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, &args.output)
        .with_context(|| format!("renaming {} to {}", part.display(), args.output.display()))?;
    Ok(())
}

fn write_model(
    args: &Args,
    file: &GgufFile,
    metadata: &Metadata,
    plans: &[Plan],
    imatrix: Option<&Imatrix>,
    threads: usize,
    part: &Path,
) -> anyhow::Result<()> {
    let specs: Vec<TensorSpec> = plans.iter().map(|p| p.spec.clone()).collect();
    let out = File::create(part).with_context(|| format!("creating {}", part.display()))?;
    let mut writer = HeaderWriter::new(BufWriter::with_capacity(1 << 20, out), metadata, &specs)
        .with_context(|| format!("writing the header of {}", part.display()))?;

    let total: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
    let pb = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} tensors {msg} [{elapsed_precise}, ETA {eta}]",
        )
        .expect("static template"),
    );
    // Notes (fallbacks, missing imatrix entries) are shown even without a bar.
    let note = |msg: String| {
        if pb.is_hidden() {
            eprintln!("{msg}");
        } else {
            pb.println(msg);
        }
    };
    // One line per replacement rather than per tensor: a Q4_K_M SmolLM2 has 180 of them.
    for line in fallback_summary(file, plans) {
        note(line);
    }
    let start = Instant::now();
    let n = plans.len();
    let mut out_bytes = 0u64;
    let mut scratch = Vec::new();
    for (i, (t, plan)) in file.tensors().iter().zip(plans).enumerate() {
        pb.set_message(format!("{}/{n} {}", i + 1, t.name));
        let src = file.tensor_data(t);
        let ty = plan.spec.ty;
        if ty == t.ty {
            writer.write_tensor(src)?;
            out_bytes += src.len() as u64;
        } else {
            let qw = match imatrix {
                Some(m) if uses_imatrix(ty) => match m.get(&t.name) {
                    Some(v) => Some(v.as_slice()),
                    None => {
                        note(format!("{}: no imatrix entry, quantizing without", t.name));
                        None
                    }
                },
                _ => None,
            };
            convert(t, src, ty, qw, threads, &mut scratch)?;
            writer.write_tensor(&scratch)?;
            out_bytes += scratch.len() as u64;
        }
        pb.inc(t.n_bytes);
    }
    writer
        .finish()
        .with_context(|| format!("finishing {}", part.display()))?;
    pb.finish_and_clear();
    eprintln!(
        "quantized {} tensors: {:.1} MiB → {:.1} MiB in {:.1} s ({} threads)",
        n,
        total as f64 / 1048576.0,
        out_bytes as f64 / 1048576.0,
        start.elapsed().as_secs_f64(),
        threads
    );
    Ok(())
}

/// The planned type replacements (llama.cpp's, for rows that are not a multiple of the
/// chosen type's block), one line per `(chosen, used)` pair, naming the first tensors.
fn fallback_summary(file: &GgufFile, plans: &[Plan]) -> Vec<String> {
    let mut groups: Vec<((GgmlType, GgmlType), Vec<&str>)> = Vec::new();
    for (t, plan) in file.tensors().iter().zip(plans) {
        let Some(from) = plan.fallback_from else {
            continue;
        };
        let key = (from, plan.spec.ty);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) => names.push(&t.name),
            None => groups.push((key, vec![&t.name])),
        }
    }
    const NAMED: usize = 3;
    groups
        .into_iter()
        .map(|((from, to), names)| {
            let more = match names.len().saturating_sub(NAMED) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            format!(
                "{} tensor(s) with rows that are not a multiple of {from}'s block of {} use {to}: {}{more}",
                names.len(),
                from.block_size(),
                names[..names.len().min(NAMED)].join(", ")
            )
        })
        .collect()
}

/// Rows converted per batch: bounds each thread's f32 scratch.
const ROWS_PER_BATCH: usize = 16;

/// Dequantizes tensor `t` row batch by row batch and quantizes it to `ty` into `out`, the
/// rows split over `threads` threads.
fn convert(
    t: &TensorInfo,
    src: &[u8],
    ty: GgmlType,
    imatrix: Option<&[f32]>,
    threads: usize,
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    let row_len = t.row_len() as usize;
    let n_rows = t.n_rows() as usize;
    let src_row = t.ty.row_bytes(row_len as u64).context("source row size")? as usize;
    let dst_row = ty.row_bytes(row_len as u64).context("target row size")? as usize;
    // Experts (3-D tensors) have one importance vector per matrix.
    let rows_per_mat = t.dims.get(1).copied().unwrap_or(1) as usize;
    if let Some(qw) = imatrix {
        let n_mat = n_rows / rows_per_mat.max(1);
        if qw.len() != row_len && qw.len() != row_len * n_mat {
            bail!(
                "tensor '{}': imatrix has {} values, expected {row_len} or {}",
                t.name,
                qw.len(),
                row_len * n_mat
            );
        }
    }
    out.clear();
    out.resize(n_rows * dst_row, 0);
    let per_thread = n_rows.div_ceil(threads.max(1)).max(1);
    let name = &t.name;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for (k, dst) in out.chunks_mut(per_thread * dst_row).enumerate() {
            let first = k * per_thread;
            handles.push(s.spawn(move || -> anyhow::Result<()> {
                let mut buf = vec![0f32; ROWS_PER_BATCH * row_len];
                let rows = dst.len() / dst_row;
                let mut r = 0;
                while r < rows {
                    let nb = ROWS_PER_BATCH.min(rows - r);
                    let row0 = first + r;
                    let x = &mut buf[..nb * row_len];
                    ferrite_quant::dequantize(t.ty, &src[row0 * src_row..(row0 + nb) * src_row], x)
                        .with_context(|| format!("tensor '{name}': dequantizing"))?;
                    for j in 0..nb {
                        let row = row0 + j;
                        let qw = imatrix.map(|q| {
                            if q.len() == row_len {
                                q
                            } else {
                                let m = row / rows_per_mat;
                                &q[m * row_len..(m + 1) * row_len]
                            }
                        });
                        quantize(
                            ty,
                            &x[j * row_len..(j + 1) * row_len],
                            qw,
                            &mut dst[(r + j) * dst_row..(r + j + 1) * dst_row],
                        )
                        .with_context(|| format!("tensor '{name}' row {row}: quantizing"))?;
                    }
                    r += nb;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a quantization thread panicked"))??;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_layers_match_llama_cpp_pattern() {
        // 30 layers (SmolLM2): first 3, every third from 3 + 2, last 4.
        let picked: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(
            picked,
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
        );
    }

    #[test]
    fn fallbacks_follow_llama_cpp() {
        assert_eq!(fallback(GgmlType::Q4_K, 576), GgmlType::Q5_0);
        assert_eq!(fallback(GgmlType::Q5_K, 576), GgmlType::Q5_1);
        assert_eq!(fallback(GgmlType::Q6_K, 576), GgmlType::Q8_0);
        assert_eq!(fallback(GgmlType::IQ4_XS, 576), GgmlType::IQ4_NL);
        assert_eq!(fallback(GgmlType::Q2_K, 100), GgmlType::F16);
        assert_eq!(fallback(GgmlType::Q4_K, 1536), GgmlType::Q4_K);
    }

    #[test]
    fn targets_parse_case_insensitively_and_unknown_ones_are_named() {
        assert_eq!(parse_target("q4_k_m").unwrap().ftype, 15);
        let e = parse_target("Q9_X").unwrap_err().to_string();
        assert!(e.contains("Q9_X") && e.contains("Q4_K_M"), "{e}");
    }

    /// The legacy format: i32 count, then per entry i32 name length, name, i32 calls,
    /// i32 value count, f32 sums (divided by the calls on load).
    #[test]
    fn legacy_imatrix_loads_and_truncation_is_an_error() {
        let mut b = Vec::new();
        b.extend(1i32.to_le_bytes());
        b.extend(8i32.to_le_bytes());
        b.extend(b"a.weight");
        b.extend(2i32.to_le_bytes());
        b.extend(3i32.to_le_bytes());
        for v in [2f32, 4.0, 6.0] {
            b.extend(v.to_le_bytes());
        }
        let dir = std::env::temp_dir().join(format!("ferrite-imatrix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.dat");
        std::fs::write(&path, &b).unwrap();
        let m = load_imatrix(&path).unwrap();
        assert_eq!(m["a.weight"], vec![1.0, 2.0, 3.0]);
        std::fs::write(&path, &b[..b.len() - 2]).unwrap();
        let e = load_imatrix(&path).unwrap_err().to_string();
        assert!(e.contains("truncated values"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// llama.cpp made the Gemma 3 270M Q4_K_M file: planning Q4_K_M for it must give every
    /// tensor the type llama.cpp gave it (mixture layers, tied output, 640-wide fallbacks).
    #[test]
    fn q4_k_m_plan_matches_llama_cpp_on_gemma3() {
        let file = GgufFile::open(ferrite_testdata::gemma3()).unwrap();
        let target = parse_target("Q4_K_M").unwrap();
        let plans = plan(&file, &target, false, false).unwrap();
        let differ: Vec<String> = file
            .tensors()
            .iter()
            .zip(&plans)
            .filter(|(t, p)| t.ty != p.spec.ty)
            .map(|(t, p)| format!("{}: llama.cpp {} ferrite {}", t.name, t.ty, p.spec.ty))
            .collect();
        assert!(differ.is_empty(), "{differ:#?}");
    }
}
