//! `ferrite run`, `chat` and `perplexity` end to end on the real models, against llama.cpp's
//! reference outputs (`../shared/reference`).

use std::io::Write;
use std::process::{Command, Stdio};

fn ferrite(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// SmolLM2's chat format written out by hand (ChatML).
fn chatml(user: &str) -> String {
    format!(
        "<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n\
         <|im_start|>assistant\n"
    )
}

fn reference(name: &str) -> serde_json::Value {
    let p = ferrite_testdata::reference_dir().join(name);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Greedy `run --json` follows llama.cpp's greedy path for as long as llama.cpp's top-1/top-2
/// margin exceeds 0.5 nats at every step (where numerics cannot flip the choice), tokenizes
/// the prompt as llama.cpp did, and reports log-probabilities in the requested shape.
#[test]
fn run_json_greedy_follows_llama_cpp() {
    let model = ferrite_testdata::smollm2();
    let r = reference("greedy-smollm2.json");
    for case in r["results"].as_array().unwrap() {
        let steps = case["per_step_top5_logprobs"].as_array().unwrap();
        let margin = |s: &serde_json::Value| {
            s["top"][0]["logprob"].as_f64().unwrap() - s["top"][1]["logprob"].as_f64().unwrap()
        };
        let n_sure = steps.iter().take_while(|s| margin(s) > 0.5).count().min(6);
        if n_sure < 3 {
            continue;
        }
        let n = n_sure.to_string();
        let prompt = case["prompt"].as_str().unwrap();
        let (ok, stdout, stderr) = ferrite(&[
            "run",
            model.to_str().unwrap(),
            "-p",
            prompt,
            "-n",
            &n,
            "--temp",
            "0",
            "--json",
            "--logprobs",
            "3",
            "-c",
            "256",
        ]);
        assert!(ok, "{stderr}");
        assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            u32s(&v["prompt_ids"]),
            u32s(&case["prompt_ids"]),
            "{prompt:?}"
        );
        let ids = u32s(&v["ids"]);
        assert_eq!(
            ids[..],
            u32s(&case["generated_ids"])[..n_sure],
            "{prompt:?}: first {n_sure} greedy tokens"
        );
        assert_eq!(v["stop_reason"], "length");
        let text = v["text"].as_str().unwrap();
        let ref_text = case["generated_text"].as_str().unwrap();
        assert!(ref_text.starts_with(text), "{text:?} vs {ref_text:?}");
        let top = v["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), n_sure);
        for (i, (t, step)) in top.iter().zip(steps).enumerate() {
            let t = t.as_array().unwrap();
            assert_eq!(t.len(), 3);
            assert_eq!(t[0]["id"].as_u64().unwrap() as u32, ids[i]);
            let lp: Vec<f64> = t.iter().map(|x| x["logprob"].as_f64().unwrap()).collect();
            assert!(lp[0] <= 0.0 && lp[0] >= lp[1] && lp[1] >= lp[2], "{lp:?}");
            let want = step["top"][0]["logprob"].as_f64().unwrap();
            assert!((lp[0] - want).abs() < 0.5, "step {i}: {} vs {want}", lp[0]);
        }
        for k in ["load_ms", "prompt_tokens_per_s", "gen_tokens_per_s"] {
            assert!(v["timings"][k].as_f64().unwrap() > 0.0, "{k}");
        }
    }
}

/// A stop string ends the text before it (`stop`); the chat markup in a prompt is parsed into
/// special tokens and the reply ends on `<|im_end|>` (`eos`).
#[test]
fn run_stop_reasons() {
    let model = ferrite_testdata::smollm2();
    let m = model.to_str().unwrap();
    let (ok, stdout, stderr) = ferrite(&[
        "run",
        m,
        "-p",
        "The capital of France is",
        "-n",
        "12",
        "--temp",
        "0",
        "--stop",
        ".",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["text"], " Paris");
    assert_eq!(v["stop_reason"], "stop");
    assert!(v.get("top_logprobs").is_none());

    let (ok, stdout, stderr) = ferrite(&[
        "run",
        m,
        "-p",
        &chatml("Hi!"),
        "-n",
        "40",
        "--temp",
        "0",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let prompt = u32s(&v["prompt_ids"]);
    assert_eq!(prompt[0], 1, "<|im_start|> is one special token");
    assert_eq!(v["stop_reason"], "eos", "{stdout}");
    assert_eq!(
        *u32s(&v["ids"]).last().unwrap(),
        2,
        "<|im_end|> ends the turn"
    );
    assert!(!v["text"].as_str().unwrap().contains("<|im_end|>"));

    // Streaming prints the same text as --json reports.
    let (ok, streamed, _) = ferrite(&[
        "run",
        m,
        "-p",
        "The capital of France is",
        "-n",
        "5",
        "--temp",
        "0",
    ]);
    assert!(ok);
    assert_eq!(streamed, " Paris.\n\nThe");

    let (ok, _, stderr) = ferrite(&["run", m, "-p", "Hi", "-n", "300", "-c", "64"]);
    assert!(!ok);
    assert!(stderr.contains("need a context of"), "{stderr}");
}

/// `chat` with messages piped on stdin: the model's template renders what `run` gets from
/// the hand-written ChatML prompt (same greedy reply), history carries over, `/reset` starts
/// over; only replies are printed, and the exit status is 0.
#[test]
fn chat_from_a_pipe() {
    let model = ferrite_testdata::smollm2();
    let m = model.to_str().unwrap();
    let (ok, stdout, stderr) = ferrite(&[
        "run",
        m,
        "-p",
        &chatml("Hi!"),
        "-n",
        "40",
        "--temp",
        "0",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let first = v["text"].as_str().unwrap().trim().to_string();
    assert!(!first.is_empty());

    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["chat", m, "--temp", "0", "-n", "40", "--system", SYSTEM])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hi!\nWhat is 2+2?\n/reset\nHi!\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!("{first}\n")),
        "{stdout:?} vs {first:?}"
    );
    assert!(stdout.ends_with(&format!("\n{first}\n")), "{stdout:?}");
    assert!(
        stdout.len() > 2 * (first.len() + 2),
        "a second reply: {stdout:?}"
    );
}

fn perplexity(model: &std::path::Path, extra: &[&str]) -> (f64, f64, Vec<f64>) {
    let mut args = vec![
        "perplexity",
        model.to_str().unwrap(),
        "-f",
        "/usr/share/common-licenses/GPL-3",
        "-c",
        "512",
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = ferrite(&args);
    assert!(ok, "{stderr}");
    let last = stdout.lines().last().unwrap();
    let rest = last.strip_prefix("Final estimate: PPL = ").unwrap();
    let (ppl, err) = rest.split_once(" +/- ").unwrap();
    let running = stdout
        .lines()
        .next()
        .unwrap()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.split(']').nth(1).unwrap().parse().unwrap())
        .collect();
    (ppl.parse().unwrap(), err.parse().unwrap(), running)
}

fn reference_ppl(name: &str) -> serde_json::Value {
    reference("perplexity.json")
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap()
        .clone()
}

/// The first chunk of llama.cpp's perplexity run on GPL-3 (-c 512). One chunk (255 scored
/// tokens) is noisier than the whole run: llama.cpp's own first-chunk figure moves by 1.8%
/// between this Q4_1 file and its F32 original (16.5546 vs 16.2628), so 2.5% here; the whole run
/// (ignored test below) meets 1%.
#[test]
fn perplexity_first_chunk_matches_llama_cpp() {
    let r = reference_ppl("smollm2-q4_1-orig");
    let (ppl, _, running) = perplexity(&ferrite_testdata::smollm2(), &["--chunks", "1"]);
    let want = r["running_ppl_per_chunk"][0].as_f64().unwrap();
    assert_eq!(running.len(), 1);
    assert!(
        (ppl / want - 1.0).abs() < 0.025,
        "{ppl} vs llama.cpp {want}"
    );
}

/// The full GPL-3 run on both real models, within 1% of llama.cpp (about two minutes on 2
/// cores with the SIMD kernels; the proof, so it stays in the default suite).
#[test]
fn perplexity_matches_llama_cpp_on_both_models() {
    for (name, model) in [
        ("smollm2-q4_1-orig", ferrite_testdata::smollm2()),
        ("gemma3-q4_k_m-orig", ferrite_testdata::gemma3()),
    ] {
        let r = reference_ppl(name);
        let (ppl, err, running) = perplexity(&model, &[]);
        let want = r["ppl"].as_f64().unwrap();
        eprintln!(
            "{name}: ferrite {ppl} +/- {err}, llama.cpp {want} +/- {}",
            r["ppl_err"]
        );
        assert_eq!(running.len(), r["n_chunks"].as_u64().unwrap() as usize);
        assert!((ppl / want - 1.0).abs() < 0.01, "{name}: {ppl} vs {want}");
        let want_err = r["ppl_err"].as_f64().unwrap();
        assert!(
            (err / want_err - 1.0).abs() < 0.05,
            "{name}: ± {err} vs {want_err}"
        );
    }
}

/// `logits -p` tokenizes like `run` (llama.cpp's prompt ids) and its last position's best
/// token is llama.cpp's first greedy token.
#[test]
fn logits_with_a_text_prompt() {
    let r = reference("greedy-smollm2.json");
    let case = &r["results"][0];
    let model = ferrite_testdata::smollm2();
    let (ok, stdout, stderr) = ferrite(&[
        "logits",
        model.to_str().unwrap(),
        "-p",
        case["prompt"].as_str().unwrap(),
        "--top",
        "1",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(u32s(&v["ids"]), u32s(&case["prompt_ids"]));
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), u32s(&case["prompt_ids"]).len());
    assert_eq!(top.last().unwrap()[0]["id"], case["generated_ids"][0]);
}
