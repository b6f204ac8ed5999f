//! `ferrite dump` end to end: for every tensor type in the two real models, dump the smallest
//! tensor of that type, read the .npy back with the small reader below, and check its header
//! (dtype, order, shape = GGUF dims reversed) and that its data hashes to the committed sha256
//! of the `gguf` Python package's dequantization (crates/quant/tests/data/real_models.json,
//! written by scripts/make_quant_vectors.py). Hash equality means every value is bit-identical.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use ferrite_gguf::GgufFile;
use sha2::{Digest, Sha256};

fn ferrite() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
}

/// A minimal .npy v1.0 reader: returns (descr, fortran_order, shape, data bytes).
fn read_npy(path: &Path) -> (String, bool, Vec<u64>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x93NUMPY\x01\x00",
        "npy magic and version 1.0"
    );
    let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    assert_eq!((10 + len) % 64, 0, "data aligned to 64 bytes");
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    let field = |key: &str| {
        let at = header
            .find(&format!("'{key}': "))
            .unwrap_or_else(|| panic!("{key} in {header}"));
        &header[at + key.len() + 4..]
    };
    let descr = field("descr").split('\'').nth(1).unwrap().to_string();
    let fortran = field("fortran_order").starts_with("True");
    let shape_text = field("shape");
    let shape = shape_text[1..shape_text.find(')').unwrap()]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (descr, fortran, shape, bytes[10 + len..].to_vec())
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn dump_matches_numpy_for_every_type_in_the_real_models() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../quant/tests/data/real_models.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for (key, path) in [
        ("smollm2", ferrite_testdata::smollm2()),
        ("gemma3", ferrite_testdata::gemma3()),
    ] {
        let file = GgufFile::open(&path).unwrap();
        let want = json["models"][key]["tensors"].as_object().unwrap();
        // The smallest tensor of each type, plus one non-square 2-D tensor for the shape order.
        let mut pick = BTreeMap::<String, (u64, String)>::new();
        for t in file.tensors() {
            let e = pick
                .entry(t.ty.name().to_string())
                .or_insert((u64::MAX, String::new()));
            if t.n_elements < e.0 {
                *e = (t.n_elements, t.name.clone());
            }
        }
        let mut names: Vec<String> = pick.into_values().map(|(_, n)| n).collect();
        names.push("blk.0.ffn_down.weight".into());
        for name in names {
            let info = file.tensor(&name).unwrap();
            let out = dir.path().join(format!("{key}-{name}.npy"));
            let status = ferrite()
                .args([
                    "dump",
                    path.to_str().unwrap(),
                    &name,
                    "-o",
                    out.to_str().unwrap(),
                ])
                .status()
                .unwrap();
            assert!(status.success(), "dump {name}");
            let (descr, fortran, shape, data) = read_npy(&out);
            assert_eq!(descr, "<f4");
            assert!(!fortran);
            let reversed: Vec<u64> = info.dims.iter().rev().copied().collect();
            assert_eq!(shape, reversed, "{name}: shape");
            assert_eq!(data.len() as u64, info.n_elements * 4, "{name}: data size");
            assert_eq!(
                hex_sha256(&data),
                want[&name]["sha256"].as_str().unwrap(),
                "{key} {name} ({})",
                info.ty
            );
            seen.push(format!("{key}:{name}:{}:{shape:?}", info.ty));
        }
    }
    eprintln!("dumped {seen:?}");
    // The two models hold F32, Q4_1, Q8_0, Q5_0, Q4_K and Q6_K tensors.
    for ty in ["F32", "Q4_1", "Q8_0", "Q5_0", "Q4_K", "Q6_K"] {
        assert!(
            seen.iter().any(|s| s.contains(&format!(":{ty}:"))),
            "no {ty} tensor dumped"
        );
    }
}

#[test]
fn unknown_tensor_names_the_closest_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.npy");
    let model = ferrite_testdata::smollm2();
    let res = ferrite()
        .args([
            "dump",
            model.to_str().unwrap(),
            "blk.0.attn_q.weigth",
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("no tensor named 'blk.0.attn_q.weigth'"),
        "{err}"
    );
    assert!(err.contains("closest: blk.0.attn_q.weight"), "{err}");
    assert!(!out.exists(), "no output file on error");
}
