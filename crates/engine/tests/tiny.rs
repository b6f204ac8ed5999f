//! The tiny random llama in every GGUF type against llama.cpp's logits
//! (`../shared/reference/tiny`), batched and one token at a time.

mod common;

use common::{check, compare, read_npy, run_logits};
use ferrite_engine::{Error, Model};
use ferrite_quant::QuantError;

#[test]
fn tiny_llama_every_type_matches_llama_cpp() {
    let dir = ferrite_testdata::reference_dir().join("tiny");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let ids: Vec<u32> = manifest["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let types = manifest["types"].as_object().unwrap();
    let (mut failures, mut ran, mut unsupported) = (Vec::new(), Vec::new(), Vec::new());
    for (ty, info) in types {
        let path = dir.join(info["file"].as_str().unwrap());
        // Types the gguf/quant crates do not know yet are listed, not silently passed.
        let model = match Model::load(&path, Default::default()) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{ty}: cannot load: {e}");
                unsupported.push(ty.clone());
                continue;
            }
        };
        let n_vocab = model.config().n_vocab;
        let probe = model
            .session(Default::default())
            .and_then(|mut s| s.eval(&ids[..1]).map(|_| ()));
        if let Err(Error::Quant {
            error: QuantError::Unsupported(_),
            ..
        }) = probe
        {
            unsupported.push(ty.clone());
            continue;
        }
        for (mode, batched) in [("batch", true), ("seq", false)] {
            let ours = run_logits(&model, &ids, batched);
            let (_, reference) = read_npy(&dir.join(format!("{ty}.{mode}.npy")));
            let d = compare(&ours, &reference, n_vocab);
            eprintln!(
                "{ty:8} {mode:5} max_abs {:.2e} max_rel_l2 {:.4} argmax_mismatch {}",
                d.max_abs, d.max_rel_l2, d.argmax_mismatch
            );
            if let Err(e) = check(ty, &d) {
                failures.push(format!("{mode} {e}"));
            }
        }
        ran.push(ty.clone());
    }
    eprintln!("checked: {ran:?}\nnot yet dequantizable: {unsupported:?}");
    for must in ["F32", "F16", "BF16", "Q8_0"] {
        assert!(ran.iter().any(|t| t == must), "{must} was not checked");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Small batches, no KV cache (recompute every step) and one-at-a-time all give the same
/// logits as one big batch.
#[test]
fn batch_size_and_disabled_cache_do_not_change_logits() {
    let path = ferrite_testdata::reference_dir().join("tiny/tiny-llama-f32.gguf");
    let model = Model::load(&path, Default::default()).unwrap();
    let ids: Vec<u32> = (0..12).map(|i| 1 + 97 * i).collect();
    let run = |batch_size, kv_cache| {
        let mut s = model
            .session(ferrite_engine::SessionOptions {
                n_ctx: Some(16),
                kv_type: ferrite_engine::KvType::F32,
                kv_cache,
                n_threads: Some(1),
                batch_size,
            })
            .unwrap();
        let mut out = s.eval_all(&ids[..7]).unwrap();
        out.extend(s.eval_all(&ids[7..]).unwrap());
        out
    };
    let base = run(512, true);
    for (b, kv) in [(3, true), (1, true), (512, false), (5, false)] {
        let other = run(b, kv);
        let d = base
            .iter()
            .zip(&other)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(d < 1e-4, "batch {b} kv {kv}: {d}");
    }
    let mut s = model.session(Default::default()).unwrap();
    s.eval(&ids).unwrap();
    let e = s.eval(&vec![1; 5000]).unwrap_err();
    assert!(e.to_string().contains("context is full"), "{e}");
}
