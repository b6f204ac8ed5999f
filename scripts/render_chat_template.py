#!/usr/bin/env python3
"""Expected chat-template renderings from Python's jinja2, configured as Hugging Face
`transformers` configures it (apply_chat_template): ImmutableSandboxedEnvironment with
trim_blocks, lstrip_blocks, loop controls, `raise_exception`, `strftime_now` and its `tojson`.

Renders SmolLM2's own template (read from the GGUF file with the `gguf` package) and ferrite's
built-in templates (crates/engine/src/chat/templates/*.jinja) on a few conversations and writes
crates/engine/tests/data/chat_expected.json, which the Rust tests compare against.

Usage: scripts/render_chat_template.py [MODELS_DIR]   (default $FERRITE_MODELS or models/)
"""
import json
import os
import sys
from datetime import datetime

import gguf
import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    e = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[loopcontrols])
    e.filters["tojson"] = tojson
    e.globals["raise_exception"] = raise_exception
    e.globals["strftime_now"] = strftime_now
    return e


def gguf_str(reader, key):
    f = reader.fields[key]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def main():
    models = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "FERRITE_MODELS", os.path.join(ROOT, "models"))
    r = gguf.GGUFReader(os.path.join(models, "SmolLM2-135M-Instruct.Q4_1.gguf"))
    templates = {"smollm2": gguf_str(r, "tokenizer.chat_template")}
    tdir = os.path.join(ROOT, "crates/engine/src/chat/templates")
    for name in sorted(os.listdir(tdir)):
        if name.endswith(".jinja"):
            with open(os.path.join(tdir, name), encoding="utf-8") as fh:
                templates["builtin:" + name[:-6]] = fh.read()

    three_turns = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital of France."},
        {"role": "user", "content": "And of Italy? Answer in  one word.\n"},
    ]
    with_system = [{"role": "system", "content": "You are terse. Use «quotes» and 🦀."}] + three_turns
    conversations = {"three_turns": three_turns, "with_system": with_system}

    cases = []
    e = env()
    for tname, src in templates.items():
        tmpl = e.from_string(src)
        for cname, msgs in conversations.items():
            for agp in (True, False):
                kwargs = {"bos_token": "<BOS>", "eos_token": "<EOS>"}
                out = tmpl.render(messages=msgs, add_generation_prompt=agp, **kwargs)
                cases.append({"template": tname, "conversation": cname, "messages": msgs,
                              "add_generation_prompt": agp, "bos_token": "<BOS>",
                              "eos_token": "<EOS>", "expected": out})

    # Python-compatible methods, tojson, loop controls and extra variables.
    features = (
        "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
        "{{ m['content'].strip().split(' ')[0] }}|{{ m['role'].startswith('us') }}|"
        "{% for k, v in m.items() %}{% if k == 'role' %}{% continue %}{% endif %}{{ k }}={{ v | length }};{% endfor %}"
        "{% endfor %}{{ messages[0] | tojson }}{{ {'a': [1, 2.5, None, True], 'é': 'x\"\\n'} | tojson(indent=2) }}"
        "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>{% endif %}"
    )
    out = e.from_string(features).render(messages=with_system, add_generation_prompt=False,
                                         enable_thinking=False, bos_token="", eos_token="")
    cases.append({"template": "inline:features", "source": features, "conversation": "with_system",
                  "messages": with_system, "add_generation_prompt": False,
                  "kwargs": {"enable_thinking": False}, "bos_token": "", "eos_token": "",
                  "expected": out})

    path = os.path.join(ROOT, "crates/engine/tests/data/chat_expected.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"generator": "scripts/render_chat_template.py (jinja2 %s)" % jinja2.__version__,
                   "templates": {k: v for k, v in templates.items() if k == "smollm2"},
                   "cases": cases}, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    print("wrote", path, len(cases), "cases")


if __name__ == "__main__":
    main()
