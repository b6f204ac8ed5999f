//! `ferrite inspect`: what a GGUF file holds, without touching tensor data.
//!
//! Text for people (long arrays and strings shortened), `--json` for scripts. The JSON metadata
//! entries use the same shape as `scripts/gguf_dump.py`, so the two can be compared directly:
//! `{key, type, value}`; arrays `{key, type: "array", element_type, len, sha256, value}` with
//! `value` replaced by `head`/`tail` (first/last 5 elements) when longer than 64 elements.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context;
use ferrite_gguf::{writer, Array, GgmlType, GgufFile, Metadata, OpenOptions, Value};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file (for a split model, its first part)
    model: PathBuf,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
    /// Include the tensor table (name, type, shape, bytes, offset)
    #[arg(long)]
    tensors: bool,
    /// Read the file into memory instead of memory-mapping it
    #[arg(long)]
    no_mmap: bool,
}

/// Arrays longer than this are summarised (in JSON as in text).
const SUMMARY_OVER: usize = 64;
/// Elements shown at each end of a summarised array in JSON.
const JSON_ENDS: usize = 5;
/// Elements shown at the start of an array in text.
const TEXT_HEAD: usize = 3;
/// Strings longer than this (in characters) are shortened in text mode.
const TEXT_STRING: usize = 80;

pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = OpenOptions {
        mmap: !args.no_mmap,
    };
    let f = GgufFile::open_with(&args.model, opts)?;
    let out = io::stdout().lock();
    let mut out = io::BufWriter::new(out);
    if args.json {
        let doc = to_json(&f, &args);
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        write_text(&mut out, &f, &args)?;
    }
    out.flush().context("writing output")?;
    Ok(())
}

fn float(x: f64) -> Json {
    if x.is_nan() {
        json!("nan")
    } else if x.is_infinite() {
        json!(if x > 0.0 { "inf" } else { "-inf" })
    } else {
        json!(x)
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => float(f64::from(*x)),
        Value::F64(x) => float(*x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => array_json(a),
    }
}

/// Nested arrays (inside an array) are given in full as JSON arrays.
fn array_json(a: &Array) -> Json {
    Json::Array(
        (0..a.len())
            .filter_map(|i| a.get(i))
            .map(|v| value_json(&v))
            .collect(),
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn metadata_entry(key: &str, v: &Value) -> Json {
    let Value::Array(a) = v else {
        return json!({"key": key, "type": v.value_type().name(), "value": value_json(v)});
    };
    let mut enc = Vec::new();
    writer::write_array_elements(&mut enc, a).expect("writing to a Vec cannot fail");
    let elems = |r: std::ops::Range<usize>| -> Json {
        Json::Array(r.filter_map(|i| a.get(i)).map(|v| value_json(&v)).collect())
    };
    let mut e = json!({
        "key": key,
        "type": "array",
        "element_type": a.element_type().name(),
        "len": a.len(),
        "sha256": sha256_hex(&enc),
    });
    if a.len() <= SUMMARY_OVER {
        e["value"] = elems(0..a.len());
    } else {
        e["head"] = elems(0..JSON_ENDS);
        e["tail"] = elems(a.len() - JSON_ENDS..a.len());
    }
    e
}

/// The architecture summary, from `{arch}.*` keys. Values are kept as stored: some models give
/// per-layer arrays (e.g. head counts) instead of one number.
struct Summary {
    arch: Option<String>,
    rows: Vec<(&'static str, &'static str, Option<Value>)>,
}

fn summary(m: &Metadata) -> Summary {
    let arch = m.architecture().map(str::to_string);
    let get = |suffix: &str| -> Option<Value> {
        let a = arch.as_deref()?;
        m.get(&format!("{a}.{suffix}")).cloned()
    };
    let vocab = get("vocab_size").or_else(|| {
        m.get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .map(|a| Value::U64(a.len() as u64))
    });
    let rows = vec![
        ("layers", "layers", get("block_count")),
        ("heads", "heads", get("attention.head_count")),
        ("kv_heads", "kv heads", get("attention.head_count_kv")),
        ("embedding", "embedding", get("embedding_length")),
        ("feed_forward", "feed-forward", get("feed_forward_length")),
        ("context_length", "context", get("context_length")),
        ("vocab_size", "vocab", vocab),
    ];
    Summary { arch, rows }
}

#[derive(Default)]
struct TypeTotal {
    tensors: u64,
    parameters: u64,
    bytes: u64,
}

struct Totals {
    parameters: u64,
    bytes: u64,
    by_type: BTreeMap<GgmlType, TypeTotal>,
}

impl Totals {
    fn of(f: &GgufFile) -> Self {
        let mut by_type: BTreeMap<GgmlType, TypeTotal> = BTreeMap::new();
        for t in f.tensors() {
            let e = by_type.entry(t.ty).or_default();
            e.tensors += 1;
            e.parameters += t.n_elements;
            e.bytes += t.n_bytes;
        }
        Totals {
            parameters: by_type.values().map(|t| t.parameters).sum(),
            bytes: by_type.values().map(|t| t.bytes).sum(),
            by_type,
        }
    }

    fn bits_per_weight(&self) -> f64 {
        if self.parameters == 0 {
            0.0
        } else {
            self.bytes as f64 * 8.0 / self.parameters as f64
        }
    }
}

fn to_json(f: &GgufFile, args: &Args) -> Json {
    let m = f.metadata();
    let s = summary(m);
    let mut arch = serde_json::Map::new();
    arch.insert("name".into(), json!(s.arch));
    for (key, _, v) in &s.rows {
        arch.insert((*key).into(), v.as_ref().map_or(Json::Null, value_json));
    }
    let totals = Totals::of(f);
    let mut doc = json!({
        "file": args.model.display().to_string(),
        "files": f.paths().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "file_size": f.file_size(),
        "mmap": f.is_mapped(),
        "version": f.version(),
        "alignment": f.alignment(),
        "data_offset": f.header().data_offset,
        "n_kv": m.len(),
        "n_tensors": f.tensors().len(),
        "metadata": m.iter().map(|(k, v)| metadata_entry(k, v)).collect::<Vec<_>>(),
        "architecture": arch,
        "totals": {
            "parameters": totals.parameters,
            "bytes": totals.bytes,
            "bits_per_weight": totals.bits_per_weight(),
            "by_type": totals.by_type.iter().map(|(ty, t)| json!({
                "type": ty.name(),
                "tensors": t.tensors,
                "parameters": t.parameters,
                "bytes": t.bytes,
                "bits_per_weight": ty.bits_per_weight(),
            })).collect::<Vec<_>>(),
        },
    });
    if args.tensors {
        doc["tensors"] = f
            .tensors()
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "type": t.ty.name(),
                    "shape": t.dims,
                    "n_elements": t.n_elements,
                    "n_bytes": t.n_bytes,
                    "offset": t.offset,
                    "file_offset": t.file_offset,
                    "part": t.part,
                })
            })
            .collect();
    }
    doc
}

/// A string for a terminal: escaped, and shortened if long.
fn short_str(s: &str) -> String {
    let n = s.chars().count();
    if n <= TEXT_STRING {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(TEXT_STRING).collect();
        format!("{head:?}... ({n} chars)")
    }
}

fn short_value(v: &Value) -> String {
    match v {
        Value::String(s) => short_str(s),
        Value::Array(a) => {
            let shown: Vec<String> = (0..a.len().min(TEXT_HEAD))
                .filter_map(|i| a.get(i))
                .map(|v| short_value(&v))
                .collect();
            if a.len() <= TEXT_HEAD {
                format!("[{}]", shown.join(", "))
            } else {
                format!("{}, ...", shown.join(", "))
            }
        }
        v => v.to_string(),
    }
}

fn write_text(out: &mut impl Write, f: &GgufFile, args: &Args) -> anyhow::Result<()> {
    let m = f.metadata();
    let paths: Vec<String> = f.paths().map(|p| p.display().to_string()).collect();
    writeln!(
        out,
        "file: {} ({} bytes{}, {})",
        paths.join(" + "),
        f.file_size(),
        if paths.len() > 1 {
            format!(" in {} parts", paths.len())
        } else {
            String::new()
        },
        if f.is_mapped() { "mapped" } else { "read" }
    )?;
    writeln!(
        out,
        "GGUF v{}, alignment {}, data at byte {}",
        f.version(),
        f.alignment(),
        f.header().data_offset
    )?;

    writeln!(out, "\nmetadata ({} keys):", m.len())?;
    for (k, v) in m.iter() {
        // Keys and names are escaped: a hostile file must not drive the terminal.
        let k = k.escape_debug();
        writeln!(out, "  {k}: {} {}", v.type_description(), short_value(v))?;
    }

    let s = summary(m);
    writeln!(
        out,
        "\narchitecture: {}",
        s.arch
            .as_deref()
            .unwrap_or("(general.architecture missing)")
    )?;
    for (_, label, v) in &s.rows {
        let shown = v.as_ref().map_or("-".to_string(), short_value);
        writeln!(out, "  {label:<13} {shown}")?;
    }

    if args.tensors {
        writeln!(out, "\ntensors ({}):", f.tensors().len())?;
        let w = f
            .tensors()
            .iter()
            .map(|t| t.name.escape_debug().count())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            out,
            "  {:<w$}  {:<7}  {:<22}  {:>11}  {:>11}",
            "name", "type", "shape", "bytes", "file offset"
        )?;
        for t in f.tensors() {
            let shape = format!("{:?}", t.dims);
            writeln!(
                out,
                "  {:<w$}  {:<7}  {:<22}  {:>11}  {:>11}",
                t.name.escape_debug().to_string(),
                t.ty.name(),
                shape,
                t.n_bytes,
                t.file_offset
            )?;
        }
    }

    let totals = Totals::of(f);
    writeln!(out, "\ntotals: {} tensors", f.tensors().len())?;
    writeln!(
        out,
        "  parameters    {} ({:.2} M)",
        totals.parameters,
        totals.parameters as f64 / 1e6
    )?;
    writeln!(
        out,
        "  bytes         {} ({:.2} MiB), {:.3} bits per weight",
        totals.bytes,
        totals.bytes as f64 / (1024.0 * 1024.0),
        totals.bits_per_weight()
    )?;
    for (ty, t) in &totals.by_type {
        writeln!(
            out,
            "  {:<7} {:>4} tensors  {:>12} parameters  {:>12} bytes  ({:.3} bits per weight)",
            ty.name(),
            t.tensors,
            t.parameters,
            t.bytes,
            ty.bits_per_weight()
        )?;
    }
    Ok(())
}
