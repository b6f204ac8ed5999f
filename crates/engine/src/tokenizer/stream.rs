//! Incremental detokenization for streaming output.
//!
//! A token may end in the middle of a UTF-8 sequence (byte-fallback tokens, byte-level BPE
//! pieces of an emoji), so bytes are held back until the sequence completes; a sequence that
//! can never complete becomes U+FFFD. The concatenation of all `push` results and `finish`
//! equals `String::from_utf8_lossy` of the whole byte stream.

use super::Tokenizer;

/// Turns token ids into text one token at a time, never emitting a partial UTF-8 sequence.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    tok: Tokenizer,
    pending: Vec<u8>,
    first: bool,
    skip_special: bool,
}

impl StreamDecoder {
    /// A decoder for a sequence that starts here: as in llama.cpp's detokenizer, the first
    /// token loses the SentencePiece prefix space when the model adds one (`add_space_prefix`).
    pub fn new(tok: &Tokenizer) -> Self {
        StreamDecoder {
            tok: tok.clone(),
            pending: Vec::new(),
            first: true,
            skip_special: false,
        }
    }

    /// A decoder for tokens that continue an existing sequence (generation after a prompt):
    /// no space is stripped.
    pub fn continuing(tok: &Tokenizer) -> Self {
        StreamDecoder {
            first: false,
            ..Self::new(tok)
        }
    }

    /// Control tokens (BOS, end-of-turn, ...) produce no text.
    pub fn skip_special(mut self, yes: bool) -> Self {
        self.skip_special = yes;
        self
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let first = std::mem::replace(&mut self.first, false);
        let piece = self.tok.piece_in_sequence(id, first, self.skip_special);
        self.pending.extend_from_slice(piece);
        self.drain(false)
    }

    /// Ends the stream: bytes still held back (an incomplete sequence) become U+FFFD.
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    fn drain(&mut self, at_end: bool) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (ok, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(ok).expect("valid prefix"));
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        None if at_end => {
                            out.push('\u{FFFD}');
                            rest = &[];
                            break;
                        }
                        None => {
                            rest = bad;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let len = self.pending.len();
        self.pending.drain(..len - keep);
        out
    }
}
