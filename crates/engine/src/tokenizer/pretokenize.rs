//! Pre-tokenizers for byte-level BPE: split text into the "words" that BPE merges never cross.
//!
//! Each `tokenizer.ggml.pre` value names a list of split rules applied one after the other: every
//! rule splits each chunk left by the previous one, and text between matches is kept as a chunk
//! of its own (as Hugging Face's `Split(..., behavior="isolated")` and llama.cpp do).
//!
//! The two patterns nearly every model uses (GPT-2's and Llama 3's, the latter also with single
//! digits as Qwen 2 uses it) and the "each digit alone" rule are written by hand: they are linear,
//! allocate nothing per match, and avoid a backtracking engine (the patterns need look-ahead, which
//! the linear-time `regex` crate lacks, and `fancy-regex` is several times slower on them). The
//! remaining patterns are rarer and run on `fancy-regex`, whose semantics are those of the
//! Hugging Face tokenizers the patterns come from.
//!
//! Character classes follow llama.cpp: letters are `\p{L}`, numbers `\p{N}`, whitespace is the
//! Unicode `White_Space` property, and "other" (`[^\s\p{L}\p{N}]`) excludes unassigned code points.

use unicode_general_category::{get_general_category, GeneralCategory as G};

use super::TokenizerError;

const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 4;
const OTHER: u8 = 8;

fn class_slow(c: char) -> u8 {
    if c.is_whitespace() {
        return SPACE;
    }
    match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => LETTER,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => NUMBER,
        G::Unassigned => 0,
        _ => OTHER,
    }
}

static ASCII_CLASS: [u8; 128] = {
    let mut t = [OTHER; 128];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        t[i] = if c.is_ascii_alphabetic() {
            LETTER
        } else if c.is_ascii_digit() {
            NUMBER
        } else if matches!(c, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r') {
            SPACE
        } else {
            // Punctuation, symbols and control characters (Cc) are all "other".
            OTHER
        };
        i += 1;
    }
    t
};

#[inline]
fn class(c: char) -> u8 {
    if (c as u32) < 128 {
        ASCII_CLASS[c as usize]
    } else {
        class_slow(c)
    }
}

/// One split rule.
#[derive(Debug)]
enum Rule {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// Llama 3's pattern; `max_digits` 3 (Llama 3) or 1 (Qwen 2, StableLM 2).
    Llama3 {
        max_digits: usize,
    },
    /// `\p{N}`: every digit alone.
    EachDigit,
    Regex(Box<fancy_regex::Regex>),
}

/// A pre-tokenizer: the rules for one `tokenizer.ggml.pre` value.
#[derive(Debug)]
pub struct PreTokenizer {
    rules: Vec<Rule>,
}

/// Flags a `pre` value implies besides its split rules (llama.cpp's defaults for it).
#[derive(Debug, Clone, Copy, Default)]
pub struct PreFlags {
    pub ignore_merges: bool,
    pub add_bos: bool,
    pub clean_spaces: bool,
    pub no_bos: bool,
}

#[cfg(test)]
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

impl PreTokenizer {
    /// The pre-tokenizer named by `tokenizer.ggml.pre`. Unknown names are an error, never a
    /// silent fallback: a wrong split changes every token.
    pub fn for_name(pre: &str) -> Result<(PreTokenizer, PreFlags), TokenizerError> {
        let re = |s: &str| -> Result<Rule, TokenizerError> {
            fancy_regex::Regex::new(s)
                .map(|r| Rule::Regex(Box::new(r)))
                .map_err(|e| TokenizerError::Invalid(format!("pre-tokenizer pattern {s:?}: {e}")))
        };
        let mut f = PreFlags {
            clean_spaces: true,
            ..Default::default()
        };
        let rules = match pre {
            "default" => vec![
                re(r"[\p{P}\$\+<=>\^~\|]+")?,
                Rule::Gpt2,
                re(r"\p{N}+")?,
                re(r"[0-9][0-9][0-9]")?,
            ],
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => {
                f.ignore_merges = true;
                f.add_bos = true;
                vec![Rule::Llama3 { max_digits: 3 }]
            }
            "dbrx" | "smaug-bpe" => vec![Rule::Llama3 { max_digits: 3 }],
            "glm4" | "chatglm-bpe" => {
                f.no_bos = true;
                vec![Rule::Llama3 { max_digits: 3 }]
            }
            "deepseek-llm" => {
                f.clean_spaces = false;
                // Canonically-decomposable code points (Greek Extended, Ω, K) are escaped so
                // that no Unicode normalisation of this source file can change the ranges.
                vec![
                    re(r"[\r\n]")?,
                    re(
                        r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝ\x{1F5F}-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌ\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-\x{212D}ℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
                    )?,
                    re(r"\s?[!-/:-~！-／：-～‘-‟　-。]+")?,
                    re(r"\s+$")?,
                    re(r"[一-龥ࠀ-一가-퟿]+")?,
                    re(r"\p{N}+")?,
                ]
            }
            "deepseek-coder" => {
                f.clean_spaces = false;
                vec![
                    re(r"[\r\n]")?,
                    re(r"\s?\p{L}+")?,
                    re(r"\s?\p{P}+")?,
                    re(r"[一-龥ࠀ-一가-퟿]+")?,
                    Rule::EachDigit,
                ]
            }
            "falcon" => vec![
                re(r"[\p{P}\$\+<=>\^~\|`]+")?,
                Rule::Gpt2,
                re(r"[0-9][0-9][0-9]")?,
            ],
            "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "jina-es" | "jina-de" | "gigachat"
            | "jina-v2-es" | "jina-v2-de" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
            | "a.x-4.0" | "mellum" | "exaone4" | "trillion" | "granite-docling" => {
                vec![Rule::Gpt2]
            }
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" => {
                vec![Rule::EachDigit, Rule::Gpt2]
            }
            "command-r" | "smollm" => {
                f.clean_spaces = false;
                vec![Rule::EachDigit, Rule::Gpt2]
            }
            "stablelm2" => vec![Rule::Llama3 { max_digits: 1 }],
            "qwen2" | "deepseek-r1-qwen" | "megrez" | "hunyuan" => {
                f.clean_spaces = false;
                vec![Rule::Llama3 { max_digits: 1 }]
            }
            "tekken" => {
                f.clean_spaces = false;
                f.ignore_merges = true;
                f.add_bos = true;
                vec![re(
                    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
                )?]
            }
            "gpt-4o" | "llama4" => {
                f.clean_spaces = false;
                vec![re(
                    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
                )?]
            }
            "poro-chat" | "bloom" | "gpt3-finnish" => {
                if pre == "poro-chat" {
                    f.clean_spaces = false;
                }
                vec![re(r" ?[^(\s|.,!?…。，、।۔،)]+")?]
            }
            other => return Err(TokenizerError::UnknownPre(other.to_string())),
        };
        Ok((PreTokenizer { rules }, f))
    }

    /// The GPT-2 rule alone (used by tests and by the `tokenizers` cross-check).
    #[cfg(test)]
    pub(crate) fn gpt2() -> PreTokenizer {
        PreTokenizer {
            rules: vec![Rule::Gpt2],
        }
    }

    /// Splits `text` into chunks (byte ranges, in order, covering all of `text`).
    pub fn split(&self, text: &str, out: &mut Vec<(usize, usize)>) -> Result<(), TokenizerError> {
        out.clear();
        if text.is_empty() {
            return Ok(());
        }
        out.push((0, text.len()));
        let mut next = Vec::new();
        let mut chars = Vec::new();
        for rule in &self.rules {
            next.clear();
            for &(s, e) in out.iter() {
                let chunk = &text[s..e];
                match rule {
                    Rule::Gpt2 => split_gpt2(chunk, s, &mut chars, &mut next),
                    Rule::Llama3 { max_digits } => {
                        split_llama3(chunk, s, *max_digits, &mut chars, &mut next)
                    }
                    Rule::EachDigit => split_digits(chunk, s, &mut next),
                    Rule::Regex(re) => split_regex(re, chunk, s, &mut next)?,
                }
            }
            std::mem::swap(out, &mut next);
        }
        Ok(())
    }
}

/// Character table of a chunk: byte offset, char, class; plus a sentinel end offset.
fn load_chars(chunk: &str, chars: &mut Vec<(u32, char, u8)>) {
    chars.clear();
    chars.extend(chunk.char_indices().map(|(i, c)| (i as u32, c, class(c))));
}

struct Emitter<'a> {
    base: usize,
    len: usize,
    chars: &'a [(u32, char, u8)],
    out: &'a mut Vec<(usize, usize)>,
    start: usize,
}

impl Emitter<'_> {
    #[inline]
    fn off(&self, pos: usize) -> usize {
        if pos < self.chars.len() {
            self.chars[pos].0 as usize
        } else {
            self.len
        }
    }
    #[inline]
    fn emit(&mut self, pos: usize) {
        let end = self.off(pos);
        if end > self.start {
            self.out.push((self.base + self.start, self.base + end));
        }
        self.start = end;
    }
}

#[inline]
fn cls(chars: &[(u32, char, u8)], i: usize) -> u8 {
    chars.get(i).map_or(0, |c| c.2)
}

#[inline]
fn ch(chars: &[(u32, char, u8)], i: usize) -> char {
    chars.get(i).map_or('\0', |c| c.1)
}

/// Length in chars of a contraction (`'s`, `'re`, ...) at `pos`, 0 if none.
#[inline]
fn contraction(chars: &[(u32, char, u8)], pos: usize, any_case: bool) -> usize {
    if ch(chars, pos) != '\'' {
        return 0;
    }
    let low = |c: char| if any_case { c.to_ascii_lowercase() } else { c };
    let c1 = low(ch(chars, pos + 1));
    if matches!(c1, 's' | 't' | 'm' | 'd') {
        return 2;
    }
    let c2 = low(ch(chars, pos + 2));
    if matches!((c1, c2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
        return 3;
    }
    0
}

/// Whitespace handling shared by both hand-written rules: `\s+(?!\S)|\s+`. Returns the new pos.
#[inline]
fn whitespace_run(chars: &[(u32, char, u8)], pos: usize) -> usize {
    let n = chars.len();
    let mut k = pos;
    while k < n && chars[k].2 == SPACE {
        k += 1;
    }
    let run = k - pos;
    if run > 1 && k < n {
        k - 1
    } else if run > 0 {
        k
    } else {
        pos + 1
    }
}

fn split_gpt2(
    chunk: &str,
    base: usize,
    chars: &mut Vec<(u32, char, u8)>,
    out: &mut Vec<(usize, usize)>,
) {
    load_chars(chunk, chars);
    let cs = &chars[..];
    let n = cs.len();
    let mut em = Emitter {
        base,
        len: chunk.len(),
        chars: cs,
        out,
        start: 0,
    };
    let mut pos = 0;
    while pos < n {
        let k = contraction(cs, pos, false);
        if k > 0 {
            pos += k;
            em.emit(pos);
            continue;
        }
        let p = pos + usize::from(cs[pos].1 == ' ');
        let c = cls(cs, p);
        if c == LETTER || c == NUMBER || c == OTHER {
            pos = p + 1;
            while pos < n && cs[pos].2 == c {
                pos += 1;
            }
            em.emit(pos);
            continue;
        }
        pos = whitespace_run(cs, pos);
        em.emit(pos);
    }
}

fn split_llama3(
    chunk: &str,
    base: usize,
    max_digits: usize,
    chars: &mut Vec<(u32, char, u8)>,
    out: &mut Vec<(usize, usize)>,
) {
    load_chars(chunk, chars);
    let cs = &chars[..];
    let n = cs.len();
    let mut em = Emitter {
        base,
        len: chunk.len(),
        chars: cs,
        out,
        start: 0,
    };
    let mut pos = 0;
    while pos < n {
        let (c0, f0) = (cs[pos].1, cs[pos].2);
        let k = contraction(cs, pos, true);
        if k > 0 {
            pos += k;
            em.emit(pos);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if f0 == LETTER || (c0 != '\r' && c0 != '\n' && f0 != NUMBER && cls(cs, pos + 1) == LETTER)
        {
            pos += 1;
            while pos < n && cs[pos].2 == LETTER {
                pos += 1;
            }
            em.emit(pos);
            continue;
        }
        // \p{N}{1,max}
        if f0 == NUMBER {
            let mut d = 0;
            while pos < n && d < max_digits && cs[pos].2 == NUMBER {
                pos += 1;
                d += 1;
            }
            em.emit(pos);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let p = pos + usize::from(c0 == ' ');
        if cls(cs, p) == OTHER {
            pos = p + 1;
            while pos < n && cs[pos].2 == OTHER {
                pos += 1;
            }
            while pos < n && matches!(cs[pos].1, '\r' | '\n') {
                pos += 1;
            }
            em.emit(pos);
            continue;
        }
        // \s*[\r\n]+
        let mut k = pos;
        let mut last_nl = None;
        while k < n && cs[k].2 == SPACE {
            if matches!(cs[k].1, '\r' | '\n') {
                last_nl = Some(k + 1);
            }
            k += 1;
        }
        if let Some(e) = last_nl {
            pos = e;
            em.emit(pos);
            continue;
        }
        pos = whitespace_run(cs, pos);
        em.emit(pos);
    }
}

fn split_digits(chunk: &str, base: usize, out: &mut Vec<(usize, usize)>) {
    let mut start = 0;
    for (i, c) in chunk.char_indices() {
        if class(c) == NUMBER {
            if i > start {
                out.push((base + start, base + i));
            }
            let e = i + c.len_utf8();
            out.push((base + i, base + e));
            start = e;
        }
    }
    if start < chunk.len() {
        out.push((base + start, base + chunk.len()));
    }
}

fn split_regex(
    re: &fancy_regex::Regex,
    chunk: &str,
    base: usize,
    out: &mut Vec<(usize, usize)>,
) -> Result<(), TokenizerError> {
    let mut start = 0;
    for m in re.find_iter(chunk) {
        let m = m.map_err(|e| TokenizerError::Invalid(format!("pre-tokenizer: {e}")))?;
        if m.start() > start {
            out.push((base + start, base + m.start()));
        }
        if m.end() > m.start() {
            out.push((base + m.start(), base + m.end()));
        }
        start = m.end();
    }
    if start < chunk.len() {
        out.push((base + start, base + chunk.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(p: &PreTokenizer, s: &str) -> Vec<String> {
        let mut v = Vec::new();
        p.split(s, &mut v).unwrap();
        v.iter().map(|&(a, b)| s[a..b].to_string()).collect()
    }

    /// The hand-written rules agree with the regex engine running the original patterns.
    #[test]
    fn hand_written_rules_match_regex() {
        let gpt2_re = PreTokenizer {
            rules: vec![Rule::Regex(Box::new(
                fancy_regex::Regex::new(GPT2_RE).unwrap(),
            ))],
        };
        let l3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        let l3_re = PreTokenizer {
            rules: vec![Rule::Regex(Box::new(fancy_regex::Regex::new(l3).unwrap()))],
        };
        let q2 = l3.replace("{1,3}", "");
        let q2_re = PreTokenizer {
            rules: vec![Rule::Regex(Box::new(fancy_regex::Regex::new(&q2).unwrap()))],
        };
        let gpt2 = PreTokenizer::gpt2();
        let llama3 = PreTokenizer {
            rules: vec![Rule::Llama3 { max_digits: 3 }],
        };
        let qwen2 = PreTokenizer {
            rules: vec![Rule::Llama3 { max_digits: 1 }],
        };
        let cases = [
            "Hello world! This is a test.",
            "   leading and trailing   ",
            "a\n\n  b\t\tc \n d\r\n\r\ne",
            "I'm can't we'LL they've 'S 'x ''s",
            "12345 3.14159 1,000,000 ①②③ ٣٤٥",
            "def f(x):\n    return x**2  # comment\n",
            "Ça va? naïve 你好，世界 こんにちは 🦀🐍 👨\u{200d}👩",
            "x  \u{a0}\u{3000}y\u{2028}z \u{301}e\u{301}",
            "<|im_start|>user\n{\"a\": [1, 2]}",
            " ",
            "\n",
            "   \n\n\t  \t\n   ",
            "!!!  ???\n\n...",
        ];
        for s in cases {
            assert_eq!(pieces(&gpt2, s), pieces(&gpt2_re, s), "gpt2 {s:?}");
            assert_eq!(pieces(&llama3, s), pieces(&l3_re, s), "llama3 {s:?}");
            assert_eq!(pieces(&qwen2, s), pieces(&q2_re, s), "qwen2 {s:?}");
        }
    }

    #[test]
    fn unknown_pre_is_an_error_naming_it() {
        let e = PreTokenizer::for_name("no-such-pre").unwrap_err();
        assert!(e.to_string().contains("no-such-pre"), "{e}");
    }

    #[test]
    fn every_listed_pre_builds() {
        for name in [
            "default",
            "gpt-2",
            "llama-bpe",
            "llama3",
            "qwen2",
            "smollm",
            "starcoder",
            "deepseek-llm",
            "deepseek-coder",
            "tekken",
            "gpt-4o",
            "falcon",
            "refact",
            "command-r",
            "olmo",
            "stablelm2",
            "phi-2",
        ] {
            let (p, _) = PreTokenizer::for_name(name).unwrap();
            assert!(!pieces(&p, "Hello 123 world!\n").is_empty(), "{name}");
        }
    }
}
