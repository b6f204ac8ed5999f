//! `ferrite logits` end to end on a shipped tiny fixture: one JSON line with one list per
//! position whose best id is llama.cpp's argmax (the manifest's `argmax_per_position`).

use std::process::Command;

#[test]
fn logits_json_matches_llama_cpp_argmax() {
    let dir = ferrite_testdata::reference_dir().join("arch");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let f = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "tiny-qwen2-Q8_0.gguf")
        .unwrap();
    let ids: Vec<String> = f["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["logits", dir.join("tiny-qwen2-Q8_0.gguf").to_str().unwrap()])
        .args(["--ids", &ids.join(","), "--top", "3", "--kv-type", "f32"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ids"].as_array().unwrap().len(), ids.len());
    let top = v["top"].as_array().unwrap();
    let expected = f["logits_stats"]["argmax_per_position"].as_array().unwrap();
    assert_eq!(top.len(), expected.len());
    for (t, e) in top.iter().zip(expected) {
        let t = t.as_array().unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(&t[0]["id"], e);
        let lp: Vec<f64> = t.iter().map(|x| x["logprob"].as_f64().unwrap()).collect();
        assert!(lp[0] <= 0.0 && lp[0] >= lp[1] && lp[1] >= lp[2]);
    }
}

#[test]
fn logits_errors_are_clear() {
    let dir = ferrite_testdata::reference_dir().join("arch");
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["logits", dir.join("tiny-qwen2-Q8_0.gguf").to_str().unwrap()])
        .args(["--ids", "1,99999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token id 99999 is out of range"));
}
