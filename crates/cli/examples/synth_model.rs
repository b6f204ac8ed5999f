//! Writes a synthetic llama-architecture GGUF with random (seeded) weights and real shapes,
//! for speed measurements in the regime where the kernels, not overheads, dominate.
//!
//! Defaults give a ~1.1B model like TinyLlama: embedding 2048, 22 layers, FFN 5632, 32 heads,
//! 4 KV heads, and SmolLM2's tokenizer (vocabulary 49152) copied from a SmolLM2 GGUF.
//! Weights are quantized with ferrite's own quantizer (`ferrite_quant::quantize`) and written
//! with ferrite's GGUF writer, one tensor at a time.
//!
//! ```sh
//! cargo run --release -p ferrite-cli --example synth_model -- \
//!     --tokenizer-from models/SmolLM2-135M-Instruct.Q4_1.gguf --type Q4_0 --out models/synth-1b-Q4_0.gguf
//! ```
//! `--type` is F32, F16, Q4_0, Q8_0 or Q4_K_M (Q4_K with Q6_K for the output matrix and for
//! attn_v / ffn_down in the layers llama.cpp's Q4_K_M gives more bits).

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use ferrite_gguf::{GgmlType, GgufFile, HeaderWriter, Metadata, TensorSpec, Value};
use half::f16;

#[derive(Parser)]
struct Args {
    /// A GGUF whose `tokenizer.*` metadata (and vocabulary size) the model takes.
    #[arg(long)]
    tokenizer_from: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// F32, F16, Q4_0, Q8_0 or Q4_K_M.
    #[arg(long = "type", default_value = "F16")]
    ty: String,
    #[arg(long, default_value_t = 2048)]
    n_embd: u64,
    #[arg(long, default_value_t = 22)]
    n_layer: u64,
    #[arg(long, default_value_t = 5632)]
    n_ff: u64,
    #[arg(long, default_value_t = 32)]
    n_head: u64,
    #[arg(long, default_value_t = 4)]
    n_head_kv: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// splitmix64, seeded per tensor so each tensor's values do not depend on the others.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform with standard deviation `std`.
    fn uniform(&mut self, std: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
        (2.0 * u - 1.0) * std * 3f32.sqrt()
    }
}

fn name_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The type of each tensor for a file type (`n_layer` for Q4_K_M's layer choice).
fn tensor_type(file_ty: &str, name: &str, n_layer: u64) -> anyhow::Result<GgmlType> {
    if name.ends_with("norm.weight") {
        return Ok(GgmlType::F32);
    }
    Ok(match file_ty {
        "F32" => GgmlType::F32,
        "F16" => GgmlType::F16,
        "Q4_0" => GgmlType::Q4_0,
        "Q8_0" => GgmlType::Q8_0,
        "Q4_K_M" => {
            let layer: Option<u64> = name
                .strip_prefix("blk.")
                .and_then(|s| s.split('.').next())
                .and_then(|s| s.parse().ok());
            // llama.cpp's "use more bits" layers: the first and last eighth, and every third
            // one in between.
            let more =
                |i: u64| i < n_layer / 8 || i >= 7 * n_layer / 8 || (i - n_layer / 8) % 3 == 2;
            let big = name == "output.weight"
                || ((name.ends_with("attn_v.weight") || name.ends_with("ffn_down.weight"))
                    && layer.is_some_and(more));
            if big {
                GgmlType::Q6_K
            } else {
                GgmlType::Q4_K
            }
        }
        t => bail!("--type {t}: expected F32, F16, Q4_0, Q8_0 or Q4_K_M"),
    })
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let src = GgufFile::open(&a.tokenizer_from)
        .with_context(|| format!("opening {}", a.tokenizer_from.display()))?;
    let mut md = Metadata::new();
    let u32v = |v: u64| Value::U32(v as u32);
    md.set("general.architecture", Value::String("llama".into()));
    md.set(
        "general.name",
        Value::String(format!("ferrite synthetic {}L-{}", a.n_layer, a.n_embd)),
    );
    md.set("llama.block_count", u32v(a.n_layer));
    md.set("llama.context_length", u32v(2048));
    md.set("llama.embedding_length", u32v(a.n_embd));
    md.set("llama.feed_forward_length", u32v(a.n_ff));
    md.set("llama.attention.head_count", u32v(a.n_head));
    md.set("llama.attention.head_count_kv", u32v(a.n_head_kv));
    md.set("llama.rope.freq_base", Value::F32(10000.0));
    md.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    md.set("llama.rope.dimension_count", u32v(a.n_embd / a.n_head));
    let mut n_vocab = 0;
    for (k, v) in src.metadata().iter() {
        if k.starts_with("tokenizer.") {
            if k == "tokenizer.ggml.tokens" {
                n_vocab = v.as_array().map_or(0, |x| x.len()) as u64;
            }
            md.set(k, v.clone());
        }
    }
    if n_vocab == 0 {
        bail!(
            "{} has no tokenizer.ggml.tokens",
            a.tokenizer_from.display()
        );
    }
    md.set("llama.vocab_size", u32v(n_vocab));

    let (d, ff, hd) = (a.n_embd, a.n_ff, a.n_embd / a.n_head);
    let kv = a.n_head_kv * hd;
    let mut shapes: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![d, n_vocab]),
        ("output_norm.weight".into(), vec![d]),
        ("output.weight".into(), vec![d, n_vocab]),
    ];
    for l in 0..a.n_layer {
        let p = format!("blk.{l}.");
        for (n, dims) in [
            ("attn_norm.weight", vec![d]),
            ("attn_q.weight", vec![d, d]),
            ("attn_k.weight", vec![d, kv]),
            ("attn_v.weight", vec![d, kv]),
            ("attn_output.weight", vec![d, d]),
            ("ffn_norm.weight", vec![d]),
            ("ffn_gate.weight", vec![d, ff]),
            ("ffn_up.weight", vec![d, ff]),
            ("ffn_down.weight", vec![ff, d]),
        ] {
            shapes.push((format!("{p}{n}"), dims));
        }
    }
    let specs: Vec<TensorSpec> = shapes
        .iter()
        .map(|(n, dims)| Ok(TensorSpec::new(n, dims, tensor_type(&a.ty, n, a.n_layer)?)))
        .collect::<anyhow::Result<_>>()?;
    let file_type = match a.ty.as_str() {
        "F32" => 0,
        "F16" => 1,
        "Q4_0" => 2,
        "Q8_0" => 7,
        _ => 15, // Q4_K_M
    };
    md.set("general.file_type", Value::U32(file_type));

    let out = File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut w = HeaderWriter::new(BufWriter::new(out), &md, &specs)?;
    for spec in &specs {
        let row = spec.dims[0] as usize;
        let n_rows: usize = spec.dims[1..].iter().product::<u64>() as usize;
        let row_bytes = spec.ty.row_bytes(row as u64).context("row size")? as usize;
        let mut data = vec![0u8; row_bytes * n_rows];
        let mut rng = Rng(name_seed(a.seed, &spec.name));
        let mut buf = vec![0f32; row * 64];
        for (chunk, out) in data.chunks_mut(row_bytes * 64).enumerate() {
            let rows = out.len() / row_bytes;
            let src = &mut buf[..rows * row];
            for v in src.iter_mut() {
                *v = if spec.dims.len() == 1 {
                    1.0 + rng.uniform(0.01)
                } else {
                    rng.uniform(0.02)
                };
            }
            match spec.ty {
                GgmlType::F32 => {
                    for (o, v) in out.chunks_exact_mut(4).zip(src.iter()) {
                        o.copy_from_slice(&v.to_le_bytes());
                    }
                }
                GgmlType::F16 => {
                    for (o, v) in out.chunks_exact_mut(2).zip(src.iter()) {
                        o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
                    }
                }
                ty => ferrite_quant::quantize::quantize(ty, src, None, out)
                    .with_context(|| format!("quantizing {} chunk {chunk}", spec.name))?,
            }
        }
        w.write_tensor(&data)?;
        eprintln!("{} {:?} {}", spec.name, spec.dims, spec.ty);
    }
    w.finish()?;
    Ok(())
}
