//! The library API: load a [`Model`] once, then open independent [`Session`]s on it, each with
//! its own KV cache, buffers and threads.
//!
//! ```
//! # use ferrite_engine::{Model, SessionOptions};
//! # let file = ferrite_engine::session::tiny_test_model();
//! // `Model::load("model.gguf", Default::default())` for a file on disk.
//! let model = Model::from_gguf(file)?;
//! let mut a = model.session(SessionOptions::default())?;
//! let mut b = model.session(SessionOptions::default())?;
//! let logits = a.eval(&[1, 2, 3])?.to_vec(); // next-token logits after the 3 tokens
//! assert_eq!(logits.len(), model.config().n_vocab);
//! // Sessions do not share state: `b` evaluating the same tokens gives the same logits.
//! assert_eq!(b.eval(&[1, 2, 3])?, &logits[..]);
//! assert_eq!(a.tokens(), &[1, 2, 3]);
//! # Ok::<(), ferrite_engine::Error>(())
//! ```

use std::path::Path;
use std::sync::Arc;

use ferrite_gguf::{GgufFile, OpenOptions};
use ferrite_quant::matmul::ThreadPool;

use crate::chat::{ChatTemplate, Message};
use crate::error::{Error, Result};
use crate::kv_cache::{KvCache, KvType};
use crate::models::{config_from_metadata, Decoder, LogitsFor, ModelConfig, Scratch};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// How to open a model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Memory-map the file (default) or read it into memory.
    pub mmap: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { mmap: true }
    }
}

/// A loaded model: the mapped file, its configuration and weights. Share it (`Arc`) between
/// sessions and threads; it is never mutated.
pub struct Model {
    file: Arc<GgufFile>,
    decoder: Decoder,
    /// A model file may carry no usable vocabulary (test fixtures); only text in or out
    /// needs one, so the error is kept for when it is asked for.
    tokenizer: std::result::Result<Tokenizer, TokenizerError>,
    chat_template: Option<ChatTemplate>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("file", &self.file)
            .field("config", self.config())
            .finish()
    }
}

impl Model {
    /// Opens a GGUF file and maps its weights.
    pub fn load(path: impl AsRef<Path>, opts: LoadOptions) -> Result<Arc<Model>> {
        let file = GgufFile::open_with(path, OpenOptions { mmap: opts.mmap })?;
        Self::from_gguf(file)
    }

    /// Builds a model from an already opened file.
    pub fn from_gguf(file: GgufFile) -> Result<Arc<Model>> {
        let file = Arc::new(file);
        let md = file.metadata();
        let arch = md.require_str("general.architecture")?;
        let n_vocab = file
            .tensor("token_embd.weight")
            .ok_or_else(|| Error::MissingTensor("token_embd.weight".into()))?
            .n_rows() as usize;
        let config = config_from_metadata(md, n_vocab).map_err(|e| match e {
            e @ Error::UnsupportedArch { .. } => e,
            e => Error::Invalid(format!("{arch} model: {e}")),
        })?;
        let decoder = Decoder::load(file.clone(), config)?;
        let tokenizer = Tokenizer::from_metadata(md);
        let chat_template = tokenizer
            .is_ok()
            .then(|| ChatTemplate::from_metadata(md, None).ok())
            .flatten();
        Ok(Arc::new(Model {
            file,
            decoder,
            tokenizer,
            chat_template,
        }))
    }

    /// The model's tokenizer; an error saying why when its vocabulary is missing or invalid.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer
            .as_ref()
            .map_err(|e| Error::Tokenizer(e.clone()))
    }

    /// The model's chat template, or the built-in one that fits it when the file has none
    /// (see [`ChatTemplate::from_metadata`]).
    pub fn chat_template(&self) -> Result<&ChatTemplate> {
        self.tokenizer()?;
        self.chat_template
            .as_ref()
            .ok_or_else(|| Error::Invalid("the model has no usable chat template".into()))
    }

    /// Text to token ids as llama.cpp's completion mode does: BOS when the metadata asks for
    /// it, special-token text (`<|im_start|>`) recognised.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer()?.encode(text, true, true)?)
    }

    /// Token ids to text (special tokens rendered).
    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        Ok(self.tokenizer()?.decode(ids))
    }

    /// Renders a conversation with the model's chat template, ready for [`Model::tokenize`]
    /// (`add_generation_prompt`: end with the assistant's turn header).
    pub fn format_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let add_bos = self.tokenizer()?.add_bos();
        Ok(self.chat_template()?.render_prompt(
            messages,
            add_generation_prompt,
            serde_json::Value::Null,
            add_bos,
        )?)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.decoder.config
    }

    /// The underlying GGUF file (metadata for tokenizers and chat templates).
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The default context size: the model's training context, capped at 4096.
    pub fn default_n_ctx(&self) -> usize {
        self.config().n_ctx_train.clamp(1, 4096)
    }

    /// Opens a new independent session.
    pub fn session(self: &Arc<Self>, opts: SessionOptions) -> Result<Session> {
        Session::new(self.clone(), opts)
    }
}

/// Per-session settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    /// Context size in tokens; `None`: [`Model::default_n_ctx`].
    pub n_ctx: Option<usize>,
    pub kv_type: KvType,
    /// Keep a KV cache (default). Without one every evaluation recomputes the whole history.
    pub kv_cache: bool,
    /// Worker threads; `None`: the number of physical cores.
    pub n_threads: Option<usize>,
    /// Prompt tokens per forward batch.
    pub batch_size: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: None,
            kv_type: KvType::F16,
            kv_cache: true,
            n_threads: None,
            batch_size: 512,
        }
    }
}

/// The number of physical CPU cores (falls back to the logical count).
pub fn physical_cores() -> usize {
    #[cfg(target_os = "linux")]
    if let Ok(s) = std::fs::read_to_string("/proc/cpuinfo") {
        let mut cores = std::collections::HashSet::new();
        let (mut phys, mut core) = (None, None);
        for line in s.lines() {
            let mut kv = line.splitn(2, ':').map(str::trim);
            match (kv.next(), kv.next()) {
                (Some("physical id"), Some(v)) => phys = Some(v.to_string()),
                (Some("core id"), Some(v)) => core = Some(v.to_string()),
                (Some(""), _) | (None, _) => {
                    if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                        cores.insert((p, c));
                    }
                }
                _ => {}
            }
        }
        if let (Some(p), Some(c)) = (phys, core) {
            cores.insert((p, c));
        }
        if !cores.is_empty() {
            return cores.len();
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One conversation's state: the tokens evaluated so far, their KV cache and the latest
/// logits.
pub struct Session {
    model: Arc<Model>,
    opts: SessionOptions,
    n_ctx: usize,
    pool: ThreadPool,
    kv: Option<KvCache>,
    scratch: Scratch,
    tokens: Vec<u32>,
    last_logits: Vec<f32>,
}

impl Clone for Session {
    /// An independent copy at the same point (beam search forks sessions this way).
    fn clone(&self) -> Self {
        Session {
            model: self.model.clone(),
            opts: self.opts.clone(),
            n_ctx: self.n_ctx,
            pool: self.pool.clone(),
            kv: self.kv.clone(),
            scratch: Scratch::default(),
            tokens: self.tokens.clone(),
            last_logits: self.last_logits.clone(),
        }
    }
}

impl Session {
    pub fn new(model: Arc<Model>, opts: SessionOptions) -> Result<Session> {
        let n_ctx = opts.n_ctx.unwrap_or_else(|| model.default_n_ctx());
        if n_ctx == 0 {
            return Err(Error::Invalid("context size must be positive".into()));
        }
        if opts.batch_size == 0 {
            return Err(Error::Invalid("batch size must be positive".into()));
        }
        let kv = opts
            .kv_cache
            .then(|| model.decoder.new_cache(opts.kv_type, n_ctx));
        let pool = ThreadPool::new(opts.n_threads.unwrap_or_else(physical_cores));
        Ok(Session {
            model,
            opts,
            n_ctx,
            pool,
            kv,
            scratch: Scratch::default(),
            tokens: Vec::new(),
            last_logits: Vec::new(),
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The threads this session's forward passes run on (benchmarks measure the machine
    /// with the same threads).
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// Tokens evaluated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Next-token logits after the last evaluated token (empty before the first `eval`).
    pub fn logits(&self) -> &[f32] {
        &self.last_logits
    }

    /// Forgets everything (the KV cache is kept allocated).
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.last_logits.clear();
        if let Some(kv) = &mut self.kv {
            kv.reset();
        }
    }

    /// Rewinds to the first `n` tokens (keeping their cache).
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        if let Some(kv) = &mut self.kv {
            kv.truncate(n);
        }
        self.last_logits.clear();
    }

    /// Appends `tokens` and returns the next-token logits after the last of them.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.run(tokens, None)?;
        Ok(&self.last_logits)
    }

    /// Appends `tokens` and returns logits for every one of them, `[n, n_vocab]` row-major
    /// (teacher forcing).
    pub fn eval_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.eval_tail(tokens, tokens.len())
    }

    /// Appends `tokens` and returns logits for the last `n` of them, `[n, n_vocab]` row-major
    /// (perplexity scores only the second half of each window; the other rows are never
    /// computed).
    pub fn eval_tail(&mut self, tokens: &[u32], n: usize) -> Result<Vec<f32>> {
        if n > tokens.len() {
            return Err(Error::Invalid(format!(
                "logits asked for the last {n} of {} tokens",
                tokens.len()
            )));
        }
        self.run(tokens, Some(n)).map(|all| all.unwrap_or_default())
    }

    /// `tail`: `None` for the last position's logits only, `Some(n)` for the last `n` rows.
    fn run(&mut self, tokens: &[u32], tail: Option<usize>) -> Result<Option<Vec<f32>>> {
        if tokens.is_empty() {
            return Err(Error::Invalid("nothing to evaluate: no tokens".into()));
        }
        let needed = self.tokens.len() + tokens.len();
        if needed > self.n_ctx {
            return Err(Error::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            });
        }
        let n_vocab = self.model.config().n_vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::BadToken { id, n_vocab });
        }
        let dec = &self.model.decoder;
        let mut out = tail.map(|n| Vec::with_capacity(n * n_vocab));
        let mut temp_kv;
        let (kv, todo) = match &mut self.kv {
            Some(kv) => (kv, tokens.to_vec()),
            None => {
                // No cache kept: recompute the whole history into a temporary one.
                let mut hist = self.tokens.clone();
                hist.extend_from_slice(tokens);
                temp_kv = dec.new_cache(self.opts.kv_type, hist.len());
                (&mut temp_kv, hist)
            }
        };
        // Rows of `todo` that need logits: `need_from..`.
        let need_from = tail.map(|n| todo.len() - n);
        let mut done = 0;
        for chunk in todo.chunks(self.opts.batch_size) {
            let end = done + chunk.len();
            let w = match need_from {
                Some(f) if end > f => LogitsFor::Tail(end - f.max(done)),
                Some(_) => LogitsFor::None,
                None if end == todo.len() => LogitsFor::Last,
                None => LogitsFor::None,
            };
            dec.forward(&self.pool, kv, &mut self.scratch, chunk, w)?;
            if let (Some(out), LogitsFor::Tail(_)) = (&mut out, w) {
                out.extend_from_slice(&self.scratch.logits);
            }
            done = end;
        }
        self.tokens.extend_from_slice(tokens);
        self.last_logits.clear();
        match &out {
            Some(o) if o.len() >= n_vocab => {
                self.last_logits.extend_from_slice(&o[o.len() - n_vocab..]);
            }
            Some(_) => {}
            None => self.last_logits.extend_from_slice(&self.scratch.logits),
        }
        Ok(out)
    }
}

/// A tiny random llama model (2 layers, 64-wide, vocabulary 32) written with ferrite-gguf's
/// writer, for documentation examples and tests.
#[doc(hidden)]
pub fn tiny_test_model() -> GgufFile {
    tiny_test_model_of(ferrite_gguf::GgmlType::F32)
}

/// [`tiny_test_model`] with its layers' weight matrices quantized to `matrix_type` (a type
/// with 32-element blocks or fewer; the same values before quantization).
#[doc(hidden)]
pub fn tiny_test_model_of(matrix_type: ferrite_gguf::GgmlType) -> GgufFile {
    use ferrite_gguf::{Array, GgmlType, Metadata, TensorSpec, Value};
    let (d, ff, nv, nl) = (64u64, 128u64, 32u64, 2);
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    md.set("llama.block_count", Value::U32(nl));
    md.set("llama.context_length", Value::U32(256));
    md.set("llama.embedding_length", Value::U32(d as u32));
    md.set("llama.feed_forward_length", Value::U32(ff as u32));
    md.set("llama.attention.head_count", Value::U32(4));
    md.set("llama.attention.head_count_kv", Value::U32(2));
    md.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    // A SentencePiece vocabulary of single characters: enough to encode lowercase text.
    let mut vocab: Vec<String> = ["<unk>", "<s>", "</s>", "\u{2581}"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend(('a'..='z').map(String::from));
    vocab.extend([".".to_string(), ",".to_string()]);
    let types: Vec<i32> = (0..vocab.len())
        .map(|i| match i {
            0 => 2,
            1 | 2 => 3,
            _ => 1,
        })
        .collect();
    md.set("tokenizer.ggml.model", Value::String("llama".into()));
    md.set(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vocab.into())),
    );
    md.set(
        "tokenizer.ggml.scores",
        Value::Array(Array::F32(vec![0.0; nv as usize])),
    );
    md.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    md.set("tokenizer.ggml.bos_token_id", Value::U32(1));
    md.set("tokenizer.ggml.eos_token_id", Value::U32(2));
    md.set("tokenizer.ggml.unknown_token_id", Value::U32(0));
    md.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    // A chat template within that alphabet.
    md.set(
        "tokenizer.chat_template",
        Value::String(
            "{% for m in messages %}{{ m.role }}, {{ m.content }}. {% endfor %}\
             {% if add_generation_prompt %}assistant, {% endif %}"
                .into(),
        ),
    );
    let mut specs = vec![
        TensorSpec::new("token_embd.weight", &[d, nv], GgmlType::F32),
        TensorSpec::new("output_norm.weight", &[d], GgmlType::F32),
    ];
    for il in 0..nl {
        let p = |s: &str| format!("blk.{il}.{s}.weight");
        specs.extend([
            TensorSpec::new(p("attn_norm"), &[d], GgmlType::F32),
            TensorSpec::new(p("attn_q"), &[d, d], matrix_type),
            TensorSpec::new(p("attn_k"), &[d, d / 2], matrix_type),
            TensorSpec::new(p("attn_v"), &[d, d / 2], matrix_type),
            TensorSpec::new(p("attn_output"), &[d, d], matrix_type),
            TensorSpec::new(p("ffn_norm"), &[d], GgmlType::F32),
            TensorSpec::new(p("ffn_gate"), &[d, ff], matrix_type),
            TensorSpec::new(p("ffn_up"), &[d, ff], matrix_type),
            TensorSpec::new(p("ffn_down"), &[ff, d], matrix_type),
        ]);
    }
    // A small deterministic generator: no dependency, same model every time.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<Vec<u8>> = specs
        .iter()
        .map(|s| {
            let n: u64 = s.dims.iter().product();
            let norm = s.dims.len() == 1;
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    if norm {
                        1.0 + 0.1 * u
                    } else {
                        0.5 * u
                    }
                })
                .collect();
            if s.ty == GgmlType::F32 {
                return values.iter().flat_map(|v| v.to_le_bytes()).collect();
            }
            let bytes = s.ty.row_bytes(n).expect("whole blocks") as usize;
            let mut out = vec![0u8; bytes];
            ferrite_quant::quantize::quantize(s.ty, &values, None, &mut out)
                .expect("a type the tiny model can be quantized to");
            out
        })
        .collect();
    let tensors: Vec<(TensorSpec, &[u8])> = specs
        .into_iter()
        .zip(data.iter().map(|v| v.as_slice()))
        .collect();
    let bytes = ferrite_gguf::writer::to_vec(&md, &tensors).expect("valid tiny model");
    GgufFile::from_bytes(bytes).expect("tiny model parses")
}
