//! The key/value cache of autoregressive decoding.
//!
//! Without a cache, step `t` of generation reruns the whole sequence: `O(t)`
//! projections and `O(t^2)` attention scores. With it, each step projects
//! only the new token (`O(1)`), appends its key and value, and scores one
//! query against the `t` cached keys (`O(t)`).

use ndarray::{s, Array4, ArrayView4, Axis};

/// One layer's cached keys and values, preallocated to a capacity.
///
/// # Shapes
/// `k`, `v`: `(B, nh, capacity, hs)`, of which the first `len` positions are filled.
#[derive(Clone, Debug)]
pub struct LayerCache {
    k: Array4<f32>,
    v: Array4<f32>,
    len: usize,
}

impl LayerCache {
    /// An empty cache for `batch` rows, `n_head` heads of size `head_size`, up to `capacity` positions.
    pub fn new(batch: usize, n_head: usize, capacity: usize, head_size: usize) -> Self {
        let shape = (batch, n_head, capacity, head_size);
        Self { k: Array4::zeros(shape), v: Array4::zeros(shape), len: 0 }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the new positions' keys and values and returns views of the
    /// whole cached sequence.
    ///
    /// # Shapes
    /// `k_new`, `v_new` `(B, nh, T, hs)` -> `(B, nh, len + T, hs)` each.
    ///
    /// # Panics
    /// If the capacity would be exceeded or the shapes differ from the cache's.
    ///
    /// The math: `docs/attention.md`, section "4. The KV cache".
    pub fn append(
        &mut self,
        k_new: ArrayView4<f32>,
        v_new: ArrayView4<f32>,
    ) -> (ArrayView4<'_, f32>, ArrayView4<'_, f32>) {
        let (b, nh, t, hs) = k_new.dim();
        let (cb, cnh, cap, chs) = self.k.dim();
        assert_eq!((b, nh, hs), (cb, cnh, chs), "kv cache holds {:?}, new keys are {:?}", self.k.dim(), k_new.dim());
        assert!(self.len + t <= cap, "kv cache capacity {cap} exceeded ({} + {t})", self.len);
        let range = s![.., .., self.len..self.len + t, ..];
        self.k.slice_mut(range).assign(&k_new);
        self.v.slice_mut(range).assign(&v_new);
        self.len += t;
        let filled = s![.., .., ..self.len, ..];
        (self.k.slice(filled), self.v.slice(filled))
    }

    /// Reorders the batch rows: row `i` becomes old row `order[i]` (beam search
    /// keeps the beams whose continuations survived). Only the filled
    /// positions are copied.
    ///
    /// The math: `docs/attention.md`, section "4. The KV cache".
    pub fn reorder(&mut self, order: &[usize]) {
        let filled = s![.., .., ..self.len, ..];
        let kept_k = self.k.slice(filled).select(Axis(0), order);
        let kept_v = self.v.slice(filled).select(Axis(0), order);
        let (_, nh, cap, hs) = self.k.dim();
        if order.len() != self.k.dim().0 {
            self.k = Array4::zeros((order.len(), nh, cap, hs));
            self.v = Array4::zeros((order.len(), nh, cap, hs));
        }
        self.k.slice_mut(filled).assign(&kept_k);
        self.v.slice_mut(filled).assign(&kept_v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn append_then_reorder() {
        let mut cache = LayerCache::new(2, 1, 4, 1);
        let k = Array::from_shape_vec((2, 1, 2, 1), vec![1.0, 2.0, 10.0, 20.0]).unwrap();
        let (kk, _) = cache.append(k.view(), k.view());
        assert_eq!(kk.dim(), (2, 1, 2, 1));
        let k2 = Array::from_shape_vec((2, 1, 1, 1), vec![3.0, 30.0]).unwrap();
        cache.append(k2.view(), k2.view());
        assert_eq!(cache.len(), 3);
        cache.reorder(&[1, 1]);
        let (kk, _) = cache.append(Array4::zeros((2, 1, 1, 1)).view(), Array4::zeros((2, 1, 1, 1)).view());
        assert_eq!(kk.iter().copied().collect::<Vec<f32>>(), vec![10.0, 20.0, 30.0, 0.0, 10.0, 20.0, 30.0, 0.0]);
    }
}
