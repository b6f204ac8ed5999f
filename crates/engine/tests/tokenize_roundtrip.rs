//! Round trips and cross-checks on the real models' tokenizers:
//! - SmolLM2's byte-level BPE against Hugging Face `tokenizers` fed the same vocabulary and
//!   merges (`tests/data/smollm2_hf_tokenizers.json`, from `scripts/tokenizers_reference.py`);
//! - decode(encode(s)) == s on a Unicode corpus and on random strings (proptest), for both
//!   models; neither model adds a SentencePiece prefix space or cleans up spaces, so the round
//!   trip is exact once the BOS token (Gemma adds one) is left out, except that SentencePiece
//!   spells a space `▁` (U+2581), so a literal `▁` in the text comes back as a space (as in
//!   SentencePiece and llama.cpp);
//! - the streaming decoder yields exactly what `decode` does.

use std::sync::OnceLock;

use ferrite_engine::tokenizer::{StreamDecoder, Tokenizer};
use ferrite_gguf::GgufFile;
use proptest::prelude::*;

fn load(path: std::path::PathBuf) -> Tokenizer {
    let f = GgufFile::open(&path).expect("open model");
    Tokenizer::from_metadata(f.metadata()).expect("tokenizer loads")
}

fn smollm2() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load(ferrite_testdata::smollm2()))
}

fn gemma3() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load(ferrite_testdata::gemma3()))
}

const CORPUS: &[&str] = &[
    "Hello world! This is a simple English sentence.",
    "   leading, trailing   ",
    "line one\nline two\n\nline four\n\r\n\t\t",
    "Ça va? Élève, garçon, naïve, déjà vu. Größe, Straße, Über, schön.",
    "你好，世界！今天天气很好。こんにちは、世界。한국어 텍스트",
    "Family 👨\u{200d}👩\u{200d}👧\u{200d}👦, flags 🇫🇷🇯🇵, skin tone 👍🏽, heart ❤️",
    // Valid but odd: replacement char, BOM, noncharacters, private use, the last code point,
    // unassigned code points, lone combining marks, controls, bidi marks.
    "\u{FFFD}\u{FEFF}x\u{FFFE}\u{FFFF}\u{E000}\u{F8FF}\u{10FFFF}\u{0378}\u{0301}\u{20DD}",
    "\u{0}\u{1}\u{7}\u{1b}[0m\u{7f}\u{80}\u{9f}\u{200e}\u{200f}\u{202e}abc\u{2066}",
    "e\u{301}\u{301}\u{301} \u{915}\u{93f}\u{928}\u{94d}\u{926}\u{940} ไทย",
    "<|im_start|>user\nHi<|im_end|> <start_of_turn>model <bos><eos><pad>",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𓀀𓀁 𐍈 \u{1F9E0}",
    "",
    " ",
    "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
];

#[test]
fn smollm2_matches_hf_tokenizers() {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/smollm2_hf_tokenizers.json"
    );
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let mut failures = Vec::new();
    let cases = data["cases"].as_array().unwrap();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let got = smollm2().encode(text, false, false).unwrap();
        if got != want {
            failures.push(format!("{text:?}\n want {want:?}\n got  {got:?}"));
        }
    }
    assert!(cases.len() >= 28);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn round_trip(tok: &Tokenizer, s: &str) -> Result<(), String> {
    for parse_special in [false, true] {
        let ids = tok
            .encode(s, true, parse_special)
            .map_err(|e| e.to_string())?;
        let body = match (tok.add_bos(), ids.first()) {
            (true, Some(&b)) if Some(b) == tok.bos() => &ids[1..],
            _ => &ids[..],
        };
        let back = tok.decode(body);
        let want = if tok.model_name() == "llama" {
            s.replace('\u{2581}', " ")
        } else {
            s.to_string()
        };
        if back != want {
            return Err(format!(
                "parse_special={parse_special}: {s:?} -> {ids:?} -> {back:?}"
            ));
        }
        let mut sd = StreamDecoder::new(tok);
        let mut streamed: String = body.iter().map(|&i| sd.push(i)).collect();
        streamed.push_str(&sd.finish());
        if streamed != back {
            return Err(format!("stream {streamed:?} != decode {back:?}"));
        }
    }
    Ok(())
}

#[test]
fn corpus_round_trips() {
    let mut failures = Vec::new();
    for tok in [smollm2(), gemma3()] {
        for s in CORPUS {
            if let Err(e) = round_trip(tok, s) {
                failures.push(format!("{}: {e}", tok.model_name()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn skip_special_hides_control_tokens() {
    let t = smollm2();
    let ids = t
        .encode("<|im_start|>user\nHi<|im_end|>", false, true)
        .unwrap();
    assert_eq!(ids.len(), 5);
    assert_eq!(t.decode(&ids), "<|im_start|>user\nHi<|im_end|>");
    assert_eq!(t.decode_with(&ids, true), "user\nHi");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_strings_round_trip(s in any::<String>()) {
        prop_assert_eq!(round_trip(smollm2(), &s), Ok(()));
        prop_assert_eq!(round_trip(gemma3(), &s), Ok(()));
    }

    #[test]
    fn random_mixtures_of_hard_pieces_round_trip(
        parts in proptest::collection::vec(
            proptest::sample::select(vec![
                " ", "  ", "\n", "\t", "\r\n", "a", "Z", "é", "e\u{301}", "1", "23", "٣", "'s",
                "'", "!", "...", "你", "🦀", "👍🏽", "\u{200d}", "<|im_end|>", "<eos>",
                "<start_of_turn>", "<", ">", "|", "\u{0}", "\u{FFFD}", "▁", "Ġ",
            ]),
            0..40,
        )
    ) {
        let s: String = parts.concat();
        prop_assert_eq!(round_trip(smollm2(), &s), Ok(()));
        prop_assert_eq!(round_trip(gemma3(), &s), Ok(()));
    }
}

/// Timing probe (not a check): `cargo test --release -- --ignored --nocapture timing`.
#[test]
#[ignore]
fn timing_probe() {
    let text = std::fs::read_to_string("/usr/share/common-licenses/GPL-3").unwrap();
    let one_line = text.replace('\n', " ");
    for (name, tok) in [("smollm2", smollm2()), ("gemma3", gemma3())] {
        for (label, t, ps) in [
            ("gpl ps", &text, true),
            ("gpl nops", &text, false),
            ("oneline ps", &one_line, true),
        ] {
            let t0 = std::time::Instant::now();
            for _ in 0..10 {
                tok.encode(t, true, ps).unwrap();
            }
            eprintln!("{name} {label}: {:?}", t0.elapsed() / 10);
        }
    }
}
