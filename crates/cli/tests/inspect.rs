//! `ferrite inspect` on both real models, compared with the `gguf` Python package's view of them
//! (the dumps in `crates/gguf/tests/data/`, made by `scripts/gguf_dump.py`), and on corrupt
//! files (non-zero exit, an error naming the offset).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value as Json;

fn ferrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .output()
        .expect("run ferrite")
}

fn inspect_json(path: &Path, extra: &[&str]) -> Json {
    let mut args = vec!["inspect", "--json", "--tensors"];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    let out = ferrite(&args);
    assert!(
        out.status.success(),
        "ferrite failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect --json prints one JSON document")
}

fn reference(name: &str) -> Json {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gguf/tests/data")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The value of metadata key `key` in a dump.
fn meta<'a>(dump: &'a Json, key: &str) -> &'a Json {
    dump["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == key)
        .unwrap_or_else(|| panic!("{key} not in dump"))
}

fn compare(got: &Json, want: &Json) {
    for k in [
        "file_size",
        "version",
        "alignment",
        "data_offset",
        "n_kv",
        "n_tensors",
    ] {
        assert_eq!(got[k], want[k], "{k}");
    }
    // Metadata entries have the same shape in both: compare them whole.
    let (g, w) = (
        got["metadata"].as_array().unwrap(),
        want["metadata"].as_array().unwrap(),
    );
    assert_eq!(g.len(), w.len());
    for (g, w) in g.iter().zip(w) {
        assert_eq!(g, w, "metadata key {}", w["key"]);
    }
    let (g, w) = (
        got["tensors"].as_array().unwrap(),
        want["tensors"].as_array().unwrap(),
    );
    assert_eq!(g.len(), w.len());
    for (g, w) in g.iter().zip(w) {
        for k in [
            "name",
            "type",
            "shape",
            "n_elements",
            "n_bytes",
            "offset",
            "file_offset",
        ] {
            assert_eq!(g[k], w[k], "tensor {} field {k}", w["name"]);
        }
    }
    // Totals, recomputed from the reference's tensor list.
    let params: u64 = w.iter().map(|t| t["n_elements"].as_u64().unwrap()).sum();
    let bytes: u64 = w.iter().map(|t| t["n_bytes"].as_u64().unwrap()).sum();
    assert_eq!(got["totals"]["parameters"], params);
    assert_eq!(got["totals"]["bytes"], bytes);
    let bpw = got["totals"]["bits_per_weight"].as_f64().unwrap();
    assert!((bpw - bytes as f64 * 8.0 / params as f64).abs() < 1e-9);
    for row in got["totals"]["by_type"].as_array().unwrap() {
        let of_type = || w.iter().filter(|t| t["type"] == row["type"]);
        assert_eq!(row["tensors"], of_type().count(), "{}", row["type"]);
        assert_eq!(
            row["bytes"],
            of_type()
                .map(|t| t["n_bytes"].as_u64().unwrap())
                .sum::<u64>()
        );
    }
}

fn check_arch(got: &Json, want: &Json, arch: &str, vocab: u64) {
    let a = &got["architecture"];
    assert_eq!(a["name"], arch);
    for (field, key) in [
        ("layers", "block_count"),
        ("heads", "attention.head_count"),
        ("kv_heads", "attention.head_count_kv"),
        ("embedding", "embedding_length"),
        ("feed_forward", "feed_forward_length"),
        ("context_length", "context_length"),
    ] {
        assert_eq!(
            a[field],
            meta(want, &format!("{arch}.{key}"))["value"],
            "{field}"
        );
    }
    assert_eq!(a["vocab_size"], vocab);
    assert_eq!(meta(want, "tokenizer.ggml.tokens")["len"], vocab);
}

#[test]
fn smollm2_json_matches_the_python_reader() {
    let path = ferrite_testdata::smollm2();
    let want = reference("smollm2.json");
    for extra in [&[][..], &["--no-mmap"][..]] {
        let got = inspect_json(&path, extra);
        compare(&got, &want);
        check_arch(&got, &want, "llama", 49152);
        assert_eq!(got["mmap"], extra.is_empty());
    }
}

#[test]
fn gemma3_json_matches_the_python_reader() {
    let path = ferrite_testdata::gemma3();
    let want = reference("gemma3.json");
    let got = inspect_json(&path, &[]);
    compare(&got, &want);
    // No gemma3.vocab_size key: the vocabulary size comes from the token list.
    check_arch(&got, &want, "gemma3", 262144);
}

#[test]
fn text_output_summarises_long_values() {
    let path = ferrite_testdata::smollm2();
    let out = ferrite(&["inspect", "--tensors", path.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "GGUF v3, alignment 32",
        "tokenizer.ggml.tokens: [string; 49152] \"<|endoftext|>\", \"<|im_start|>\", \"<|im_end|>\", ...",
        "llama.block_count: u32 30",
        "tokenizer.chat_template: string \"{% for message in messages %}",
        "... (368 chars)",
        "tensors (272):",
        "token_embd.weight",
        "Q8_0",
        "[576, 49152]",
        "30081024",
        "  Q4_1     210 tensors",
        "  F32       61 tensors",
    ] {
        assert!(text.contains(needle), "text output lacks {needle:?}:\n{text}");
    }
    // Without --tensors there is no table.
    let out = ferrite(&["inspect", path.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("token_embd.weight"));
}

#[test]
fn corrupt_files_fail_with_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let p = ferrite_testdata::smollm2();
        let mut b = vec![0u8; 100_000];
        use std::io::Read;
        std::fs::File::open(p).unwrap().read_exact(&mut b).unwrap();
        b
    };
    // Cut inside the metadata: the token list runs off the end.
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &head).unwrap();
    // A bad version.
    let mut v = head.clone();
    v[4] = 9;
    let badver = dir.path().join("badver.gguf");
    std::fs::write(&badver, v).unwrap();
    for (path, needles) in [
        (
            &cut,
            &[
                "cut.gguf",
                "byte offset",
                "tokenizer.ggml.tokens",
                "array length is 49152, but only",
            ][..],
        ),
        (
            &badver,
            &["badver.gguf", "byte offset 4", "unsupported GGUF version 9"][..],
        ),
    ] {
        for json in [false, true] {
            let mut args = vec!["inspect"];
            if json {
                args.push("--json");
            }
            args.push(path.to_str().unwrap());
            let out = ferrite(&args);
            assert!(!out.status.success(), "{path:?} was accepted");
            assert!(out.stdout.is_empty());
            let err = String::from_utf8_lossy(&out.stderr);
            for n in needles {
                assert!(err.contains(n), "stderr {err:?} lacks {n:?}");
            }
        }
    }
    let out = ferrite(&["inspect", "/nonexistent.gguf"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.gguf"));
}

#[test]
fn control_characters_are_escaped_in_text() {
    use ferrite_gguf::{writer, GgmlType, Metadata, TensorSpec, Value};
    let dir = tempfile::tempdir().unwrap();
    let mut m = Metadata::new();
    m.insert("evil\x1b[2Jkey", Value::String("v\x1b]0;x\x07".into()))
        .unwrap();
    let data = [0u8; 4];
    let t = TensorSpec::new("t\x1bname", &[1], GgmlType::F32);
    let p = dir.path().join("evil.gguf");
    std::fs::write(&p, writer::to_vec(&m, &[(t, &data[..])]).unwrap()).unwrap();
    let out = ferrite(&["inspect", "--tensors", p.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(text.contains("evil\\u{1b}[2Jkey: string"), "{text}");
    assert!(text.contains("t\\u{1b}name"), "{text}");
}
