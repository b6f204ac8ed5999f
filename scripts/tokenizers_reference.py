#!/usr/bin/env python3
"""Independent reference for ferrite's byte-level BPE: Hugging Face's `tokenizers` package fed
SmolLM2's vocabulary and merges (read from the GGUF file with the `gguf` package) and SmolLM2's
pre-tokenizer (individual digits, then GPT-2 byte-level splitting).

Writes crates/engine/tests/data/smollm2_hf_tokenizers.json: for each text, the ids of
`encode(text, add_special_tokens=False)`. Special-token text is not in these cases (HF would need
its added-token table); llama.cpp's reference files cover special tokens.

Usage: scripts/tokenizers_reference.py [MODELS_DIR]   (default $FERRITE_MODELS or models/)
"""
import json
import os
import sys

import gguf
import tokenizers
from tokenizers import Tokenizer, models, pre_tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEXTS = [
    "Hello, world! I'm here; you're there. We'll see, they've gone, it'd be DON'T WON'T.",
    "  two leading spaces, three trailing   ",
    "tabs\tand\t\tnewlines\n\n\nand\r\nwindows\r\nline ends \n \n",
    "numbers 0 12 345 6789 3.14159 -42 1e10 0x1F 1,234,567.89",
    "unicode digits ١٢٣ ४५६ ⅣⅫ ①② ¹²³",
    "Ça va? Élève, garçon, naïve, déjà vu. Größe, Straße, Œuvre, smörgåsbord",
    "combining: e\u0301 a\u0300 n\u0303 \u0915\u093f\u0928\u094d\u0926\u0940 ไทย ภาษา",
    "CJK 日本語のテキストと中文文本，还有한국어 텍스트。",
    "emoji 🦀🐍😀👍🏽 👨\u200d👩\u200d👧\u200d👦 🇫🇷🇯🇵 ❤️ ✨",
    "Arabic العربية and Hebrew עברית and Greek Ελληνικά and Cyrillic кириллица",
    "code: fn main() { let x: Vec<u8> = vec![1, 2, 3]; println!(\"{x:?}\"); }",
    "def f(a, b=2, *args, **kw):\n    return a ** b // 3  # comment\n\tpass\n",
    "<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>",
    "URL https://example.com/a/b?c=d&e=f#g and mail user+tag@example.org",
    "math ∑∫∂√∞≠≤≥±×÷ and symbols ©®™§¶†‡•…‰′″",
    "nbsp\u00a0here, ideographic\u3000space, zero\u200bwidth, line\u2028sep",
    "control chars \x01\x02\x7f and bell \x07 escape \x1b[0m",
    "'''quotes''' \"double\" ‘single’ “curly” «guillemets» ''s 's'S",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabc",
    "                                                                        end",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!??????",
    "MixedCASE camelCase snake_case kebab-case SCREAMING_CASE PascalCase",
    "",
    " ",
    "\n",
    "x",
    "\U0001F600" * 20,
]


def main():
    models_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "FERRITE_MODELS", os.path.join(ROOT, "models"))
    r = gguf.GGUFReader(os.path.join(models_dir, "SmolLM2-135M-Instruct.Q4_1.gguf"))

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = []
    for m in strings("tokenizer.ggml.merges"):
        i = m.index(" ", 1)
        merges.append((m[:i], m[i + 1:]))
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    cases = [{"text": t, "ids": tk.encode(t, add_special_tokens=False).ids} for t in TEXTS]
    path = os.path.join(ROOT, "crates/engine/tests/data/smollm2_hf_tokenizers.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"generator": "scripts/tokenizers_reference.py (tokenizers %s)" % tokenizers.__version__,
                   "cases": cases}, fh, ensure_ascii=False, indent=0)
        fh.write("\n")
    print("wrote", path, len(cases), "cases")


if __name__ == "__main__":
    main()
