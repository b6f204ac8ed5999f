//! The typed model configuration: everything the generic decoder needs to know, read from the
//! GGUF metadata. Family differences are fields here (set by the per-family files), so the
//! decoder itself has no per-architecture branches.

use ferrite_gguf::{Array, Metadata, Value};

use crate::error::{Error, Result};

/// Which pairs of dimensions RoPE rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)` (llama, mistral, smollm).
    Normal,
    /// Halves `(i, i + n_rot/2)` (GPT-NeoX style: qwen, phi3, gemma).
    Neox,
}

/// YaRN context extension parameters (ggml's `rope_yarn`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    pub ext_factor: f32,
    /// First and last rotary pair index of the interpolation ramp.
    pub corr_dims: [f32; 2],
}

/// Rotary position embedding settings of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    pub style: RopeStyle,
    pub n_rot: usize,
    pub base: f32,
    pub freq_scale: f32,
    /// Multiplies cos/sin (YaRN magnitude correction); 1 without scaling.
    pub attn_factor: f32,
    pub yarn: Option<Yarn>,
}

/// Gated feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: `silu(gate) * up`.
    Silu,
    /// GeGLU with tanh-approximated GELU, rounded through f16 like llama.cpp's CPU table.
    GeluTanh,
}

/// Per-layer differences.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerConfig {
    /// Sliding-window attention layer (window [`ModelConfig::sliding_window`]).
    pub swa: bool,
    /// `None` for NoPE layers.
    pub rope: Option<Rope>,
}

/// llama-4 style attention temperature: after RoPE, `q *= 1 + scale·ln(⌊pos / floor⌋ + 1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnTemperature {
    pub scale: f32,
    pub floor: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// `general.architecture`.
    pub arch: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    pub n_vocab: usize,
    /// Training context length (`<arch>.context_length`).
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub layers: Vec<LayerConfig>,
    /// Sliding window size: a key at `p0` is hidden from a query at `p1` when `p1 - p0 >= window`.
    pub sliding_window: usize,
    /// Multiplies input embeddings (gemma: √n_embd).
    pub embed_scale: Option<f32>,
    /// Multiplies attention scores (`1/√head_dim` unless a family says otherwise).
    pub attn_scale: f32,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    pub attn_temperature: Option<AttnTemperature>,
    pub activation: Activation,
    pub n_expert: usize,
    pub n_expert_used: usize,
    /// Ignore `output.weight` and always use the token embeddings (gemma2).
    pub force_tied_output: bool,
}

/// Typed access to `<arch>.*` keys with errors that name the key.
pub struct Meta<'a> {
    pub md: &'a Metadata,
    pub arch: &'a str,
}

impl<'a> Meta<'a> {
    pub fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    pub fn opt_usize(&self, k: &str) -> Result<Option<usize>> {
        let key = self.key(k);
        match self.md.get(&key) {
            // Per-layer arrays (e.g. head_count_kv in some files) must be uniform here.
            Some(Value::Array(a)) => {
                let v = a.to_i64_vec().ok_or_else(|| Error::BadMetadata {
                    key: key.clone(),
                    message: format!(
                        "expected an integer or integer array, found {}",
                        a.type_description()
                    ),
                })?;
                match v.first() {
                    Some(&f) if v.iter().all(|&x| x == f) && f >= 0 => Ok(Some(f as usize)),
                    _ => Err(Error::BadMetadata {
                        key,
                        message: "per-layer values that differ are not supported".into(),
                    }),
                }
            }
            _ => Ok(self.md.get_u64(&key)?.map(|v| v as usize)),
        }
    }

    pub fn usize(&self, k: &str) -> Result<usize> {
        self.opt_usize(k)?
            .ok_or_else(|| ferrite_gguf::MetadataError::Missing(self.key(k)).into())
    }

    pub fn opt_f32(&self, k: &str) -> Result<Option<f32>> {
        Ok(self.md.get_f64(&self.key(k))?.map(|v| v as f32))
    }

    pub fn f32_or(&self, k: &str, default: f32) -> Result<f32> {
        Ok(self.opt_f32(k)?.unwrap_or(default))
    }

    pub fn opt_str(&self, k: &str) -> Result<Option<&'a str>> {
        Ok(self.md.get_str(&self.key(k))?)
    }

    /// A per-layer bool array (e.g. `attention.sliding_window_pattern` in newer files).
    pub fn opt_bool_array(&self, k: &str) -> Option<&'a [bool]> {
        match self.md.get(&self.key(k)) {
            Some(Value::Array(Array::Bool(v))) => Some(v),
            _ => None,
        }
    }
}

fn positive(key: String, v: usize) -> Result<usize> {
    if v == 0 {
        return Err(Error::BadMetadata {
            key,
            message: "must be positive".into(),
        });
    }
    Ok(v)
}

impl ModelConfig {
    /// Reads the keys every decoder-only family shares. Family files then adjust the result.
    pub fn common(m: &Meta, n_vocab: usize) -> Result<ModelConfig> {
        let n_layer = positive(m.key("block_count"), m.usize("block_count")?)?;
        let n_embd = positive(m.key("embedding_length"), m.usize("embedding_length")?)?;
        let n_head = positive(
            m.key("attention.head_count"),
            m.usize("attention.head_count")?,
        )?;
        let n_head_kv = m.opt_usize("attention.head_count_kv")?.unwrap_or(n_head);
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(Error::BadMetadata {
                key: m.key("attention.head_count_kv"),
                message: format!("{n_head_kv} does not divide head_count {n_head}"),
            });
        }
        let head_dim_k = match m.opt_usize("attention.key_length")? {
            Some(v) => v,
            None => {
                if n_embd % n_head != 0 {
                    return Err(Error::BadMetadata {
                        key: m.key("attention.head_count"),
                        message: format!("{n_head} does not divide embedding_length {n_embd}"),
                    });
                }
                n_embd / n_head
            }
        };
        let head_dim_k = positive(m.key("attention.key_length"), head_dim_k)?;
        let head_dim_v = m.opt_usize("attention.value_length")?.unwrap_or(head_dim_k);
        let rms_eps = m
            .opt_f32("attention.layer_norm_rms_epsilon")?
            .ok_or_else(|| {
                ferrite_gguf::MetadataError::Missing(m.key("attention.layer_norm_rms_epsilon"))
            })?;
        let n_rot = m.opt_usize("rope.dimension_count")?.unwrap_or(head_dim_k);
        if n_rot > head_dim_k || n_rot % 2 != 0 {
            return Err(Error::BadMetadata {
                key: m.key("rope.dimension_count"),
                message: format!("{n_rot} must be even and at most the head size {head_dim_k}"),
            });
        }
        let n_ctx_train = m.opt_usize("context_length")?.unwrap_or(4096);
        let base = m.f32_or("rope.freq_base", 10000.0)?;

        let mut freq_scale = 1.0f32;
        let mut attn_factor = 1.0f32;
        let mut yarn = None;
        let scaling = m.opt_str("rope.scaling.type")?.unwrap_or("none");
        let factor = match m.opt_f32("rope.scaling.factor")? {
            Some(f) => f,
            None => m.opt_f32("rope.scale_linear")?.unwrap_or(1.0),
        };
        match scaling {
            "none" => {}
            "linear" | "yarn" => {
                if factor <= 0.0 {
                    return Err(Error::BadMetadata {
                        key: m.key("rope.scaling.factor"),
                        message: format!("{factor} must be positive"),
                    });
                }
                freq_scale = 1.0 / factor;
            }
            other => {
                return Err(Error::BadMetadata {
                    key: m.key("rope.scaling.type"),
                    message: format!(
                        "RoPE scaling '{other}' is not supported (none, linear, yarn)"
                    ),
                })
            }
        }
        if scaling == "yarn" {
            let n_orig = m
                .opt_usize("rope.scaling.original_context_length")?
                .unwrap_or(n_ctx_train) as f32;
            let beta_fast = m.f32_or("rope.scaling.yarn_beta_fast", 32.0)?;
            let beta_slow = m.f32_or("rope.scaling.yarn_beta_slow", 1.0)?;
            let corr = |b: f32| {
                n_rot as f32 * (n_orig / (b * 2.0 * std::f32::consts::PI)).ln() / (2.0 * base.ln())
            };
            let lo = corr(beta_fast).floor().max(0.0);
            let hi = corr(beta_slow).ceil().min(n_rot as f32 - 1.0);
            let mscale = |s: f32, mul: f32| {
                if s <= 1.0 {
                    1.0
                } else {
                    0.1 * mul * s.ln() + 1.0
                }
            };
            let log_mul = m.f32_or("rope.scaling.yarn_log_multiplier", 0.0)?;
            attn_factor = if log_mul != 0.0 {
                mscale(factor, 1.0) / mscale(factor, log_mul)
            } else {
                mscale(factor, 1.0)
            };
            // ggml's rope multiplies by (1 + 0.1 ln(1/freq_scale)) again; llama.cpp divides it
            // out here so the net magnitude is the one above.
            attn_factor /= 1.0 + 0.1 * factor.ln();
            yarn = Some(Yarn {
                ext_factor: 1.0,
                corr_dims: [lo, hi],
            });
        }
        let rope = Rope {
            style: RopeStyle::Normal,
            n_rot,
            base,
            freq_scale,
            attn_factor,
            yarn,
        };
        let n_expert = m.opt_usize("expert_count")?.unwrap_or(0);
        let n_expert_used = m.opt_usize("expert_used_count")?.unwrap_or(0);
        if n_expert > 0 && (n_expert_used == 0 || n_expert_used > n_expert) {
            return Err(Error::BadMetadata {
                key: m.key("expert_used_count"),
                message: format!("{n_expert_used} must be between 1 and expert_count {n_expert}"),
            });
        }
        Ok(ModelConfig {
            arch: m.arch.to_string(),
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_vocab,
            n_ctx_train,
            rms_eps,
            layers: vec![
                LayerConfig {
                    swa: false,
                    rope: Some(rope),
                };
                n_layer
            ],
            sliding_window: 0,
            embed_scale: None,
            attn_scale: 1.0 / (head_dim_k as f32).sqrt(),
            attn_softcap: None,
            final_softcap: None,
            attn_temperature: None,
            activation: Activation::Silu,
            n_expert,
            n_expert_used,
            force_tied_output: false,
        })
    }

    pub fn set_rope_style(&mut self, style: RopeStyle) {
        for l in &mut self.layers {
            if let Some(r) = &mut l.rope {
                r.style = style;
            }
        }
    }

    /// Marks sliding-window layers: from a per-layer bool array if the file has one, else
    /// `il % pattern < pattern - 1` (the last layer of each group of `pattern` is global).
    pub fn set_swa_pattern(&mut self, m: &Meta, default_pattern: usize) -> Result<()> {
        if self.sliding_window == 0 {
            return Ok(());
        }
        if let Some(flags) = m.opt_bool_array("attention.sliding_window_pattern") {
            if flags.len() != self.n_layer {
                return Err(Error::BadMetadata {
                    key: m.key("attention.sliding_window_pattern"),
                    message: format!("{} entries for {} layers", flags.len(), self.n_layer),
                });
            }
            for (l, &f) in self.layers.iter_mut().zip(flags) {
                l.swa = f;
            }
            return Ok(());
        }
        let pattern = m
            .opt_usize("attention.sliding_window_pattern")?
            .unwrap_or(default_pattern)
            .max(1);
        for (il, l) in self.layers.iter_mut().enumerate() {
            l.swa = pattern > 1 && il % pattern < pattern - 1;
        }
        Ok(())
    }
}
