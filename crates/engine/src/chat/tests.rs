use super::*;
use serde_json::json;

fn msgs() -> Vec<Message> {
    vec![Message::new("user", "hi")]
}

#[test]
fn raise_exception_is_an_error_with_its_message() {
    let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "t");
    let e = t
        .render(&msgs(), false, json!(null))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no system role"), "{e}");
}

#[test]
fn runaway_templates_run_out_of_fuel() {
    let t = ChatTemplate::new(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "t",
    );
    let e = t
        .render(&msgs(), false, json!(null))
        .unwrap_err()
        .to_string();
    assert!(e.to_lowercase().contains("fuel"), "{e}");
}

#[test]
fn kwargs_become_variables_and_must_be_an_object() {
    let t = ChatTemplate::new(
        "{% if enable_thinking %}think{% else %}no-think{% endif %}",
        "t",
    );
    assert_eq!(
        t.render(&msgs(), false, json!({"enable_thinking": false}))
            .unwrap(),
        "no-think"
    );
    assert_eq!(
        t.render(&msgs(), false, json!({"enable_thinking": true}))
            .unwrap(),
        "think"
    );
    assert!(t.render(&msgs(), false, json!([1])).is_err());
}

#[test]
fn strftime_now_formats_the_date() {
    let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "t");
    let y = t.render(&msgs(), false, json!(null)).unwrap();
    assert_eq!(y.len(), 4);
    assert!(y.starts_with("20"));
}

#[test]
fn builtin_names() {
    for n in ["chatml", "llama2", "llama3", "gemma", "mistral", "phi3"] {
        let t = ChatTemplate::builtin(n).unwrap();
        t.render(&[Message::new("user", "x")], true, json!(null))
            .unwrap();
    }
    let e = ChatTemplate::builtin("nope").unwrap_err().to_string();
    assert!(e.contains("'nope'") && e.contains("chatml"), "{e}");
}

#[test]
fn builtin_choice_by_architecture_and_vocabulary() {
    use ferrite_gguf::{Array, Metadata, Value as G};
    let md = |arch: &str, name: &str, toks: &[&str]| {
        let mut m = Metadata::new();
        m.set("general.architecture", G::String(arch.into()));
        m.set("general.name", G::String(name.into()));
        m.set(
            "tokenizer.ggml.tokens",
            G::Array(Array::String(toks.iter().collect())),
        );
        m
    };
    assert_eq!(
        builtin_for(&md("qwen2", "Qwen", &["<|im_start|>"])),
        "chatml"
    );
    assert_eq!(builtin_for(&md("gemma3", "Gemma 3", &["<bos>"])), "gemma");
    assert_eq!(
        builtin_for(&md("llama", "Llama 3", &["<|start_header_id|>"])),
        "llama3"
    );
    assert_eq!(builtin_for(&md("phi3", "Phi 3", &["<s>"])), "phi3");
    assert_eq!(builtin_for(&md("llama", "Mistral 7B", &["<s>"])), "mistral");
    assert_eq!(builtin_for(&md("llama", "Llama 2", &["<s>"])), "llama2");
    assert_eq!(builtin_for(&md("rwkv", "x", &[])), "chatml");
}

#[test]
fn reasoning_show_hide_separate() {
    let text = "<think>\nLet me see.\n</think>\n\nParis.";
    assert_eq!(
        split_reasoning(text),
        (Some("\nLet me see.\n"), "\n\nParis.")
    );
    assert_eq!(apply_reasoning(text, ReasoningMode::Show).0, text);
    assert_eq!(
        apply_reasoning(text, ReasoningMode::Hide),
        ("Paris.".into(), None)
    );
    assert_eq!(
        apply_reasoning(text, ReasoningMode::Separate),
        ("Paris.".into(), Some("Let me see.".into()))
    );
    // Still thinking: everything is reasoning.
    assert_eq!(split_reasoning("<think>hmm"), (Some("hmm"), ""));
    // The template opened the block: only the closing tag appears.
    assert_eq!(split_reasoning("hmm</think>ok"), (Some("hmm"), "ok"));
    assert_eq!(split_reasoning("plain"), (None, "plain"));
}
