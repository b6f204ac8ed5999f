//! `ferrite tokenize`, `detokenize` and `template` as a user runs them, checked against
//! llama.cpp's token ids (../shared/reference/tokenize-*.json) and the jinja2 rendering the
//! engine's chat-template tests already use.

use std::path::Path;
use std::process::{Command, Output};

fn ferrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .output()
        .expect("run ferrite")
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "ferrite failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn reference(name: &str) -> serde_json::Value {
    let path = ferrite_testdata::reference_dir().join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Reference cases through the CLI, in all four flag combinations, text passed as a byte-exact
/// file like llama-tokenize's `-f`. Every case is checked in-process by the engine's
/// `tokenize_reference` test; here a spread of them proves the CLI plumbing (one process per
/// call, so the whole set would cost a minute of loading vocabularies).
fn tokenize_matches_llama_cpp(model: &Path, reference_file: &str) {
    let cases = reference(reference_file)["cases"]
        .as_array()
        .unwrap()
        .clone();
    let dir = tempfile::tempdir().unwrap();
    let text_file = dir.path().join("text.txt");
    let model = model.to_str().unwrap();
    let mut checked = 0;
    // Every third case: still whitespace runs, digits, code, accents, CJK, emoji and the
    // special tokens, at a third of the cost.
    for case in cases.iter().step_by(3) {
        let text = case["text"].as_str().unwrap();
        std::fs::write(&text_file, text).unwrap();
        let file = text_file.to_str().unwrap();
        for (key, flags) in [
            ("ids_parse_special", &[][..]),
            ("ids_no_special", &["--no-special"][..]),
            ("ids_parse_special_no_bos", &["--no-bos"][..]),
            ("ids_no_special_no_bos", &["--no-special", "--no-bos"][..]),
        ] {
            let mut args = vec!["tokenize", model, "--file", file, "--json"];
            args.extend_from_slice(flags);
            let got: serde_json::Value =
                serde_json::from_str(stdout_ok(&ferrite(&args)).trim()).expect("one JSON array");
            assert_eq!(ids(&got), ids(&case[key]), "{key} for {text:?}");
            checked += 1;
        }
    }
    assert!(checked >= 36, "only {checked} cases checked");
}

#[test]
fn tokenize_cli_matches_llama_cpp_smollm2() {
    tokenize_matches_llama_cpp(&ferrite_testdata::smollm2(), "tokenize-smollm2.json");
}

#[test]
fn tokenize_cli_matches_llama_cpp_gemma3() {
    tokenize_matches_llama_cpp(&ferrite_testdata::gemma3(), "tokenize-gemma3.json");
}

#[test]
fn detokenize_inverts_tokenize() {
    let model = ferrite_testdata::smollm2();
    let model = model.to_str().unwrap();
    let text = "Hello, wörld! 你好 🦀\n  indented";
    let out = stdout_ok(&ferrite(&["tokenize", model, text, "--json"]));
    let list: Vec<String> = ids(&serde_json::from_str(out.trim()).unwrap())
        .iter()
        .map(|i| i.to_string())
        .collect();
    let mut args = vec!["detokenize", model];
    args.extend(list.iter().map(String::as_str));
    let back = stdout_ok(&ferrite(&args));
    // A trailing newline may be added for the terminal; the text itself must come back whole.
    assert_eq!(back.strip_suffix('\n').unwrap_or(&back), text);
}

#[test]
fn template_renders_like_jinja2() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/data/chat_expected.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let model = ferrite_testdata::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let messages = dir.path().join("messages.json");
    let mut checked = 0;
    for case in expected["cases"].as_array().unwrap() {
        if case["template"] != "smollm2" {
            continue;
        }
        std::fs::write(&messages, case["messages"].to_string()).unwrap();
        let mut args = vec![
            "template",
            model.to_str().unwrap(),
            "--messages",
            messages.to_str().unwrap(),
        ];
        if case["add_generation_prompt"] == false {
            args.push("--no-generation-prompt");
        }
        let got = stdout_ok(&ferrite(&args));
        let want = case["expected"].as_str().unwrap();
        assert!(
            got == want || got.strip_suffix('\n') == Some(want),
            "template output differs:\n{got:?}\n{want:?}"
        );
        checked += 1;
    }
    assert!(checked >= 2);
}

#[test]
fn unknown_model_file_is_a_clear_error() {
    let model = "/nonexistent/model.gguf";
    let commands: [&[&str]; 7] = [
        &["tokenize", model, "hi"],
        &["inspect", model],
        &[
            "dump",
            model,
            "token_embd.weight",
            "-o",
            "/nonexistent/out.npy",
        ],
        &["run", model, "-p", "hi"],
        &["bench", model, "-r", "1"],
        &["logits", model, "-p", "hi"],
        &["serve", model, "--port", "0"],
    ];
    for args in commands {
        let out = ferrite(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(model), "{args:?}: {err}");
        // The OS's reason once: a wrapped error's message is not printed again as its cause.
        let reason = std::fs::File::open(model).unwrap_err().to_string();
        assert_eq!(err.matches(&reason).count(), 1, "{args:?}: {err}");
    }
}
