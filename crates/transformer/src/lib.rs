//! Transformer building blocks, written by hand on top of `tensor`.
//!
//! Shape legend used throughout:
//! `B` batch size, `T` query length, `S` key length (`S = T` in
//! self-attention without a cache), `C` channels (hidden size), `nh` number
//! of heads, `hs` head size (`C / nh`), `V` vocabulary size, `N` rows of a
//! flattened batch (`B * T`).
//!
//! The model files in the `models` crate compose these pieces; each piece
//! carries its equation in its doc comment.

pub mod activation;
pub mod attention;
pub mod kv_cache;
pub mod layers;
pub mod position;

pub use activation::Activation;
pub use attention::{attention, multi_head_attention, split_heads, AttentionMask, AttentionOutput, Projections};
pub use kv_cache::LayerCache;
pub use layers::{Embedding, LayerNorm, Linear, PackSlot};
pub use position::sinusoidal_positions;
