//! Several independent sequences in one forward pass (the server's continuous batching).
//!
//! The weight matmuls see the tokens of every sequence as one batch, so each weight matrix is
//! streamed once per step however many sequences decode; RoPE positions, the KV cache and
//! attention stay per sequence. The layer code is the same as [`Decoder::forward`]'s, step for
//! step, so a sequence gets the same logits alone or batched, to the bit (tests check this).
//! For that, a token's matmuls take one fixed route whatever its batch
//! ([`ferrite_quant::matmul::BatchInvariant`]): prompt tokens the panel GEMM, decoded tokens
//! the row kernels. Left to batch size, the two would round differently depending on how
//! the batch was cut.

use ferrite_quant::matmul::BatchInvariant;

use super::*;

/// How a sequence's new tokens came to be, which fixes the arithmetic of their matmuls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRole {
    /// Tokens of a prompt: through the panel GEMM, prompt speed, however many there are.
    Prompt,
    /// A token decoded (sampled) at the previous step: through the row kernels.
    Decoded,
}

/// One sequence of a multi-sequence batch: its own cache and the tokens to append to it.
pub struct SeqTokens<'a> {
    pub kv: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub role: TokenRole,
}

impl Decoder {
    /// Appends each sequence's tokens to its cache; `sc.logits` gets `[seqs.len(), n_vocab]`,
    /// the logits after each sequence's last token. Every sequence is checked (non-empty, room
    /// in its cache, token ids) before anything is written.
    ///
    /// A sequence's logits and cache depend only on its own tokens and their roles, not on
    /// the other sequences of the batch or on how its prompt was cut into calls.
    pub fn forward_seqs(
        &self,
        pool: &ThreadPool,
        seqs: &mut [SeqTokens<'_>],
        sc: &mut Scratch,
    ) -> Result<()> {
        let c = &self.config;
        sc.logits.clear();
        if seqs.is_empty() {
            return Ok(());
        }
        for s in seqs.iter() {
            if s.tokens.is_empty() {
                return Err(Error::Invalid("nothing to evaluate: no tokens".into()));
            }
            s.kv.check_room(s.tokens.len())?;
            if let Some(&id) = s.tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
                return Err(Error::BadToken {
                    id,
                    n_vocab: c.n_vocab,
                });
            }
        }
        // Row ranges and positions of each sequence in the combined batch, prompt rows first:
        // the matmul route gives the batch's first `n_prompt` rows the GEMM.
        let is_prompt = |i: &usize| seqs[*i].role == TokenRole::Prompt;
        let rows_order: Vec<usize> = (0..seqs.len())
            .filter(is_prompt)
            .chain((0..seqs.len()).filter(|i| !is_prompt(i)))
            .collect();
        let mut spans = vec![(0, 0, 0); seqs.len()];
        let mut pos = Vec::new();
        let (mut n, mut n_prompt) = (0, 0);
        for &i in &rows_order {
            let s = &seqs[i];
            let pos0 = s.kv.len();
            spans[i] = (n, s.tokens.len(), pos0);
            pos.extend(pos0..pos0 + s.tokens.len());
            n += s.tokens.len();
            if s.role == TokenRole::Prompt {
                n_prompt += s.tokens.len();
            }
        }
        let route = BatchInvariant::with_gemm_rows(n_prompt);
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
        let all_tokens = rows_order.iter().flat_map(|&i| seqs[i].tokens.iter());
        for (row, &id) in x.chunks_exact_mut(d).zip(all_tokens) {
            self.tok_embd.row(id as usize, row)?;
            if let Some(s) = c.embed_scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
        let (qd, kd, vd) = (
            c.n_head * c.head_dim_k,
            c.n_head_kv * c.head_dim_k,
            c.n_head_kv * c.head_dim_v,
        );
        let hv = c.n_head * c.head_dim_v;

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
            let params = AttnParams {
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim_k: c.head_dim_k,
                head_dim_v: c.head_dim_v,
                scale: c.attn_scale,
                softcap: c.attn_softcap,
                window: lc.swa.then_some(c.sliding_window),
            };
            att.resize(n * hv, 0.0);
            for (s, &(r0, m, pos0)) in seqs.iter_mut().zip(&spans) {
                s.kv.write(
                    il,
                    pos0,
                    &k[r0 * kd..(r0 + m) * kd],
                    &v[r0 * vd..(r0 + m) * vd],
                );
                let (kc, vc) = s.kv.view(il, pos0 + m);
                ops::attention(
                    pool,
                    &q[r0 * qd..(r0 + m) * qd],
                    kc,
                    vc,
                    pos0,
                    m,
                    &params,
                    &mut att[r0 * hv..(r0 + m) * hv],
                );
            }
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
                    // The expert gather reorders rows: every row takes the row kernels.
                    let _rows = BatchInvariant::enter();
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
        for (s, &(_, m, _)) in seqs.iter_mut().zip(&spans) {
            s.kv.advance(m);
        }

        // Only each sequence's last row goes through the output projection, on the row
        // kernels (these rows are not the batch's, so the prompt-rows route does not apply).
        drop(route);
        let _rows = BatchInvariant::enter();
        h.clear();
        for &(r0, m, _) in &spans {
            h.extend_from_slice(&x[(r0 + m - 1) * d..(r0 + m) * d]);
        }
        let n_out = spans.len();
        ops::rms_norm_rows(h, &self.output_norm, c.rms_eps);
        logits.resize(n_out * c.n_vocab, 0.0);
        self.output.matmul(pool, h, n_out, logits)?;
        if let Some(cap) = c.final_softcap {
            ops::softcap(logits, cap);
        }
        Ok(())
    }
}
