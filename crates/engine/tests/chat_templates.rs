//! Chat templates rendered by ferrite (minijinja) against Python's jinja2 configured as
//! `transformers` does: `tests/data/chat_expected.json`, written by
//! `scripts/render_chat_template.py`. Exact string equality.

use ferrite_engine::chat::{ChatTemplate, Message};
use ferrite_gguf::GgufFile;
use serde_json::Value;

fn expected() -> Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/chat_expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn templates_render_exactly_as_jinja2() {
    let data = expected();
    let f = GgufFile::open(ferrite_testdata::smollm2()).unwrap();
    let smollm2 = ChatTemplate::from_metadata(f.metadata(), None).unwrap();
    assert_eq!(smollm2.origin, "metadata");
    // The committed expectation was rendered from this very template text.
    assert_eq!(
        smollm2.source(),
        data["templates"]["smollm2"].as_str().unwrap()
    );
    let mut failures = Vec::new();
    let cases = data["cases"].as_array().unwrap();
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let mut t = if name == "smollm2" {
            smollm2.clone()
        } else if let Some(b) = name.strip_prefix("builtin:") {
            ChatTemplate::builtin(b).unwrap()
        } else {
            ChatTemplate::new(case["source"].as_str().unwrap(), name)
        };
        t.bos_token = case["bos_token"].as_str().unwrap().into();
        t.eos_token = case["eos_token"].as_str().unwrap().into();
        let msgs: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        let got = t.render(&msgs, agp, case["kwargs"].clone()).unwrap();
        let want = case["expected"].as_str().unwrap();
        if got != want {
            failures.push(format!(
                "{name} / {} / agp={agp}\n want {want:?}\n got  {got:?}",
                case["conversation"]
            ));
        }
    }
    assert!(cases.len() >= 29);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn gemma3_falls_back_to_the_builtin_gemma_template() {
    let f = GgufFile::open(ferrite_testdata::gemma3()).unwrap();
    let md = f.metadata();
    assert!(md.get("tokenizer.chat_template").is_none());
    let t = ChatTemplate::from_metadata(md, None).unwrap();
    assert_eq!(t.origin, "builtin:gemma");
    assert_eq!(
        (t.bos_token.as_str(), t.eos_token.as_str()),
        ("<bos>", "<eos>")
    );
    let msgs = [
        Message::new("system", "Be brief."),
        Message::new("user", "Hi"),
    ];
    let s = t.render(&msgs, true, Value::Null).unwrap();
    assert_eq!(
        s,
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
    // The tokenizer adds BOS itself, so the prompt form drops the template's.
    let p = t.render_prompt(&msgs, true, Value::Null, true).unwrap();
    assert!(p.starts_with("<start_of_turn>user"));
}
