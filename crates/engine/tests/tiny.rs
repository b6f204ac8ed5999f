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
            source: QuantError::Unsupported(_),
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
