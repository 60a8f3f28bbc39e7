//! A minimal f32 tensor kit on top of `ndarray`.
//!
//! Everything a transformer forward pass needs beyond indexing: matrix
//! products ([`matmul()`]), the row-wise softmax ([`softmax_last_dim`]), layer
//! normalisation ([`layer_norm`]) and the two GELU variants ([`gelu_erf`],
//! [`gelu_tanh`]). Each fast kernel has a naive reference beside it that the
//! tests compare against.
//!
//! Shape letters used in the docs: `M, K, N` are matrix sizes in
//! `(M, K) x (K, N) -> (M, N)`; `B` is a batch of independent matrices.

pub mod gemm;
pub mod matmul;
pub mod matrix;
pub mod matvec;
pub mod ops;

pub use gemm::{PackedB, PackedType};
pub use matmul::{batched_matmul, matmul, matmul_blocked, matmul_matrixmultiply, matmul_naive, matmul_packed};
pub use matrix::Matrix;
pub use ops::{
    erf, erf_f32, exp_f32, gelu_erf, gelu_erf_inplace, gelu_erf_reference, gelu_tanh, gelu_tanh_inplace, layer_norm,
    softmax_last_dim, softmax_naive, tanh_f32,
};
