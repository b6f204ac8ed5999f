//! `ferrite dump MODEL TENSOR -o OUT.npy`: one tensor, dequantized to f32, as a NumPy `.npy`
//! file in its row-major shape (GGUF's `ne` reversed: ne=[576, 1536] is a (1536, 576) array).
//!
//! The `.npy` writer is hand-written: format version 1.0 is a fixed 10-byte preamble, a
//! Python-literal header padded to a multiple of 64 bytes, then the raw little-endian data.
//! That is a dozen lines, against a crate (npyz, ndarray-npy) that brings a general array
//! library along for it. The tensor is decoded and written a slice of blocks at a time, so
//! even a large embedding needs no full f32 copy in memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ferrite_gguf::{GgufFile, TensorInfo};

#[derive(clap::Args)]
pub struct Args {
    /// GGUF model file (the first part, for a split model)
    pub model: PathBuf,
    /// Name of the tensor, e.g. `blk.0.attn_q.weight` (see `ferrite inspect`)
    pub tensor: String,
    /// Where to write the .npy file
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let file = GgufFile::open(&args.model)?;
    let Some(info) = file.tensor(&args.tensor) else {
        bail!("{}", unknown_tensor(&file, &args.tensor, &args.model));
    };
    let result = write_npy(&file, info, &args.output);
    if result.is_err() {
        // Leave no truncated file behind that could pass for a result.
        let _ = std::fs::remove_file(&args.output);
    }
    result?;
    eprintln!(
        "wrote {} ({}, {} {:?} -> f32 {:?})",
        args.output.display(),
        info.name,
        info.ty,
        info.dims,
        npy_shape(info)
    );
    Ok(())
}

/// The message for a name that is not in the file, with the closest names it does hold.
fn unknown_tensor(file: &GgufFile, name: &str, model: &Path) -> String {
    let mut scored: Vec<(usize, &str)> = file
        .tensors()
        .iter()
        .map(|t| (edit_distance(name, &t.name), t.name.as_str()))
        .collect();
    scored.sort();
    let close: Vec<&str> = scored.iter().take(5).map(|&(_, n)| n).collect();
    format!(
        "no tensor named '{name}' in {} ({} tensors); closest: {}",
        model.display(),
        file.tensors().len(),
        close.join(", ")
    )
}

/// Levenshtein distance over bytes (tensor names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// NumPy's row-major shape: GGUF lists the fastest-varying dimension first.
fn npy_shape(info: &TensorInfo) -> Vec<u64> {
    info.dims.iter().rev().copied().collect()
}

/// The `.npy` v1.0 header for a C-order little-endian f32 array of `shape`.
fn npy_header(shape: &[u64]) -> anyhow::Result<Vec<u8>> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Pad with spaces and end with '\n' so that the data starts at a multiple of 64 bytes.
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let len = u16::try_from(dict.len()).context("npy header longer than 65535 bytes")?;
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    Ok(out)
}

fn write_npy(file: &GgufFile, info: &TensorInfo, path: &Path) -> anyhow::Result<()> {
    let ctx = || format!("writing {}", path.display());
    let mut w = BufWriter::new(File::create(path).with_context(ctx)?);
    w.write_all(&npy_header(&npy_shape(info))?)
        .with_context(ctx)?;
    let (bs, ts) = (info.ty.block_size() as usize, info.ty.type_size() as usize);
    let blocks_per_step = (1 << 16) / bs + 1;
    let mut vals = vec![0f32; blocks_per_step * bs];
    let mut bytes = Vec::with_capacity(vals.len() * 4);
    for chunk in file.tensor_data(info).chunks(blocks_per_step * ts) {
        let n = chunk.len() / ts * bs;
        ferrite_quant::dequantize(info.ty, chunk, &mut vals[..n])
            .with_context(|| format!("tensor '{}'", info.name))?;
        bytes.clear();
        for v in &vals[..n] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        w.write_all(&bytes).with_context(ctx)?;
    }
    w.flush().with_context(ctx)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_padded_to_64_bytes_and_names_the_shape() {
        for shape in [vec![7u64], vec![1536, 576], vec![2, 3, 4, 5]] {
            let h = npy_header(&shape).unwrap();
            assert_eq!(h.len() % 64, 0);
            assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
            assert_eq!(usize::from(u16::from_le_bytes([h[8], h[9]])), h.len() - 10);
            assert_eq!(*h.last().unwrap(), b'\n');
        }
        let h = npy_header(&[1536, 576]).unwrap();
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(
            text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (1536, 576), }")
        );
        let h = npy_header(&[7]).unwrap();
        assert!(std::str::from_utf8(&h[10..])
            .unwrap()
            .contains("'shape': (7,)"));
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(
            edit_distance("blk.0.attn_q.weight", "blk.0.attn_q.weight"),
            0
        );
        assert_eq!(
            edit_distance("blk.0.attn_q.weigth", "blk.0.attn_q.weight"),
            2
        );
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
