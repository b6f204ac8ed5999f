//! `ferrite serve` on the real SmolLM2 model, driven by the official `openai` Python package
//! (installed by scripts/test.sh from scripts/requirements.txt): chat, streamed chat equal to
//! the non-streamed greedy text, completion with logprobs, /v1/models, 32 concurrent streams
//! with `--parallel 4` equal to one-at-a-time ids, 10 of 32 clients disconnecting mid-stream,
//! a 429 burst, SIGTERM → exit 0. See scripts/test_server_openai.py. About a minute on a busy
//! 2-core machine.

use std::process::Command;

#[test]
fn serve_with_the_openai_package() {
    let root = ferrite_testdata::repo_root();
    let model = ferrite_testdata::smollm2();
    let out = Command::new("python3")
        .arg(root.join("scripts/test_server_openai.py"))
        .arg(env!("CARGO_BIN_EXE_ferrite"))
        .arg(&model)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "openai checks failed:\n{stdout}\n{stderr}"
    );
}
