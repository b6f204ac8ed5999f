//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`): GPT-2's byte-to-character map, merges by
//! rank.
//!
//! Each pre-tokenized word starts as one symbol per byte (the vocabulary spells byte `b` as the
//! character `byte_char(b)`), then the adjacent pair with the lowest merge rank is merged, the
//! leftmost first on ties, until no pair has a rank. Symbols are token ids and merges are looked
//! up by id pair, so the hot loop never builds strings.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use super::pretokenize::{PreFlags, PreTokenizer};
use super::TokenizerError;

/// GPT-2's reversible map from bytes to printable characters.
pub fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("valid code point")
}

/// The inverse of [`byte_char`].
pub fn char_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 256 {
        let b = u as u8;
        (byte_char(b) == c).then_some(b)
    } else {
        BYTE_OF_CHAR.get((u - 256) as usize).copied().flatten()
    }
}

static BYTE_OF_CHAR: [Option<u8>; 68] = {
    let mut t = [None; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        let x = b as u8;
        let printable = (x >= b'!' && x <= b'~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
        if !printable {
            t[n] = Some(x);
            n += 1;
        }
        b += 1;
    }
    t
};

/// The byte-level text of `bytes` as the vocabulary spells it.
pub fn byte_level(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_char(b)).collect()
}

#[derive(Debug)]
pub struct Bpe {
    pub pre: PreTokenizer,
    pub flags: PreFlags,
    /// Token of each single byte, if the vocabulary has it.
    byte_tok: [Option<u32>; 256],
    /// (left id, right id) → (rank, merged id).
    merges: FxHashMap<u64, (u32, u32)>,
}

/// A queued merge: (rank, left index, right index, left id, right id).
type Pending = (u32, usize, usize, u32, u32);

#[inline]
fn key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

impl Bpe {
    pub fn new(
        pre: &str,
        merges: &ferrite_gguf::StringArray,
        lookup: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<Bpe, TokenizerError> {
        let (pre, flags) = PreTokenizer::for_name(pre)?;
        let mut byte_tok = [None; 256];
        for (b, slot) in byte_tok.iter_mut().enumerate() {
            *slot = lookup(byte_char(b as u8).encode_utf8(&mut [0; 4]));
        }
        let mut map = FxHashMap::default();
        map.reserve(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let bad = |why: &str| {
                TokenizerError::Invalid(format!("tokenizer.ggml.merges[{rank}] = {m:?}: {why}"))
            };
            // Split at the first space after the first character (a token may start with one).
            let split = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(i, _)| i)
                .ok_or_else(|| bad("not two tokens separated by a space"))?;
            let (a, b) = (&m[..split], &m[split + 1..]);
            let ia = lookup(a).ok_or_else(|| bad(&format!("{a:?} is not in the vocabulary")))?;
            let ib = lookup(b).ok_or_else(|| bad(&format!("{b:?} is not in the vocabulary")))?;
            let joined = format!("{a}{b}");
            let ij = lookup(&joined)
                .ok_or_else(|| bad(&format!("the merged {joined:?} is not in the vocabulary")))?;
            // The first occurrence of a pair keeps its rank (later duplicates are ignored).
            map.entry(key(ia, ib)).or_insert((rank as u32, ij));
        }
        Ok(Bpe {
            pre,
            flags,
            byte_tok,
            merges: map,
        })
    }

    #[inline]
    fn merge(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.merges.get(&key(a, b)).copied()
    }

    /// Tokenizes one pre-tokenized word.
    pub fn word(&self, bytes: &[u8], out: &mut Vec<u32>, scratch: &mut Vec<u32>) {
        if bytes.len() > 48 {
            return self.word_heap(bytes, out);
        }
        // Short words (nearly all): repeated scans of a small id vector beat a heap.
        let syms = scratch;
        syms.clear();
        syms.extend(
            bytes
                .iter()
                .map(|&b| self.byte_tok[b as usize].unwrap_or(u32::MAX)),
        );
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let Some((rank, merged)) = self.merge(syms[i], syms[i + 1]) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, merged));
                    }
                }
            }
            match best {
                Some((_, i, merged)) => {
                    syms[i] = merged;
                    syms.remove(i + 1);
                }
                None => break,
            }
        }
        // A byte the vocabulary lacks produces nothing (as llama.cpp).
        out.extend(syms.iter().copied().filter(|&id| id != u32::MAX));
    }

    fn word_heap(&self, bytes: &[u8], out: &mut Vec<u32>) {
        struct Sym {
            id: u32,
            prev: usize,
            next: usize,
        }
        const NONE: usize = usize::MAX;
        let n = bytes.len();
        let mut syms: Vec<Sym> = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| Sym {
                id: self.byte_tok[b as usize].unwrap_or(u32::MAX),
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
            })
            .collect();
        // (rank, left index) orders the queue; the ids detect entries made stale by a merge.
        let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: usize, r: usize| {
            if l == NONE || r == NONE {
                return;
            }
            if let Some((rank, _)) = self.merge(syms[l].id, syms[r].id) {
                heap.push(Reverse((rank, l, r, syms[l].id, syms[r].id)));
            }
        };
        for i in 1..n {
            push(&mut heap, &syms, i - 1, i);
        }
        while let Some(Reverse((_, l, r, lid, rid))) = heap.pop() {
            if syms[l].id != lid || syms[l].next != r || syms[r].id != rid {
                continue;
            }
            let (_, merged) = self.merge(lid, rid).expect("rank was found");
            syms[l].id = merged;
            syms[r].id = u32::MAX - 1; // dead
            let rn = syms[r].next;
            syms[l].next = rn;
            if rn != NONE {
                syms[rn].prev = l;
            }
            let lp = syms[l].prev;
            push(&mut heap, &syms, lp, l);
            push(&mut heap, &syms, l, rn);
        }
        let mut i = 0;
        while i != NONE {
            if syms[i].id < u32::MAX - 1 {
                out.push(syms[i].id);
            }
            i = syms[i].next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_char(b);
            assert!(seen.insert(c));
            assert_eq!(char_byte(c), Some(b));
        }
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(char_byte('a'), Some(b'a'));
        assert_eq!(char_byte('€'), None);
    }
}
