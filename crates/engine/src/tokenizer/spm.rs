//! SentencePiece-style BPE over scores (`tokenizer.ggml.model = "llama"`: Llama 2, Mistral,
//! Gemma).
//!
//! Spaces are spelled `▁` (U+2581). The text starts as one symbol per character; the adjacent
//! pair whose concatenation is a token with the highest score is merged (the leftmost first on
//! ties) until no pair forms a token. A final symbol that is not a token (a character outside the
//! vocabulary) falls back to its UTF-8 bytes as `<0xXX>` tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use super::TokenizerError;

#[derive(Debug)]
pub struct Spm {
    /// Token of each byte for the fallback: `<0xXX>`, else the byte itself as a one-char token.
    pub byte_tok: [Option<u32>; 256],
    /// Tokens with a `▁` right after another character (Gemma 3 has one: `>▁</`). Without
    /// them no merge can cross the boundary before a word's `▁`, so the text splits into words
    /// that are tokenized independently (and cached) with exactly the same result.
    pub crossing: Vec<String>,
}

/// Above this many crossing tokens, words are not split (the result is the same, only slower).
pub const MAX_CROSSING: usize = 64;

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

struct Sym {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

impl Spm {
    /// Tokenizes `text` (spaces already escaped as `▁`), word by word where that is exact.
    pub fn encode_words(
        &self,
        text: &str,
        lookup: &dyn Fn(&str) -> Option<u32>,
        score: &dyn Fn(u32) -> f32,
        cache: &mut FxHashMap<String, Vec<u32>>,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        if self.crossing.len() > MAX_CROSSING {
            return self.encode(text, lookup, score, out);
        }
        // Byte ranges inside which no boundary may fall (occurrences of crossing tokens).
        let mut blocked: Vec<(usize, usize)> = Vec::new();
        for c in &self.crossing {
            blocked.extend(
                text.match_indices(c.as_str())
                    .map(|(i, m)| (i, i + m.len())),
            );
        }
        let ok = |p: usize| !blocked.iter().any(|&(s, e)| s < p && p < e);
        let mut start = 0;
        let mut prev_is_space = true;
        for (i, c) in text.char_indices() {
            let is_space = c == '\u{2581}';
            if is_space && !prev_is_space && i > start && ok(i) {
                self.encode_cached(&text[start..i], lookup, score, cache, out)?;
                start = i;
            }
            prev_is_space = is_space;
        }
        self.encode_cached(&text[start..], lookup, score, cache, out)
    }

    fn encode_cached(
        &self,
        word: &str,
        lookup: &dyn Fn(&str) -> Option<u32>,
        score: &dyn Fn(u32) -> f32,
        cache: &mut FxHashMap<String, Vec<u32>>,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        if let Some(ids) = cache.get(word) {
            out.extend_from_slice(ids);
            return Ok(());
        }
        let n = out.len();
        self.encode(word, lookup, score, out)?;
        if word.len() <= 64 {
            cache.insert(word.to_string(), out[n..].to_vec());
        }
        Ok(())
    }

    /// Tokenizes `text` (spaces already escaped as `▁`) as one piece.
    pub fn encode(
        &self,
        text: &str,
        lookup: &dyn Fn(&str) -> Option<u32>,
        score: &dyn Fn(u32) -> f32,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
        for (i, c) in text.char_indices() {
            let idx = syms.len();
            syms.push(Sym {
                start: i,
                len: c.len_utf8(),
                prev: if idx == 0 { NONE } else { idx - 1 },
                next: idx + 1,
            });
        }
        if let Some(last) = syms.last_mut() {
            last.next = NONE;
        } else {
            return Ok(());
        }
        let mut heap = BinaryHeap::new();
        let try_add = |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], l: usize, r: usize| {
            if l == NONE || r == NONE {
                return;
            }
            let (s, e) = (syms[l].start, syms[r].start + syms[r].len);
            if let Some(id) = lookup(&text[s..e]) {
                heap.push(Bigram {
                    score: score(id),
                    left: l,
                    right: r,
                    size: e - s,
                });
            }
        };
        for i in 1..syms.len() {
            try_add(&mut heap, &syms, i - 1, i);
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (b.left, b.right);
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != b.size {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            let rn = syms[r].next;
            syms[l].next = rn;
            if rn != NONE {
                syms[rn].prev = l;
            }
            let lp = syms[l].prev;
            try_add(&mut heap, &syms, lp, l);
            try_add(&mut heap, &syms, l, rn);
        }
        let mut i = 0;
        while i != NONE {
            let s = &syms[i];
            let piece = &text[s.start..s.start + s.len];
            match lookup(piece) {
                Some(id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        out.push(self.byte_tok[b as usize].ok_or_else(|| {
                            TokenizerError::Encode(format!(
                                "no token for byte 0x{b:02X} (needed for {piece:?}) in the vocabulary"
                            ))
                        })?);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }
}
