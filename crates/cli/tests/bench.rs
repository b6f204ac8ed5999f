//! `ferrite bench` end to end on the real SmolLM2 file: the JSON report's shape and sanity,
//! and clear errors for bad arguments.

use std::process::{Command, Output};

use serde_json::Value as Json;

fn ferrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .output()
        .expect("running ferrite")
}

/// `ferrite bench SmolLM2 ARGS... --json`, which must succeed: its rows.
fn bench_smollm2(args: &[&str]) -> Vec<Json> {
    let model = ferrite_testdata::smollm2();
    let mut all = vec!["bench", model.to_str().unwrap()];
    all.extend(args);
    all.push("--json");
    let out = ferrite(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Json = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().clone()
}

#[test]
fn json_report_has_one_entry_per_test_and_thread_count() {
    let rows = bench_smollm2(&["-p", "8", "-n", "3", "-r", "2", "-t", "1,2"]);
    let got: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["test"].as_str().unwrap().to_string(),
                r["n_threads"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("pp8", 1), ("tg3", 1), ("pp8", 2), ("tg3", 2)].map(|(t, n)| (t.to_string(), n))
    );
    for r in &rows {
        assert_eq!(r["samples_ts"].as_array().unwrap().len(), 2);
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0);
        assert_eq!(r["model_type"], "Q4_1");
        assert_eq!(r["model_n_params"], 134_515_008);
    }
}

#[test]
fn depth_runs_each_test_after_that_many_cached_tokens() {
    let rows = bench_smollm2(&["-p", "8", "-n", "3", "-d", "0,16", "-r", "1", "-t", "1"]);
    let got: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["test"].as_str().unwrap().to_string(),
                r["n_depth"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("pp8", 0), ("tg3", 0), ("pp8 @ d16", 16), ("tg3 @ d16", 16)]
            .map(|(t, d)| (t.to_string(), d))
    );
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let out = ferrite(&["bench"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model given"));
    let out = ferrite(&["bench", "/nonexistent.gguf", "-r", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.gguf"));
}

#[test]
fn roofline_reports_bytes_per_token_and_the_machine_bandwidth() {
    let rows = bench_smollm2(&["-p", "8", "-n", "3", "-r", "2", "-t", "1", "--roofline"]);
    let (pp, tg) = (&rows[0], &rows[1]);
    assert!(pp.get("bytes_per_token").is_none(), "{pp}");
    // SmolLM2 ties its output to the token embeddings: each token reads every matrix of
    // the file once, plus 30 layers × 3 KV heads × (64 + 64) f16 values per cached
    // position (1, 2 and 3 positions visible over tg3: 2 on average).
    let file = ferrite_gguf::GgufFile::open(ferrite_testdata::smollm2()).unwrap();
    let matrices: u64 = file
        .tensors()
        .iter()
        .filter(|t| t.dims.len() == 2)
        .map(|t| t.n_bytes)
        .sum();
    assert_eq!(tg["bytes_per_token"], matrices + 30 * 3 * 128 * 2 * 2);
    let probes = tg["samples_machine_read_bytes_per_s"].as_array().unwrap();
    assert_eq!(probes.len(), 2);
    assert!(
        probes.iter().all(|b| b.as_f64().unwrap() > 1e8),
        "{probes:?}"
    );
    let achieved = tg["avg_bytes_per_s"].as_f64().unwrap();
    let expected = tg["bytes_per_token"].as_f64().unwrap() * tg["avg_ts"].as_f64().unwrap();
    assert!((achieved / expected - 1.0).abs() < 1e-9);
    assert!(tg["avg_roofline_share"].as_f64().unwrap() > 0.0);
}
