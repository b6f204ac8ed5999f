//! Test-only helper shared by every crate's tests: paths to the real models (fetched on first
//! use by `scripts/fetch-models.sh` into the git-ignored cache) and to llama.cpp's reference
//! outputs in `../shared/reference`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root exists")
}

/// llama.cpp's reference data: `$FERRITE_REFERENCE`, else `<repo>/../shared/reference`.
pub fn reference_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRITE_REFERENCE") {
        return PathBuf::from(p);
    }
    let p = repo_root().join("../shared/reference");
    assert!(
        p.is_dir(),
        "reference data not found at {} (set FERRITE_REFERENCE)",
        p.display()
    );
    p
}

fn models_dir() -> PathBuf {
    std::env::var_os("FERRITE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models"))
}

static FETCH: Mutex<()> = Mutex::new(());

fn model(which: &str, file: &str) -> PathBuf {
    let path = models_dir().join(file);
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/fetch-models.sh"))
            .arg(which)
            .status()
            .expect("run scripts/fetch-models.sh");
        assert!(status.success(), "scripts/fetch-models.sh {which} failed");
    }
    path
}

/// SmolLM2-135M-Instruct Q4_1 (llama architecture, GPT-2 BPE).
pub fn smollm2() -> PathBuf {
    model("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Gemma 3 270M Q4_K_M (SentencePiece vocabulary).
pub fn gemma3() -> PathBuf {
    model("gemma3", "gemma-3-270m-q4_k_m.gguf")
}

/// The folder of the regenerated F32 tiny multi-architecture fixtures (`<models>/arch`),
/// made by `scripts/make-arch-fixtures.sh` on first use.
pub fn arch_f32_dir() -> PathBuf {
    let dir = models_dir().join("arch");
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/make-arch-fixtures.sh"))
        .env("FERRITE_MODELS", models_dir())
        .env("FERRITE_REFERENCE", reference_dir())
        .status()
        .expect("run scripts/make-arch-fixtures.sh");
    assert!(status.success(), "scripts/make-arch-fixtures.sh failed");
    dir
}
