//! Tokenizers built from GGUF metadata (`tokenizer.ggml.*`), exact to the token against llama.cpp.
//!
//! - [`Tokenizer::from_metadata`] reads the vocabulary, validates it (malformed vocabularies are
//!   load errors, never panics) and picks the model: `gpt2` (byte-level BPE with the pre-tokenizer
//!   named by `tokenizer.ggml.pre`, see [`pretokenize`]) or `llama` (SentencePiece-style, see
//!   [`spm`]). `bert` (WordPiece) and `t5` (Unigram) are reported as not supported yet.
//! - Special tokens: control, unknown and user-defined tokens are cut out of the text before the
//!   model runs. As in llama.cpp (and Hugging Face), user-defined tokens are always matched;
//!   control and unknown tokens only with `parse_special`. Longer tokens are matched first.
//! - Decoding: [`Tokenizer::token_to_piece`] gives a token's raw bytes; [`Tokenizer::decode`]
//!   joins them into text; [`StreamDecoder`] does it incrementally for streaming.
//!
//! Behaviour that llama.cpp derives from token texts (end-of-generation tokens such as
//! `<|im_end|>`, `<end_of_turn>`; tokens forced to "control") is reproduced so that token ids and
//! stop conditions match it.

pub mod bpe;
pub mod pretokenize;
pub mod spm;
mod stream;
mod vocab;

use std::borrow::Cow;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use ferrite_gguf::{Array, Metadata, StringArray, Value};
use rustc_hash::FxHashMap;

pub use stream::StreamDecoder;

/// Why a tokenizer could not be built or could not encode.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer metadata key '{0}' is missing")]
    Missing(&'static str),
    #[error("tokenizer metadata key '{key}' has type {found}, expected {expected}")]
    WrongType {
        key: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("tokenizer model '{0}' is not supported yet")]
    Unsupported(String),
    #[error("unknown tokenizer model '{0}'")]
    UnknownModel(String),
    #[error("unknown pre-tokenizer '{0}' (tokenizer.ggml.pre)")]
    UnknownPre(String),
    #[error("invalid vocabulary: {0}")]
    Invalid(String),
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// Token attributes (llama.cpp's bit values, so that its rules read the same).
pub mod attr {
    pub const UNDEFINED: u32 = 0;
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
}

#[derive(Debug)]
enum Model {
    Bpe(bpe::Bpe),
    Spm(spm::Spm),
}

/// A tokenizer. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    model: Model,
    model_name: String,
    vocab: vocab::Vocab,
    scores: Vec<f32>,
    attrs: Vec<u32>,
    /// Decoded bytes of every token (control tokens as their text), flat.
    piece_bytes: Vec<u8>,
    piece_offs: Vec<u32>,
    /// Special tokens in matching order (longest first) and an automaton finding any of them.
    specials: Vec<u32>,
    special_ac: Option<AhoCorasick>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
}

fn type_name(v: &Value) -> String {
    v.type_description()
}

fn get_bool(md: &Metadata, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(TokenizerError::WrongType {
            key,
            found: type_name(v),
            expected: "bool",
        }),
    }
}

fn get_id(md: &Metadata, key: &'static str, n: usize) -> Result<Option<u32>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => {
            // llama.cpp stores -1 for "none" in some converters.
            if v.as_i64() == Some(-1) {
                return Ok(None);
            }
            let id = v.as_u64().ok_or_else(|| TokenizerError::WrongType {
                key,
                found: type_name(v),
                expected: "a token id (unsigned integer)",
            })?;
            if id >= n as u64 {
                return Err(TokenizerError::Invalid(format!(
                    "{key} = {id} is out of range (vocabulary has {n} tokens)"
                )));
            }
            Ok(Some(id as u32))
        }
    }
}

/// Parses a byte token's text `<0xXX>`.
fn parse_byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];
const FIM_TEXTS: &[&[&str]] = &[
    &[
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
    ],
    &[
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
    ],
    &[
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
    ],
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>"],
    &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ],
    &["<|file_sep|>"],
];

impl Tokenizer {
    /// Builds the tokenizer described by the `tokenizer.ggml.*` keys.
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let model_name = match md.get("tokenizer.ggml.model") {
            None => return Err(TokenizerError::Missing("tokenizer.ggml.model")),
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(TokenizerError::WrongType {
                    key: "tokenizer.ggml.model",
                    found: type_name(v),
                    expected: "string",
                })
            }
        };
        let is_bpe = match model_name.as_str() {
            "gpt2" => true,
            "llama" => false,
            "bert" | "t5" | "rwkv" | "plamo2" | "no_vocab" | "none" | "gemma4" => {
                return Err(TokenizerError::Unsupported(model_name))
            }
            _ => return Err(TokenizerError::UnknownModel(model_name)),
        };

        let tokens: &StringArray = match md.get("tokenizer.ggml.tokens") {
            None => return Err(TokenizerError::Missing("tokenizer.ggml.tokens")),
            Some(Value::Array(Array::String(t))) => t,
            Some(v) => {
                return Err(TokenizerError::WrongType {
                    key: "tokenizer.ggml.tokens",
                    found: type_name(v),
                    expected: "[string]",
                })
            }
        };
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::Invalid(
                "tokenizer.ggml.tokens is empty".into(),
            ));
        }
        if n > u32::MAX as usize / 2 {
            return Err(TokenizerError::Invalid(format!("{n} tokens is too many")));
        }
        // Empty token texts would match everywhere; llama.cpp renames them the same way.
        let vocab = vocab::Vocab::new(tokens.iter().enumerate().map(|(i, t)| {
            if t.is_empty() {
                Cow::Owned(format!("[EMPTY_{i}]"))
            } else {
                Cow::Borrowed(t)
            }
        }))
        .map_err(|e| match e {
            vocab::VocabError::TooLarge => {
                TokenizerError::Invalid("vocabulary text exceeds 4 GiB".into())
            }
            vocab::VocabError::Duplicate(t, prev, i) => {
                TokenizerError::Invalid(format!("duplicate token {t:?} at ids {prev} and {i}"))
            }
        })?;

        let scores: Vec<f32> = match md.get("tokenizer.ggml.scores") {
            None => vec![0.0; n],
            Some(Value::Array(Array::F32(s))) => s.clone(),
            Some(Value::Array(Array::I32(s))) => s.iter().map(|&x| x as f32).collect(),
            Some(v) => {
                return Err(TokenizerError::WrongType {
                    key: "tokenizer.ggml.scores",
                    found: type_name(v),
                    expected: "[f32]",
                })
            }
        };
        if scores.len() < n {
            return Err(TokenizerError::Invalid(format!(
                "tokenizer.ggml.scores has {} entries for {n} tokens",
                scores.len()
            )));
        }

        let mut attrs: Vec<u32> = match md.get("tokenizer.ggml.token_type") {
            None => vec![attr::NORMAL; n],
            Some(Value::Array(Array::I32(t))) => {
                if t.len() < n {
                    return Err(TokenizerError::Invalid(format!(
                        "tokenizer.ggml.token_type has {} entries for {n} tokens",
                        t.len()
                    )));
                }
                t[..n]
                    .iter()
                    .enumerate()
                    .map(|(i, &ty)| {
                        Ok(match ty {
                            0 => attr::UNDEFINED,
                            1 => attr::NORMAL,
                            2 => attr::UNKNOWN,
                            3 => attr::CONTROL,
                            4 => attr::USER_DEFINED,
                            5 => attr::UNUSED,
                            6 => attr::BYTE,
                            _ => {
                                return Err(TokenizerError::Invalid(format!(
                                "tokenizer.ggml.token_type[{i}] = {ty} is not a token type (0..=6)"
                            )))
                            }
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
            Some(v) => {
                return Err(TokenizerError::WrongType {
                    key: "tokenizer.ggml.token_type",
                    found: type_name(v),
                    expected: "[i32]",
                })
            }
        };

        // Byte tokens must be well-formed: decoding relies on their value.
        for (i, t) in vocab.iter().enumerate() {
            if attrs[i] & attr::BYTE != 0 && parse_byte_token(t).is_none() {
                return Err(TokenizerError::Invalid(format!(
                    "token {i} {t:?} is a byte token but is not of the form <0xXX>"
                )));
            }
        }
        let lookup = |s: &str| vocab.id(s);

        let pre_name = match md.get("tokenizer.ggml.pre") {
            None => "default".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(TokenizerError::WrongType {
                    key: "tokenizer.ggml.pre",
                    found: type_name(v),
                    expected: "string",
                })
            }
        };

        let (model, mut add_bos, mut add_space_prefix, clean_spaces, mut bos, mut eos, mut unk) =
            if is_bpe {
                let merges: &StringArray = match md.get("tokenizer.ggml.merges") {
                    None => return Err(TokenizerError::Missing("tokenizer.ggml.merges")),
                    Some(Value::Array(Array::String(m))) => m,
                    Some(v) => {
                        return Err(TokenizerError::WrongType {
                            key: "tokenizer.ggml.merges",
                            found: type_name(v),
                            expected: "[string]",
                        })
                    }
                };
                let b = bpe::Bpe::new(&pre_name, merges, &lookup)?;
                let f = b.flags;
                let bos = if f.no_bos { None } else { Some(11) };
                (
                    Model::Bpe(b),
                    f.add_bos,
                    false,
                    f.clean_spaces,
                    bos,
                    Some(11),
                    None,
                )
            } else {
                let mut byte_tok = [None; 256];
                for (b, slot) in byte_tok.iter_mut().enumerate() {
                    *slot = lookup(&format!("<0x{b:02X}>")).or_else(|| {
                        char::from_u32(b as u32)
                            .filter(|_| b < 128)
                            .and_then(|c| lookup(c.encode_utf8(&mut [0; 4])))
                    });
                }
                let crossing: Vec<String> = vocab
                    .iter()
                    .filter(|t| {
                        let mut prev: Option<char> = None;
                        t.chars().any(|c| {
                            let hit = c == '\u{2581}' && prev.is_some_and(|p| p != '\u{2581}');
                            prev = Some(c);
                            hit
                        })
                    })
                    .map(str::to_string)
                    .collect();
                (
                    Model::Spm(spm::Spm { byte_tok, crossing }),
                    true,
                    true,
                    false,
                    Some(1),
                    Some(2),
                    Some(0),
                )
            };
        // Defaults outside the vocabulary are disabled (explicit ids out of range are errors).
        for d in [&mut bos, &mut eos, &mut unk] {
            if d.is_some_and(|id| id as usize >= n) {
                *d = None;
            }
        }
        if let Some(v) = get_bool(md, "tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }
        let mut add_eos = false;
        if let Some(id) = get_id(md, "tokenizer.ggml.bos_token_id", n)? {
            bos = Some(id);
        }
        if let Some(id) = get_id(md, "tokenizer.ggml.eos_token_id", n)? {
            eos = Some(id);
        }
        if let Some(id) = get_id(md, "tokenizer.ggml.unknown_token_id", n)? {
            unk = Some(id);
        }
        let mut eot = get_id(md, "tokenizer.ggml.eot_token_id", n)?;
        let mut eom = get_id(md, "tokenizer.ggml.eom_token_id", n)?;
        let pad = get_id(md, "tokenizer.ggml.padding_token_id", n)?;
        for key in [
            "tokenizer.ggml.seperator_token_id",
            "tokenizer.ggml.mask_token_id",
            "tokenizer.ggml.fim_pre_token_id",
            "tokenizer.ggml.fim_suf_token_id",
            "tokenizer.ggml.fim_mid_token_id",
            "tokenizer.ggml.fim_pad_token_id",
            "tokenizer.ggml.fim_rep_token_id",
            "tokenizer.ggml.fim_sep_token_id",
        ] {
            get_id(md, key, n)?;
        }
        let fim_ids: Vec<Option<u32>> = [
            "tokenizer.ggml.fim_pre_token_id",
            "tokenizer.ggml.fim_suf_token_id",
            "tokenizer.ggml.fim_mid_token_id",
            "tokenizer.ggml.fim_pad_token_id",
            "tokenizer.ggml.fim_rep_token_id",
            "tokenizer.ggml.fim_sep_token_id",
        ]
        .iter()
        .map(|k| get_id(md, k, n))
        .collect::<Result<_, _>>()?;
        if let Some(v) = get_bool(md, "tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if let Some(v) = get_bool(md, "tokenizer.ggml.add_eos_token")? {
            add_eos = v;
        }
        if add_bos && bos.is_none() {
            return Err(TokenizerError::Invalid(
                "tokenizer.ggml.add_bos_token is true but there is no BOS token".into(),
            ));
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::Invalid(
                "tokenizer.ggml.add_eos_token is true but there is no EOS token".into(),
            ));
        }

        // Tokens llama.cpp recognises by their text: end of turn, fill-in-the-middle, end of
        // generation. They become control tokens (so they are only parsed with parse_special).
        let force_control = |id: u32, attrs: &mut Vec<u32>| attrs[id as usize] |= attr::CONTROL;
        if eot.is_none() {
            eot = EOT_TEXTS.iter().find_map(|t| lookup(t));
            if let Some(id) = eot {
                force_control(id, &mut attrs);
            }
        }
        if eom.is_none() {
            eom = lookup("<|eom_id|>");
            if let Some(id) = eom {
                force_control(id, &mut attrs);
            }
        }
        let mut eog: Vec<u32> = Vec::new();
        for (k, names) in FIM_TEXTS.iter().enumerate() {
            let id = fim_ids[k].or_else(|| {
                let found = names.iter().find_map(|t| lookup(t));
                if let Some(id) = found {
                    force_control(id, &mut attrs);
                }
                found
            });
            // fim pad / repo / file separator end generation.
            if k >= 3 {
                eog.extend(id);
            }
        }
        for t in EOG_TEXTS {
            if let Some(id) = lookup(t) {
                eog.push(id);
                force_control(id, &mut attrs);
            }
        }
        eog.extend(eos);
        eog.extend(eot);
        eog.extend(eom);
        eog.sort_unstable();
        eog.dedup();

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        specials.sort_by(|&a, &b| {
            vocab
                .text(b)
                .len()
                .cmp(&vocab.text(a).len())
                .then(a.cmp(&b))
        });
        let general_name = md
            .get("general.name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_lowercase();
        if general_name.contains("phi-3") || general_name.contains("phi3") {
            for &id in &specials {
                attrs[id as usize] |= attr::RSTRIP;
            }
            if let Some(id) = lookup("</s>") {
                attrs[id as usize] |= attr::RSTRIP;
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(id) = lookup(t) {
                    attrs[id as usize] &= !attr::RSTRIP;
                }
            }
        }
        let special_ac = if specials.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::new(specials.iter().map(|&i| vocab.text(i).as_bytes()))
                    .map_err(|e| TokenizerError::Invalid(format!("special tokens: {e}")))?,
            )
        };

        // Decoded pieces (with control tokens as text; callers filter them when they must).
        let mut piece_bytes = Vec::new();
        let mut piece_offs = Vec::with_capacity(n + 1);
        piece_offs.push(0u32);
        for (i, t) in vocab.iter().enumerate() {
            let a = attrs[i];
            if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
                piece_bytes.extend_from_slice(t.as_bytes());
            } else if a & attr::NORMAL != 0 {
                if is_bpe {
                    for c in t.chars() {
                        match bpe::char_byte(c) {
                            Some(b) => piece_bytes.push(b),
                            None => {
                                piece_bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes())
                            }
                        }
                    }
                } else {
                    piece_bytes.extend_from_slice(t.replace('\u{2581}', " ").as_bytes());
                }
            } else if a & attr::BYTE != 0 {
                piece_bytes.push(parse_byte_token(t).expect("checked above"));
            }
            let off = u32::try_from(piece_bytes.len())
                .map_err(|_| TokenizerError::Invalid("vocabulary text exceeds 4 GiB".into()))?;
            piece_offs.push(off);
        }

        Ok(Tokenizer {
            inner: Arc::new(Inner {
                model,
                model_name,
                vocab,
                scores: scores[..n].to_vec(),
                attrs,
                piece_bytes,
                piece_offs,
                specials,
                special_ac,
                bos,
                eos,
                eot,
                eom,
                unk,
                pad,
                eog,
                add_bos,
                add_eos,
                add_space_prefix,
                clean_spaces,
            }),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.vocab.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.inner.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.inner.eos
    }
    pub fn eot(&self) -> Option<u32> {
        self.inner.eot
    }
    pub fn eom(&self) -> Option<u32> {
        self.inner.eom
    }
    pub fn unk(&self) -> Option<u32> {
        self.inner.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.inner.pad
    }
    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.inner.add_bos
    }
    pub fn add_eos(&self) -> bool {
        self.inner.add_eos
    }
    pub fn add_space_prefix(&self) -> bool {
        self.inner.add_space_prefix
    }
    /// `gpt2` or `llama`.
    pub fn model_name(&self) -> &str {
        &self.inner.model_name
    }
    /// Every token that ends generation (EOS, EOT, EOM and the end-of-turn tokens the
    /// vocabulary has), sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.inner.eog
    }
    pub fn is_eog(&self, id: u32) -> bool {
        self.inner.eog.binary_search(&id).is_ok()
    }
    /// The vocabulary text of a token (`None` out of range).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.inner.vocab.get(id)
    }
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.vocab.id(text)
    }
    pub fn token_attr(&self, id: u32) -> u32 {
        self.inner.attrs.get(id as usize).copied().unwrap_or(0)
    }
    /// Control or unknown tokens: not text, rendered only on request.
    pub fn is_control(&self, id: u32) -> bool {
        self.token_attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0
    }

    /// The raw bytes a token stands for (control tokens as their text; empty out of range).
    pub fn token_to_piece(&self, id: u32) -> Vec<u8> {
        self.piece(id).to_vec()
    }

    fn piece(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (
            self.inner.piece_offs.get(i),
            self.inner.piece_offs.get(i + 1),
        ) {
            (Some(&s), Some(&e)) => &self.inner.piece_bytes[s as usize..e as usize],
            _ => &[],
        }
    }

    /// Text to token ids. `add_special` adds BOS/EOS as the model's metadata asks;
    /// `parse_special` recognises control tokens written in the text (user-defined tokens are
    /// always recognised, as in llama.cpp).
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let inner = &*self.inner;
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && inner.add_bos {
            out.extend(inner.bos);
        }
        let frags = self.partition(text, parse_special);
        let mut chunks = Vec::new();
        let mut scratch = Vec::new();
        let mut is_prev_special = true;
        // Words repeat: each distinct short word is merged once per call.
        let mut bpe_cache: FxHashMap<&[u8], Vec<u32>> = FxHashMap::default();
        let mut spm_cache: FxHashMap<String, Vec<u32>> = FxHashMap::default();
        for f in frags {
            match f {
                Frag::Token(id) => {
                    out.push(id);
                    is_prev_special = true;
                }
                Frag::Text(s, e) => {
                    let t = &text[s..e];
                    match &inner.model {
                        Model::Bpe(b) => {
                            b.pre.split(t, &mut chunks)?;
                            for &(cs, ce) in &chunks {
                                let w = &t.as_bytes()[cs..ce];
                                if b.flags.ignore_merges {
                                    if let Some(id) = inner.vocab.id(&bpe::byte_level(w)) {
                                        out.push(id);
                                        continue;
                                    }
                                }
                                if let Some(ids) = bpe_cache.get(w) {
                                    out.extend_from_slice(ids);
                                    continue;
                                }
                                let n0 = out.len();
                                b.word(w, &mut out, &mut scratch);
                                if w.len() <= 32 {
                                    bpe_cache.insert(w, out[n0..].to_vec());
                                }
                            }
                        }
                        Model::Spm(m) => {
                            let mut s = String::with_capacity(t.len() + 8);
                            if inner.add_space_prefix && is_prev_special {
                                s.push('\u{2581}');
                            }
                            for c in t.chars() {
                                s.push(if c == ' ' { '\u{2581}' } else { c });
                            }
                            m.encode_words(
                                &s,
                                &|x| inner.vocab.id(x),
                                &|id| inner.scores[id as usize],
                                &mut spm_cache,
                                &mut out,
                            )?;
                        }
                    }
                    is_prev_special = false;
                }
            }
        }
        if add_special && inner.add_eos {
            out.extend(inner.eos);
        }
        Ok(out)
    }

    /// Cuts special tokens out of the text, longest token first (llama.cpp's order).
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Frag> {
        let inner = &*self.inner;
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Frag::Text(0, text.len()));
        let Some(ac) = &inner.special_ac else {
            return frags;
        };
        // Only tokens present in the text can split it; find them in one pass.
        let mut present: Vec<usize> = ac
            .find_overlapping_iter(text.as_bytes())
            .map(|m| m.pattern().as_usize())
            .collect();
        if present.is_empty() {
            return frags;
        }
        present.sort_unstable();
        present.dedup();
        for &p in &present {
            let id = inner.specials[p];
            let a = inner.attrs[id as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let tok = inner.vocab.text(id);
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Frag::Text(mut s, e) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(m) = text[s..e].find(tok) {
                    let ms = s + m;
                    let mut left_end = ms;
                    if a & attr::LSTRIP != 0 {
                        while left_end > s && text.as_bytes()[left_end - 1].is_ascii_whitespace() {
                            left_end -= 1;
                        }
                    }
                    if left_end > s {
                        next.push(Frag::Text(s, left_end));
                    }
                    next.push(Frag::Token(id));
                    s = ms + tok.len();
                    if a & attr::RSTRIP != 0 {
                        while s < e && text.as_bytes()[s].is_ascii_whitespace() {
                            s += 1;
                        }
                    }
                }
                if s < e {
                    next.push(Frag::Text(s, e));
                }
            }
            frags = next;
        }
        frags
    }

    /// Token ids to text, as llama.cpp's detokenizer does with special tokens rendered: the
    /// SentencePiece leading space (`add_space_prefix`) is dropped from the first token, and
    /// models that ask for it get Hugging Face's `clean_up_tokenization_spaces`. Invalid UTF-8 is
    /// replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_with(ids, false)
    }

    /// Like [`Tokenizer::decode`]; with `skip_special`, control tokens produce nothing.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> String {
        let bytes = self.decode_bytes(ids, skip_special);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes [`Tokenizer::decode`] would turn into text.
    pub fn decode_bytes(&self, ids: &[u32], skip_special: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            out.extend_from_slice(self.piece_in_sequence(id, k == 0, skip_special));
        }
        if self.inner.clean_spaces {
            clean_up_spaces(&mut out);
        }
        out
    }

    /// A token's bytes at a place in a sequence: the first token of a sequence loses the
    /// SentencePiece prefix space (llama.cpp's rule, even when that token is not shown).
    fn piece_in_sequence(&self, id: u32, first: bool, skip_special: bool) -> &[u8] {
        if skip_special && self.is_control(id) {
            return &[];
        }
        let p = self.piece(id);
        if first && self.inner.add_space_prefix && p.first() == Some(&b' ') {
            &p[1..]
        } else {
            p
        }
    }
}

enum Frag {
    Text(usize, usize),
    Token(u32),
}

/// Hugging Face's `clean_up_tokenization_spaces`, as llama.cpp applies it.
fn clean_up_spaces(t: &mut Vec<u8>) {
    let mut o: Vec<u8> = Vec::with_capacity(t.len());
    for (i, &x) in t.iter().enumerate() {
        if i > 0 && t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            o.pop();
        }
        o.push(x);
    }
    // " ' " → "'"
    let mut o2: Vec<u8> = Vec::with_capacity(o.len());
    let mut i = 0;
    while i < o.len() {
        let x = o[i];
        if i > 0 && x == b'\'' && i + 1 < o.len() && o[i - 1] == b' ' && o[i + 1] == b' ' {
            o2.pop();
            o2.push(x);
            i += 2;
            continue;
        }
        o2.push(x);
        i += 1;
    }
    // " 's", " 'm", " 're", " 've" lose their space.
    let mut o3: Vec<u8> = Vec::with_capacity(o2.len());
    for i in 0..o2.len() {
        let x = o2[i];
        if i > 0 && o2[i - 1] == b' ' && x == b'\'' && i + 1 < o2.len() {
            let x1 = o2[i + 1];
            let x2 = o2.get(i + 2).copied();
            if matches!(x1, b's' | b'm') || (matches!(x1, b'r' | b'v') && x2 == Some(b'e')) {
                o3.pop();
            }
        }
        o3.push(x);
    }
    *t = o3;
}

#[cfg(test)]
mod tests;
