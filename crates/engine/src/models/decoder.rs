//! The generic decoder-only transformer: token embeddings, `n_layer` pre-norm blocks
//! (attention + gated FFN or mixture of experts), final norm, output projection.
//!
//! One forward call processes a batch of consecutive tokens through each layer at once (weight
//! matmuls see `n_tokens` rows), appending their keys/values to the cache. Buffers live in a
//! [`Scratch`] the caller keeps across calls.

use std::sync::Arc;

use ferrite_gguf::GgufFile;
use ferrite_quant::matmul::ThreadPool;

use super::config::{Activation, ModelConfig};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::ops::{self, AttnParams};
use crate::weights::{Tensors, Weight};

mod batch;
pub use batch::{SeqTokens, TokenRole};

/// A weight matrix with an optional bias.
#[derive(Debug)]
struct Linear {
    w: Weight,
    b: Option<Vec<f32>>,
}

impl Linear {
    fn load(t: &Tensors, name: &str, k: usize, n: usize) -> Result<Linear> {
        Ok(Linear {
            w: t.matrix(&format!("{name}.weight"), k, n)?,
            b: t.opt_vector(&format!("{name}.bias"), n)?,
        })
    }

    fn opt(t: &Tensors, name: &str, k: usize, n: usize) -> Result<Option<Linear>> {
        if t.has(&format!("{name}.weight")) {
            Linear::load(t, name, k, n).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Several projections of the same input, run as one pool job (see
    /// [`Weight::matmul_many`]).
    fn forward_many(
        pool: &ThreadPool,
        x: &[f32],
        n_b: usize,
        outs: &mut [(&Linear, &mut Vec<f32>)],
    ) -> Result<()> {
        for (l, y) in outs.iter_mut() {
            y.resize(n_b * l.w.n_rows, 0.0);
        }
        let mut mats: Vec<(&Weight, &mut [f32])> = outs
            .iter_mut()
            .map(|(l, y)| (&l.w, y.as_mut_slice()))
            .collect();
        Weight::matmul_many(pool, x, n_b, &mut mats)?;
        for (l, y) in outs.iter_mut() {
            if let Some(b) = &l.b {
                for row in y.chunks_exact_mut(b.len()) {
                    for (v, &bb) in row.iter_mut().zip(b) {
                        *v += bb;
                    }
                }
            }
        }
        Ok(())
    }

    fn forward(&self, pool: &ThreadPool, x: &[f32], n_b: usize, y: &mut Vec<f32>) -> Result<()> {
        y.resize(n_b * self.w.n_rows, 0.0);
        self.w.matmul(pool, x, n_b, y)?;
        if let Some(b) = &self.b {
            for row in y.chunks_exact_mut(b.len()) {
                for (v, &bb) in row.iter_mut().zip(b) {
                    *v += bb;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Qkv {
    Separate {
        q: Box<Linear>,
        k: Box<Linear>,
        v: Box<Linear>,
    },
    Fused(Linear),
}

#[derive(Debug)]
enum Ffn {
    /// `down(act(gate·x) * up·x)`; `gate` is `None` when `up` holds gate and up halves (phi3).
    Dense {
        gate: Option<Linear>,
        up: Linear,
        down: Linear,
    },
    Experts {
        router: Weight,
        gate: Weight,
        up: Weight,
        down: Weight,
    },
}

#[derive(Debug)]
struct Layer {
    attn_norm: Vec<f32>,
    qkv: Qkv,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Linear,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    ffn: Ffn,
    post_ffn_norm: Option<Vec<f32>>,
}

/// Which positions of a batch get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsFor {
    None,
    Last,
    All,
    /// The last `n` positions of the batch (perplexity scores only the second half of a
    /// window, and the output matmul is the largest one for big vocabularies).
    Tail(usize),
}

/// Reusable activation buffers of one session.
#[derive(Default, Debug)]
pub struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    moe_x: Vec<f32>,
    moe_y: Vec<f32>,
    router: Vec<f32>,
    /// `[n_out, n_vocab]` logits of the last forward call.
    pub logits: Vec<f32>,
}

/// A loaded model's weights and configuration.
pub struct Decoder {
    pub config: ModelConfig,
    n_ff: usize,
    tok_embd: Weight,
    output: Weight,
    output_norm: Vec<f32>,
    rope_freqs: Option<Vec<f32>>,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// Maps the file's tensors for `config`. Nothing is dequantized except 1-D vectors.
    pub fn load(file: Arc<GgufFile>, config: ModelConfig) -> Result<Decoder> {
        let t = Tensors::new(file);
        let c = &config;
        let d = c.n_embd;
        let tok_embd = t.mapped_matrix("token_embd.weight", d, c.n_vocab)?;
        let output = if t.has("output.weight") && !c.force_tied_output {
            t.matrix("output.weight", d, c.n_vocab)?
        } else {
            // Tied: lookups read the file's rows, the output product a packed copy (where
            // packing pays; the file's pages are then dropped and lookups fault in a few).
            t.packed(tok_embd.clone())
        };
        let output_norm = t.vector("output_norm.weight", d)?;
        let rope_freqs = match c.layers.iter().find_map(|l| l.rope) {
            Some(r) => t.opt_vector("rope_freqs.weight", r.n_rot / 2)?,
            None => None,
        };
        let (qd, kd, vd) = (
            c.n_head * c.head_dim_k,
            c.n_head_kv * c.head_dim_k,
            c.n_head_kv * c.head_dim_v,
        );
        let mut n_ff = 0;
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let p = format!("blk.{il}.");
            let n = |s: &str| format!("{p}{s}");
            let qkv = match Linear::opt(&t, &n("attn_qkv"), d, qd + kd + vd)? {
                Some(l) => Qkv::Fused(l),
                None => Qkv::Separate {
                    q: Box::new(Linear::load(&t, &n("attn_q"), d, qd)?),
                    k: Box::new(Linear::load(&t, &n("attn_k"), d, kd)?),
                    v: Box::new(Linear::load(&t, &n("attn_v"), d, vd)?),
                },
            };
            let ffn = if t.has(&n("ffn_gate_inp.weight")) {
                if c.n_expert == 0 {
                    return Err(Error::Invalid(format!(
                        "{} has expert tensors but no {}.expert_count",
                        n("ffn_gate_inp.weight"),
                        c.arch
                    )));
                }
                let dn = n("ffn_down_exps.weight");
                let ff = t.dims(&dn).and_then(|x| x.first()).copied().unwrap_or(0) as usize;
                n_ff = ff;
                let e = c.n_expert;
                Ffn::Experts {
                    router: t.matrix(&n("ffn_gate_inp.weight"), d, e)?,
                    gate: t.matrix(&n("ffn_gate_exps.weight"), d, ff * e)?,
                    up: t.matrix(&n("ffn_up_exps.weight"), d, ff * e)?,
                    down: t.matrix(&dn, ff, d * e)?,
                }
            } else {
                let dn = n("ffn_down.weight");
                let ff = t
                    .dims(&dn)
                    .and_then(|x| x.first())
                    .copied()
                    .ok_or_else(|| Error::MissingTensor(dn.clone()))?
                    as usize;
                n_ff = n_ff.max(ff);
                let gate = Linear::opt(&t, &n("ffn_gate"), d, ff)?;
                let up_rows = if gate.is_some() { ff } else { 2 * ff };
                Ffn::Dense {
                    gate,
                    up: Linear::load(&t, &n("ffn_up"), d, up_rows)?,
                    down: Linear::load(&t, &n("ffn_down"), ff, d)?,
                }
            };
            layers.push(Layer {
                attn_norm: t.vector(&n("attn_norm.weight"), d)?,
                qkv,
                q_norm: t.opt_vector(&n("attn_q_norm.weight"), c.head_dim_k)?,
                k_norm: t.opt_vector(&n("attn_k_norm.weight"), c.head_dim_k)?,
                wo: Linear::load(&t, &n("attn_output"), qd.max(c.n_head * c.head_dim_v), d)?,
                post_attn_norm: t.opt_vector(&n("post_attention_norm.weight"), d)?,
                ffn_norm: t.vector(&n("ffn_norm.weight"), d)?,
                ffn,
                post_ffn_norm: t.opt_vector(&n("post_ffw_norm.weight"), d)?,
            });
        }
        Ok(Decoder {
            config,
            n_ff,
            tok_embd,
            output,
            output_norm,
            rope_freqs,
            layers,
        })
    }

    /// A KV cache sized for this model.
    pub fn new_cache(&self, ty: crate::kv_cache::KvType, n_ctx: usize) -> KvCache {
        let c = &self.config;
        KvCache::new(
            ty,
            c.n_layer,
            n_ctx,
            c.n_head_kv * c.head_dim_k,
            c.n_head_kv * c.head_dim_v,
        )
    }

    /// Bytes that evaluating one token at position `n_past` reads from memory: every weight
    /// matrix it multiplies (the active share of the experts for mixture-of-experts layers)
    /// plus the cached keys and values its attention reads from a `kv_type` cache. Generation
    /// is bound by this traffic, so tokens/s × this is the memory bandwidth it achieves.
    pub fn bytes_per_token(&self, n_past: usize, kv_type: crate::kv_cache::KvType) -> u64 {
        let c = &self.config;
        let len = |w: &Weight| w.bytes().len() as u64;
        let linear = |l: &Linear| len(&l.w);
        let mut weights = len(&self.output);
        for layer in &self.layers {
            weights += linear(&layer.wo);
            weights += match &layer.qkv {
                Qkv::Fused(l) => linear(l),
                Qkv::Separate { q, k, v } => linear(q) + linear(k) + linear(v),
            };
            weights += match &layer.ffn {
                Ffn::Dense { gate, up, down } => {
                    gate.as_ref().map_or(0, linear) + linear(up) + linear(down)
                }
                Ffn::Experts {
                    router,
                    gate,
                    up,
                    down,
                } => {
                    let experts = len(gate) + len(up) + len(down);
                    len(router) + experts * c.n_expert_used as u64 / c.n_expert.max(1) as u64
                }
            };
        }
        let kv_row = (c.n_head_kv * (c.head_dim_k + c.head_dim_v) * kv_type.elem_bytes()) as u64;
        let keys_seen: u64 = c
            .layers
            .iter()
            .map(|l| {
                let visible = n_past + 1;
                (if l.swa {
                    visible.min(c.sliding_window)
                } else {
                    visible
                }) as u64
            })
            .sum();
        weights + keys_seen * kv_row
    }

    /// Runs `tokens` (at the positions following what `kv` holds) through the model, appending
    /// them to `kv`. Logits land in `sc.logits`: `[1 or n, n_vocab]` per `want`.
    pub fn forward(
        &self,
        pool: &ThreadPool,
        kv: &mut KvCache,
        sc: &mut Scratch,
        tokens: &[u32],
        want: LogitsFor,
    ) -> Result<()> {
        let c = &self.config;
        let n = tokens.len();
        if n == 0 {
            sc.logits.clear();
            return Ok(());
        }
        kv.check_room(n)?;
        let pos0 = kv.len();
        let d = c.n_embd;
        let Scratch {
            x,
            h,
            q,
            k,
            v,
            qkv,
            att,
            o,
            gate,
            up,
            moe_x,
            moe_y,
            router,
            logits,
        } = sc;

        x.resize(n * d, 0.0);
        for (row, &id) in x.chunks_exact_mut(d).zip(tokens) {
            if id as usize >= c.n_vocab {
                return Err(Error::BadToken {
                    id,
                    n_vocab: c.n_vocab,
                });
            }
            self.tok_embd.row(id as usize, row)?;
            if let Some(s) = c.embed_scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
        let pos: Vec<usize> = (pos0..pos0 + n).collect();
        let (qd, kd, vd) = (
            c.n_head * c.head_dim_k,
            c.n_head_kv * c.head_dim_k,
            c.n_head_kv * c.head_dim_v,
        );

        for (il, (layer, lc)) in self.layers.iter().zip(&c.layers).enumerate() {
            h.clear();
            h.extend_from_slice(x);
            ops::rms_norm_rows(h, &layer.attn_norm, c.rms_eps);
            match &layer.qkv {
                Qkv::Separate {
                    q: wq,
                    k: wk,
                    v: wv,
                } => {
                    Linear::forward_many(pool, h, n, &mut [(wq, q), (wk, k), (wv, v)])?;
                }
                Qkv::Fused(w) => {
                    w.forward(pool, h, n, qkv)?;
                    q.clear();
                    k.clear();
                    v.clear();
                    for row in qkv.chunks_exact(qd + kd + vd) {
                        q.extend_from_slice(&row[..qd]);
                        k.extend_from_slice(&row[qd..qd + kd]);
                        v.extend_from_slice(&row[qd + kd..]);
                    }
                }
            }
            if let Some(w) = &layer.q_norm {
                ops::rms_norm_rows(q, w, c.rms_eps);
            }
            if let Some(w) = &layer.k_norm {
                ops::rms_norm_rows(k, w, c.rms_eps);
            }
            if let Some(r) = &lc.rope {
                let ff = self.rope_freqs.as_deref();
                ops::rope(q, c.n_head, c.head_dim_k, &pos, r, ff);
                ops::rope(k, c.n_head_kv, c.head_dim_k, &pos, r, ff);
            }
            if let Some(t) = c.attn_temperature {
                for (row, &p) in q.chunks_exact_mut(qd).zip(&pos) {
                    let s = 1.0 + t.scale * ((p as f32 / t.floor).floor() + 1.0).ln();
                    row.iter_mut().for_each(|v| *v *= s);
                }
            }
            kv.write(il, pos0, k, v);
            let (kc, vc) = kv.view(il, pos0 + n);
            let params = AttnParams {
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim_k: c.head_dim_k,
                head_dim_v: c.head_dim_v,
                scale: c.attn_scale,
                softcap: c.attn_softcap,
                window: lc.swa.then_some(c.sliding_window),
            };
            att.resize(n * c.n_head * c.head_dim_v, 0.0);
            ops::attention(pool, q, kc, vc, pos0, n, &params, att);
            layer.wo.forward(pool, att, n, o)?;
            if let Some(w) = &layer.post_attn_norm {
                ops::rms_norm_rows(o, w, c.rms_eps);
            }
            x.iter_mut().zip(o.iter()).for_each(|(a, b)| *a += b);

            h.clear();
            h.extend_from_slice(x);
            ops::rms_norm_rows(h, &layer.ffn_norm, c.rms_eps);
            match &layer.ffn {
                Ffn::Dense {
                    gate: wg,
                    up: wu,
                    down,
                } => {
                    match wg {
                        Some(wg) => {
                            Linear::forward_many(pool, h, n, &mut [(wg, gate), (wu, up)])?;
                        }
                        None => {
                            // Fused: each row holds [gate | up].
                            wu.forward(pool, h, n, qkv)?;
                            let ff = wu.w.n_rows / 2;
                            gate.clear();
                            up.clear();
                            for row in qkv.chunks_exact(2 * ff) {
                                gate.extend_from_slice(&row[..ff]);
                                up.extend_from_slice(&row[ff..]);
                            }
                        }
                    }
                    activate(c.activation, gate, up);
                    down.forward(pool, gate, n, o)?;
                }
                Ffn::Experts {
                    router: wr,
                    gate: wg,
                    up: wu,
                    down: wd,
                } => {
                    self.experts(
                        pool, h, n, wr, wg, wu, wd, router, moe_x, moe_y, gate, up, o,
                    )?;
                }
            }
            if let Some(w) = &layer.post_ffn_norm {
                ops::rms_norm_rows(o, w, c.rms_eps);
            }
            x.iter_mut().zip(o.iter()).for_each(|(a, b)| *a += b);
        }
        kv.advance(n);

        let rows: &[f32] = match want {
            LogitsFor::None | LogitsFor::Tail(0) => {
                logits.clear();
                return Ok(());
            }
            LogitsFor::Last => &x[(n - 1) * d..],
            LogitsFor::All => x,
            LogitsFor::Tail(m) => &x[(n - m.min(n)) * d..],
        };
        let n_out = rows.len() / d;
        h.clear();
        h.extend_from_slice(rows);
        ops::rms_norm_rows(h, &self.output_norm, c.rms_eps);
        logits.resize(n_out * c.n_vocab, 0.0);
        self.output.matmul(pool, h, n_out, logits)?;
        if let Some(cap) = c.final_softcap {
            ops::softcap(logits, cap);
        }
        Ok(())
    }

    /// Mixture of experts: softmax router, top-k experts per token with renormalised weights;
    /// tokens are grouped per expert so each expert's matrices see one batched matmul.
    #[allow(clippy::too_many_arguments)]
    fn experts(
        &self,
        pool: &ThreadPool,
        h: &[f32],
        n: usize,
        wr: &Weight,
        wg: &Weight,
        wu: &Weight,
        wd: &Weight,
        router: &mut Vec<f32>,
        xs: &mut Vec<f32>,
        ys: &mut Vec<f32>,
        gate: &mut Vec<f32>,
        up: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let c = &self.config;
        let (d, ne, ff) = (c.n_embd, c.n_expert, self.n_ff);
        router.resize(n * ne, 0.0);
        wr.matmul(pool, h, n, router)?;
        // (token, weight) lists per expert.
        let mut assigned: Vec<Vec<(usize, f32)>> = vec![Vec::new(); ne];
        for (t, row) in router.chunks_exact_mut(ne).enumerate() {
            ops::softmax_in_place(row);
            let mut idx: Vec<usize> = (0..ne).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let sel = &idx[..c.n_expert_used];
            let sum: f32 = sel.iter().map(|&e| row[e]).sum();
            for &e in sel {
                assigned[e].push((t, row[e] / sum));
            }
        }
        out.clear();
        out.resize(n * d, 0.0);
        for (e, list) in assigned.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let m = list.len();
            xs.clear();
            for &(t, _) in list {
                xs.extend_from_slice(&h[t * d..(t + 1) * d]);
            }
            gate.resize(m * ff, 0.0);
            up.resize(m * ff, 0.0);
            wg.rows(e * ff, ff).matmul(pool, xs, m, gate)?;
            wu.rows(e * ff, ff).matmul(pool, xs, m, up)?;
            activate(c.activation, gate, up);
            ys.resize(m * d, 0.0);
            wd.rows(e * d, d).matmul(pool, gate, m, ys)?;
            for (i, &(t, w)) in list.iter().enumerate() {
                for (o, &y) in out[t * d..(t + 1) * d].iter_mut().zip(&ys[i * d..]) {
                    *o += w * y;
                }
            }
        }
        Ok(())
    }
}

fn activate(a: Activation, gate: &mut [f32], up: &[f32]) {
    match a {
        Activation::Silu => ops::swiglu(gate, up),
        Activation::GeluTanh => ops::geglu(gate, up),
    }
}

#[cfg(test)]
mod tests {
    use ferrite_gguf::GgmlType;

    use crate::kv_cache::KvType;
    use crate::session::{tiny_test_model_of, Model};

    #[test]
    fn bytes_per_token_counts_each_matrix_once_and_the_visible_cache() {
        for ty in [GgmlType::F32, GgmlType::Q4_0, GgmlType::Q8_0] {
            let model = Model::from_gguf(tiny_test_model_of(ty)).unwrap();
            // The tiny model ties its output to the token embeddings: the output product
            // reads that matrix whole, the lookup one row (not counted).
            let matrices: u64 = model
                .gguf()
                .tensors()
                .iter()
                .filter(|t| t.dims.len() == 2)
                .map(|t| t.n_bytes)
                .sum();
            let c = model.config();
            let kv_row = (c.n_head_kv * (c.head_dim_k + c.head_dim_v)) as u64;
            let layers = c.n_layer as u64;
            let dec = model.decoder();
            assert_eq!(
                dec.bytes_per_token(0, KvType::F16),
                matrices + layers * kv_row * 2,
                "{ty}"
            );
            assert_eq!(
                dec.bytes_per_token(9, KvType::F32),
                matrices + layers * 10 * kv_row * 4,
                "{ty}"
            );
            // A sliding-window layer reads at most its window.
            let mut config = c.clone();
            config.layers[0].swa = true;
            config.sliding_window = 4;
            let file = std::sync::Arc::new(tiny_test_model_of(ty));
            let swa = super::Decoder::load(file, config).unwrap();
            assert_eq!(
                swa.bytes_per_token(9, KvType::F16),
                matrices + (4 + (layers - 1) * 10) * kv_row * 2,
                "{ty}"
            );
        }
    }
}
