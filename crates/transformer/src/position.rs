//! Positional encodings that are computed rather than learned.

use ndarray::Array2;

/// The fixed sinusoidal table of "Attention Is All You Need", laid out as
/// DistilBERT's `create_sinusoidal_embeddings` does (`sinusoidal_pos_embds: true`):
///
/// `angle(p, j) = p / 10000^(2 floor(j/2) / C)`; even columns `sin(angle)`, odd columns `cos(angle)`.
///
/// Computed in f64 and rounded to f32, as the reference (NumPy, then
/// `torch.FloatTensor`) does.
///
/// # Shapes
/// `-> (n_positions, C)`
///
/// ```
/// let table = transformer::sinusoidal_positions(3, 4);
/// assert_eq!(table[[0, 0]], 0.0); // sin(0)
/// assert_eq!(table[[0, 1]], 1.0); // cos(0)
/// assert_eq!(table[[1, 0]], 1.0f64.sin() as f32);
/// ```
///
/// The math: `docs/attention.md`, section "6. Positions".
pub fn sinusoidal_positions(n_positions: usize, dim: usize) -> Array2<f32> {
    Array2::from_shape_fn((n_positions, dim), |(p, j)| {
        let angle = p as f64 / 10000f64.powf(2.0 * (j / 2) as f64 / dim as f64);
        if j % 2 == 0 {
            angle.sin() as f32
        } else {
            angle.cos() as f32
        }
    })
}
