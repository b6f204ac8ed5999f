//! Scaled dot-product attention over the KV cache: grouped-query heads, causal mask, optional
//! sliding window and score soft-capping. Queries of a batch are processed together, split
//! across threads by (token, head).

use super::act::softmax_in_place;

/// Shapes and options of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    /// Multiplies `q·k`.
    pub scale: f32,
    /// `cap · tanh(s / cap)` on the scaled scores (gemma2).
    pub softcap: Option<f32>,
    /// A key at `p0` is hidden from a query at `p1` when `p1 - p0 >= window`.
    pub window: Option<usize>,
}

/// `q`: `[n_tok, n_head·hd_k]` for positions `pos0..pos0+n_tok`; `k`/`v`: `[n_kv, n_head_kv·hd]`
/// holding positions `0..n_kv` (`n_kv >= pos0 + n_tok`); `out`: `[n_tok, n_head·hd_v]`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos0: usize,
    n_tok: usize,
    p: &AttnParams,
    out: &mut [f32],
    n_threads: usize,
) {
    let hd_v = p.head_dim_v;
    let units = n_tok * p.n_head;
    let n_kv = pos0 + n_tok;
    let work = units * n_kv * (p.head_dim_k + hd_v);
    let n_threads = if work < 1 << 16 {
        1
    } else {
        n_threads.clamp(1, units)
    };
    let per = units.div_ceil(n_threads);
    let run = |first: usize, chunk: &mut [f32]| {
        let mut scores = vec![0f32; n_kv];
        for (i, o) in chunk.chunks_exact_mut(hd_v).enumerate() {
            let u = first + i;
            one_head(q, k, v, pos0, u / p.n_head, u % p.n_head, p, &mut scores, o);
        }
    };
    if n_threads == 1 {
        run(0, out);
        return;
    }
    std::thread::scope(|s| {
        for (ci, chunk) in out.chunks_mut(per * hd_v).enumerate() {
            let run = &run;
            s.spawn(move || run(ci * per, chunk));
        }
    });
}

#[allow(clippy::too_many_arguments)]
fn one_head(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos0: usize,
    t: usize,
    h: usize,
    p: &AttnParams,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (hd_k, hd_v) = (p.head_dim_k, p.head_dim_v);
    let g = h / (p.n_head / p.n_head_kv);
    let qpos = pos0 + t;
    let first = match p.window {
        Some(w) => (qpos + 1).saturating_sub(w),
        None => 0,
    };
    let qv = &q[(t * p.n_head + h) * hd_k..][..hd_k];
    let kstride = p.n_head_kv * hd_k;
    let vstride = p.n_head_kv * hd_v;
    let s = &mut scores[..qpos + 1 - first];
    for (j, sj) in s.iter_mut().enumerate() {
        let kv = &k[(first + j) * kstride + g * hd_k..][..hd_k];
        let mut d = qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f32>() * p.scale;
        if let Some(cap) = p.softcap {
            d = cap * (d / cap).tanh();
        }
        *sj = d;
    }
    softmax_in_place(s);
    out.fill(0.0);
    for (j, &w) in s.iter().enumerate() {
        let vv = &v[(first + j) * vstride + g * hd_v..][..hd_v];
        for (o, &x) in out.iter_mut().zip(vv) {
            *o += w * x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_key_returns_its_value_and_window_hides_old_keys() {
        let p = AttnParams {
            n_head: 2,
            n_head_kv: 1,
            head_dim_k: 2,
            head_dim_v: 2,
            scale: 1.0,
            softcap: None,
            window: Some(1),
        };
        // three positions; with window 1 every query sees only itself.
        let k = vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let v = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let q = vec![0.5; 3 * 2 * 2];
        let mut out = vec![0.0; 3 * 2 * 2];
        attention(&q, &k, &v, 0, 3, &p, &mut out, 1);
        assert_eq!(
            out,
            vec![1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 5.0, 6.0, 5.0, 6.0]
        );
    }

    #[test]
    fn causal_mean_of_values_with_zero_scores() {
        let p = AttnParams {
            n_head: 1,
            n_head_kv: 1,
            head_dim_k: 1,
            head_dim_v: 1,
            scale: 1.0,
            softcap: None,
            window: None,
        };
        let k = vec![0.0; 3];
        let v = vec![3.0, 6.0, 9.0];
        let q = vec![1.0; 3];
        let mut out = vec![0.0; 3];
        attention(&q, &k, &v, 0, 3, &p, &mut out, 2);
        assert_eq!(out, vec![3.0, 4.5, 6.0]);
    }
}
