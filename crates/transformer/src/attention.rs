//! Multi-head scaled dot-product attention (Vaswani et al., 2017):
//!
//! `Attention(Q, K, V) = softmax(Q K^T / sqrt(hs) + M) V`, per head,
//!
//! where `M` is an additive mask (0 where a query may look, a large negative
//! number where it may not). Self-attention, causal attention, attention with
//! a KV cache and cross-attention differ only in where `K, V` come from and
//! in `M`, so one function serves them all.
//!
//! Shapes: `(B, nh, T, hs)` queries against `(B, nh, S, hs)` keys and values.

use ndarray::{s, Array2, Array3, Array4, ArrayView2, ArrayView4, Axis};
use rayon::prelude::*;

use crate::Linear;

/// The value a masked score takes. Hugging Face uses the dtype minimum
/// (`torch.finfo(float32).min`) rather than `-inf`; we do the same, so a row
/// with every key masked gives a uniform distribution exactly as theirs does,
/// instead of NaN.
pub const MASKED: f32 = f32::MIN;

/// Which keys each query may attend to, as an additive bias of 0 or [`MASKED`].
///
/// # Shapes
/// `(B, T, S)`: batch, query position, key position.
#[derive(Clone, Debug)]
pub struct AttentionMask {
    bias: Array3<f32>,
}

impl AttentionMask {
    /// Builds the mask from an optional key padding mask and a causal flag.
    ///
    /// - `key_mask` `(B, S)`: 1 for a real token, 0 for padding (the tokenizer's
    ///   `attention_mask`); `None` lets every key through.
    /// - `causal`: query `t` may only see keys `s <= past + t`, where `past = S - T`
    ///   is the number of cached positions before the first query.
    ///
    /// Both rules set the bias to [`MASKED`] (never add it twice, which would overflow to `-inf`).
    ///
    /// # Panics
    /// If `key_mask` does not have `S` columns, or `T > S` with `causal`.
    ///
    /// The math: `docs/attention.md`, section "2. Masks".
    pub fn new(key_mask: Option<ArrayView2<u8>>, batch: usize, t: usize, s: usize, causal: bool) -> Self {
        if let Some(m) = &key_mask {
            assert_eq!(m.dim(), (batch, s), "attention mask is {:?}, expected ({batch}, {s})", m.dim());
        }
        assert!(!causal || t <= s, "causal attention needs at least as many keys ({s}) as queries ({t})");
        let past = s - t.min(s);
        let bias = Array3::from_shape_fn((batch, t, s), |(b, i, j)| {
            let padded = key_mask.as_ref().is_some_and(|m| m[[b, j]] == 0);
            let future = causal && j > past + i;
            if padded || future {
                MASKED
            } else {
                0.0
            }
        });
        Self { bias }
    }

    /// The bias `(B, T, S)`.
    pub fn bias(&self) -> &Array3<f32> {
        &self.bias
    }
}

/// Splits the channels of `x` into heads.
///
/// # Shapes
/// `(B, T, C) -> (B, nh, T, hs)`, with `hs = C / nh`. The result is a strided
/// permutation of `x` (no copy).
///
/// # Panics
/// If `C` is not divisible by `nh`, or `x` is not in standard layout.
pub fn split_heads(x: Array3<f32>, n_head: usize) -> Array4<f32> {
    let (b, t, c) = x.dim();
    assert_eq!(c % n_head, 0, "hidden size {c} is not divisible by {n_head} heads");
    // (B, T, C) -> (B, T, nh, hs)
    let x = x.into_shape_with_order((b, t, n_head, c / n_head)).expect("split_heads needs a standard-layout input");
    // (B, T, nh, hs) -> (B, nh, T, hs)
    x.permuted_axes([0, 2, 1, 3])
}

/// What [`attention`] returns.
#[derive(Clone, Debug)]
pub struct AttentionOutput {
    /// `(B*T, C)`: the attention-weighted values, heads side by side again
    /// (head `h` in channels `h*hs..(h+1)*hs`), ready for the output projection.
    pub context: Array2<f32>,
    /// `(B, nh, T, S)`: the attention probabilities (each row sums to 1), when asked for.
    pub probs: Option<Array4<f32>>,
}

/// Scaled dot-product attention for every batch item and head, heads in parallel.
///
/// For each `(b, h)`:
/// 1. `scores = Q K^T / sqrt(hs)` — how well each query matches each key;
/// 2. `scores += M` — masked keys drop to [`MASKED`];
/// 3. `probs = softmax(scores)` over the keys;
/// 4. `context = probs V` — a probability-weighted mix of the values, written
///    straight into its head's channels of the merged `(B*T, C)` output.
///
/// Only one head's `(T, S)` scores exist at a time per thread; the
/// probabilities of every head are kept only with `keep_probs` (the study
/// tools ask for them, a pipeline does not: for a DistilBERT batch of
/// 8 x 128 they are 6 MB a layer).
///
/// # Shapes
/// `q` `(B, nh, T, hs)`, `k` and `v` `(B, nh, S, hs)`, mask `(B, T, S)`;
/// returns context `(B*T, nh*hs)` and, with `keep_probs`, probs `(B, nh, T, S)`.
///
/// # Panics
/// If the shapes do not agree.
///
/// The math: `docs/attention.md`, section "1. Scaled dot-product and multi-head attention".
pub fn attention(
    q: ArrayView4<f32>,
    k: ArrayView4<f32>,
    v: ArrayView4<f32>,
    mask: Option<&AttentionMask>,
    keep_probs: bool,
) -> AttentionOutput {
    let (b, nh, t, hs) = q.dim();
    let s = k.dim().2;
    assert_eq!(k.dim(), (b, nh, s, hs), "keys are {:?}, queries {:?}", k.dim(), q.dim());
    assert_eq!(v.dim(), (b, nh, s, hs), "values are {:?}, keys {:?}", v.dim(), k.dim());
    if let Some(m) = mask {
        assert_eq!(m.bias.dim(), (b, t, s), "mask is {:?}, expected ({b}, {t}, {s})", m.bias.dim());
    }
    let scale = 1.0 / (hs as f32).sqrt();

    let per_head: Vec<(Array2<f32>, Option<Array2<f32>>)> = (0..b * nh)
        .into_par_iter()
        .map(|bh| {
            let (bi, hi) = (bh / nh, bh % nh);
            let qh = q.index_axis(Axis(0), bi).index_axis_move(Axis(0), hi);
            let kh = k.index_axis(Axis(0), bi).index_axis_move(Axis(0), hi);
            let vh = v.index_axis(Axis(0), bi).index_axis_move(Axis(0), hi);
            // 1. (T, hs) x (hs, S) -> (T, S)
            let mut scores = tensor::matmul(qh, kh.t());
            scores *= scale;
            // 2. mask
            if let Some(m) = mask {
                scores += &m.bias.index_axis(Axis(0), bi);
            }
            // 3. softmax over keys
            tensor::softmax_last_dim(scores.view_mut().into_dyn());
            // 4. (T, S) x (S, hs) -> (T, hs)
            let context = tensor::matmul(scores.view(), vh);
            (context, keep_probs.then_some(scores))
        })
        .collect();

    let mut context = Array2::<f32>::zeros((b * t, nh * hs));
    let mut probs = keep_probs.then(|| Array4::<f32>::zeros((b, nh, t, s)));
    for (bh, (ctx, p)) in per_head.into_iter().enumerate() {
        let (bi, hi) = (bh / nh, bh % nh);
        // (T, hs) -> rows bi*T.., channels hi*hs..
        context.slice_mut(s![bi * t..(bi + 1) * t, hi * hs..(hi + 1) * hs]).assign(&ctx);
        if let (Some(all), Some(p)) = (&mut probs, p) {
            all.index_axis_mut(Axis(0), bi).index_axis_mut(Axis(0), hi).assign(&p);
        }
    }
    AttentionOutput { context, probs }
}

/// The four projections of a multi-head attention block, borrowed from a
/// model's own fields (BERT's `query/key/value/dense`, DistilBERT's
/// `q_lin/k_lin/v_lin/out_lin`, ...).
pub struct Projections<'a> {
    pub query: &'a Linear,
    pub key: &'a Linear,
    pub value: &'a Linear,
    pub output: &'a Linear,
}

/// Multi-head attention with its projections:
/// `MultiHead(X_q, X_kv) = concat_h(Attention(X_q W_q^h, X_kv W_k^h, X_kv W_v^h)) W_o`.
/// Self-attention passes the same rows as `x_q` and `x_kv`.
///
/// # Shapes
/// `x_q` `(B*T, C)` and `x_kv` `(B*S, C)` flattened batches; mask `(B, T, S)`;
/// returns the output `(B*T, C)` and, with `keep_probs`, the probabilities `(B, nh, T, S)`.
///
/// The math: `docs/attention.md`, section "1. Scaled dot-product and multi-head attention".
#[allow(clippy::too_many_arguments)]
pub fn multi_head_attention(
    x_q: ArrayView2<f32>,
    x_kv: ArrayView2<f32>,
    batch: usize,
    n_head: usize,
    proj: &Projections,
    mask: Option<&AttentionMask>,
    keep_probs: bool,
) -> (Array2<f32>, Option<Array4<f32>>) {
    let c = proj.query.out_features();
    let (t, s) = (x_q.nrows() / batch, x_kv.nrows() / batch);
    // (B*T, C) -> (B, T, C) -> (B, nh, T, hs); likewise for keys and values over S
    let to_heads = |y: Array2<f32>, len: usize| {
        split_heads(y.into_shape_with_order((batch, len, c)).expect("projection output is contiguous"), n_head)
    };
    let q = to_heads(proj.query.forward(x_q), t);
    let k = to_heads(proj.key.forward(x_kv), s);
    let v = to_heads(proj.value.forward(x_kv), s);
    // context (B*T, C), heads merged
    let AttentionOutput { context, probs } = attention(q.view(), k.view(), v.view(), mask, keep_probs);
    (proj.output.forward(context.view()), probs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::{array, Array};

    /// Attention for one head written with explicit loops, as a reference.
    fn naive_head(q: ArrayView2<f32>, k: ArrayView2<f32>, v: ArrayView2<f32>, bias: ArrayView2<f32>) -> Array2<f32> {
        let (t, hs) = q.dim();
        let s = k.nrows();
        let mut out = Array2::<f32>::zeros((t, hs));
        for i in 0..t {
            let scores: Vec<f64> = (0..s)
                .map(|j| {
                    let dot: f64 = (0..hs).map(|d| (q[[i, d]] * k[[j, d]]) as f64).sum();
                    dot / (hs as f64).sqrt() + bias[[i, j]] as f64
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            for d in 0..hs {
                out[[i, d]] = (0..s).map(|j| exps[j] / sum * v[[j, d]] as f64).sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn attention_matches_loops_with_padding_and_causal_masks() {
        let (b, nh, t, s, hs) = (2, 3, 4, 6, 5);
        let q =
            Array::from_shape_fn((b, nh, t, hs), |(a, h, i, d)| ((a + 2 * h + 3 * i + 5 * d) % 7) as f32 * 0.3 - 1.0);
        let k = Array::from_shape_fn((b, nh, s, hs), |(a, h, i, d)| ((3 * a + h + 2 * i + d) % 5) as f32 * 0.4 - 0.8);
        let v = Array::from_shape_fn((b, nh, s, hs), |(a, h, i, d)| ((a + h + i * d) % 9) as f32 * 0.2);
        let key_mask = array![[1u8, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]];
        for causal in [false, true] {
            let mask = AttentionMask::new(Some(key_mask.view()), b, t, s, causal);
            let out = attention(q.view(), k.view(), v.view(), Some(&mask), true);
            let probs = out.probs.expect("asked for");
            for a in 0..b {
                for h in 0..nh {
                    let qh = q.index_axis(Axis(0), a).index_axis_move(Axis(0), h);
                    let kh = k.index_axis(Axis(0), a).index_axis_move(Axis(0), h);
                    let vh = v.index_axis(Axis(0), a).index_axis_move(Axis(0), h);
                    let expect = naive_head(qh, kh, vh, mask.bias().index_axis(Axis(0), a));
                    let got = out.context.slice(s![a * t..(a + 1) * t, h * hs..(h + 1) * hs]);
                    for (x, y) in got.iter().zip(expect.iter()) {
                        assert_abs_diff_eq!(x, y, epsilon = 1e-5);
                    }
                }
            }
            // padded keys of item 1 get exactly zero weight
            assert_eq!(probs[[1, 0, 0, 4]], 0.0);
            assert_eq!(probs[[1, 2, 3, 5]], 0.0);
            // without the probabilities, the same context
            let lean = attention(q.view(), k.view(), v.view(), Some(&mask), false);
            assert!(lean.probs.is_none());
            assert_eq!(lean.context, out.context);
        }
    }

    #[test]
    fn causal_mask_with_a_cache_sees_the_past() {
        // 2 cached positions + 3 new queries: query i sees keys 0..=2+i
        let mask = AttentionMask::new(None, 1, 3, 5, true);
        let visible: Vec<Vec<bool>> = (0..3).map(|i| (0..5).map(|j| mask.bias()[[0, i, j]] == 0.0).collect()).collect();
        assert_eq!(
            visible,
            vec![
                vec![true, true, true, false, false],
                vec![true, true, true, true, false],
                vec![true, true, true, true, true]
            ]
        );
    }

    #[test]
    fn split_heads_moves_channels_into_heads() {
        let x = Array::from_shape_fn((2, 3, 8), |(a, b, c)| (a * 100 + b * 10 + c) as f32);
        let heads = split_heads(x, 4);
        assert_eq!(heads.dim(), (2, 4, 3, 2));
        // head 1 of item 0, position 2 holds channels 2..4
        assert_eq!(heads[[0, 1, 2, 0]], 22.0);
        assert_eq!(heads[[1, 3, 0, 1]], 107.0);
    }
}
