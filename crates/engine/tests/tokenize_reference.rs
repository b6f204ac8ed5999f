//! The real models' tokenizers against llama.cpp's `llama-tokenize` output
//! (`../shared/reference/tokenize-*.json`): every case, with and without special-token parsing,
//! with and without BOS, must match exactly. Each test reports every mismatch before failing.

use ferrite_engine::tokenizer::Tokenizer;
use ferrite_gguf::GgufFile;
use serde_json::Value;

fn load(path: std::path::PathBuf) -> Tokenizer {
    let f = GgufFile::open(&path).expect("open model");
    Tokenizer::from_metadata(f.metadata()).expect("tokenizer loads")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn check(tok: &Tokenizer, file: &str) {
    let path = ferrite_testdata::reference_dir().join(file);
    let data: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cases = data["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases {
        let text = case["text"].as_str().unwrap();
        for (key, add_special, parse_special) in [
            ("ids_parse_special", true, true),
            ("ids_no_special", true, false),
            ("ids_parse_special_no_bos", false, true),
            ("ids_no_special_no_bos", false, false),
        ] {
            let want = ids(&case[key]);
            let got = tok.encode(text, add_special, parse_special).unwrap();
            checked += 1;
            if got != want {
                failures.push(format!("{key} {text:?}\n   want {want:?}\n   got  {got:?}"));
            }
        }
        // The pieces llama.cpp printed are the vocabulary strings of the ids.
        let pieces: Vec<&str> = case["pieces_parse_special"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let got: Vec<&str> = ids(&case["ids_parse_special"])
            .iter()
            .map(|&i| tok.token_text(i).unwrap())
            .collect();
        if got != pieces {
            failures.push(format!("pieces {text:?}: {pieces:?} vs {got:?}"));
        }
    }
    assert!(checked >= 4 * 28, "only {checked} cases");
    assert!(
        failures.is_empty(),
        "{} of {checked} mismatches in {file}:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{file}: {checked} of {checked} encodings match");
}

#[test]
fn smollm2_matches_llama_cpp() {
    let tok = load(ferrite_testdata::smollm2());
    assert_eq!(tok.model_name(), "gpt2");
    check(&tok, "tokenize-smollm2.json");
}

#[test]
fn gemma3_matches_llama_cpp() {
    let tok = load(ferrite_testdata::gemma3());
    assert_eq!(tok.model_name(), "llama");
    check(&tok, "tokenize-gemma3.json");
}

#[test]
fn special_ids_and_end_of_generation() {
    let s = load(ferrite_testdata::smollm2());
    assert_eq!((s.bos(), s.eos(), s.add_bos()), (Some(1), Some(2), false));
    // <|endoftext|> (0) and <|im_end|> (2) end generation.
    assert!(s.is_eog(0) && s.is_eog(2) && !s.is_eog(1));
    let g = load(ferrite_testdata::gemma3());
    assert_eq!((g.bos(), g.eos(), g.add_bos()), (Some(2), Some(1), true));
    let eot = g.token_id("<end_of_turn>").unwrap();
    assert!(g.is_eog(eot) && g.is_eog(1));
    assert_eq!(g.eot(), Some(eot));
}
