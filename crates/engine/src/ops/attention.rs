//! Scaled dot-product attention over the KV cache: grouped-query heads, causal mask, optional
//! sliding window and score soft-capping. Queries of a batch are processed together, split
//! across the pool's threads by (token, head).

use std::cell::RefCell;

use ferrite_quant::kernels::vec::{axpy, dot};
use ferrite_quant::matmul::ThreadPool;

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

/// Below this many multiply-adds a call runs on the calling thread: waking the pool costs
/// more than the work (a single generated token at short context).
const SERIAL_WORK: usize = 1 << 16;

thread_local! {
    /// Per-thread score row, reused across calls.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `q`: `[n_tok, n_head·hd_k]` for positions `pos0..pos0+n_tok`; `k`/`v`: `[n_kv, n_head_kv·hd]`
/// holding positions `0..n_kv` (`n_kv >= pos0 + n_tok`); `out`: `[n_tok, n_head·hd_v]`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    pool: &ThreadPool,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos0: usize,
    n_tok: usize,
    p: &AttnParams,
    out: &mut [f32],
) {
    let hd_v = p.head_dim_v;
    let units = n_tok * p.n_head;
    let n_kv = pos0 + n_tok;
    let work = units * n_kv * (p.head_dim_k + hd_v);
    let run = |first: usize, chunk: &mut [f32]| {
        SCORES.with(|s| {
            let mut scores = s.borrow_mut();
            scores.resize(n_kv, 0.0);
            for (i, o) in chunk.chunks_exact_mut(hd_v).enumerate() {
                let u = first + i;
                one_head(q, k, v, pos0, u / p.n_head, u % p.n_head, p, &mut scores, o);
            }
        })
    };
    if work < SERIAL_WORK || pool.n_threads() == 1 {
        run(0, out);
        return;
    }
    // A few chunks per thread, so a thread that was descheduled does not hold up the rest
    // (causal rows also differ in length).
    let per = units.div_ceil(4 * pool.n_threads()).max(1);
    pool.run_chunks_mut(out, per * hd_v, |ci, chunk| run(ci * per, chunk));
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
        let mut d = dot(qv, kv) * p.scale;
        if let Some(cap) = p.softcap {
            d = cap * (d / cap).tanh();
        }
        *sj = d;
    }
    softmax_in_place(s);
    out.fill(0.0);
    for (j, &w) in s.iter().enumerate() {
        let vv = &v[(first + j) * vstride + g * hd_v..][..hd_v];
        axpy(out, w, vv);
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
        attention(&ThreadPool::new(1), &q, &k, &v, 0, 3, &p, &mut out);
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
        attention(&ThreadPool::new(2), &q, &k, &v, 0, 3, &p, &mut out);
        assert_eq!(out, vec![3.0, 4.5, 6.0]);
    }
}
