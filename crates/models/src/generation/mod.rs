//! Text generation as transformers' `generate` does it: settings
//! ([`config`]), logits processors ([`logits`]), and the search strategies
//! ([`search`]: greedy, sampling, beam search) over any [`Decoder`].

pub mod beam;
pub mod config;
pub mod logits;
pub mod rng;
pub mod search;

use ndarray::{Array2, ArrayView2};

pub use config::{EarlyStopping, GenerationConfig};

/// A model that extends sequences one step at a time, keeping its own cache.
pub trait Decoder {
    /// Feeds new tokens, `(B, T)` (the whole prompt first, then one token per
    /// row per step), and returns the next-token logits of each row, `(B, V)`.
    fn step(&mut self, tokens: ArrayView2<u32>) -> Array2<f32>;

    /// Keeps batch rows `order` (row `i` becomes old row `order[i]`), for beam
    /// search and for expanding one prompt into several rows.
    fn reorder(&mut self, order: &[usize]);
}
