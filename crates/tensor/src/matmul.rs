//! Matrix products.
//!
//! [`matmul`] is the production path: our packed AVX-512 or AVX2+FMA kernel
//! ([`crate::gemm`]) or, for the few rows of decoding, bandwidth-bound dot
//! products; transposed operands (`a.t()`) cost nothing, just swapped strides.
//! [`matmul_matrixmultiply`] (the `matrixmultiply` crate) and [`matmul_naive`]
//! (the triple loop that defines the result) are the references; tests check
//! all of them agree over many shapes, odd sizes and tails included.

use std::mem::MaybeUninit;

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis};

use crate::{gemm, matvec};
use rayon::prelude::*;

/// `C = A B`, the textbook triple loop, accumulating in f32 in `k` order.
///
/// An algorithmic reference for tests and benchmarks, not for production.
///
/// # Shapes
/// `(M, K) x (K, N) -> (M, N)`
///
/// # Panics
/// If the inner dimensions differ.
///
/// ```
/// use ndarray::array;
/// let a = array![[1.0f32, 2.0], [3.0, 4.0]];
/// let b = array![[5.0f32, 6.0], [7.0, 8.0]];
/// assert_eq!(tensor::matmul_naive(a.view(), b.view()), array![[19.0, 22.0], [43.0, 50.0]]);
/// ```
pub fn matmul_naive(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(k, k2, "matmul_naive: inner dimensions differ ({m}x{k} times {k2}x{n})");
    let mut c = Array2::<f32>::zeros((m, n));
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += a[[i, p]] * b[[p, j]];
            }
            c[[i, j]] = acc;
        }
    }
    c
}

/// Up to this many rows, a product with a weight matrix is done by the
/// few-row kernels ([`matvec`]): the weight is streamed once and the rows
/// stay in L1, while packing it for the blocked kernel would cost more than
/// the arithmetic (measured: 9 x 768 x 768 took 0.8 ms packed, see BENCHMARKS.md).
const MATVEC_MAX_ROWS: usize = 16;

/// `C = A B`, the production path; any strides (transposed views are free).
///
/// Chooses, in order:
/// 1. up to `MATVEC_MAX_ROWS` (16) rows against a matrix with contiguous columns (a `Linear`
///    weight `(N, K)` read as `W^T`): [`matvec::matvec_rows`], bandwidth-bound dot products;
/// 2. up to `MATVEC_MAX_ROWS` rows against a row-major `(K, N)` matrix (GPT-2's `Conv1D`
///    weight): [`matvec::matvec_cols`], bandwidth-bound row updates;
/// 3. with AVX-512F or AVX2+FMA and non-negative strides: our packed kernel, [`gemm::sgemm`];
/// 4. otherwise the `matrixmultiply` crate ([`matmul_matrixmultiply`]).
///
/// # Shapes
/// `(M, K) x (K, N) -> (M, N)`
///
/// # Panics
/// If the inner dimensions differ.
///
/// ```
/// use ndarray::array;
/// let a = array![[1.0f32, 2.0], [3.0, 4.0]];
/// // a.t() is a strided view: [[1, 3], [2, 4]]
/// assert_eq!(tensor::matmul(a.t(), a.view()), array![[10.0, 14.0], [14.0, 20.0]]);
/// ```
pub fn matmul(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(k, k2, "matmul: inner dimensions differ ({m}x{k} times {k2}x{n})");
    if m == 0 || n == 0 || k == 0 {
        return Array2::zeros((m, n));
    }
    if m <= MATVEC_MAX_ROWS && (b.strides() == [1, k as isize] || b.strides() == [n as isize, 1]) {
        let mut c = vec![0.0f32; m * n];
        let x = a.as_standard_layout();
        let x = x.as_slice().expect("standard layout");
        // SAFETY: with strides (1, k) or (n, 1), b's k x n elements are k * n
        // contiguous floats from its first one.
        let w = unsafe { std::slice::from_raw_parts(b.as_ptr(), n * k) };
        if b.strides() == [1, k as isize] {
            matvec::matvec_rows(x, m, k, w, n, &mut c);
        } else {
            matvec::matvec_cols(x, m, k, w, n, &mut c);
        }
        return Array2::from_shape_vec((m, n), c).expect("m * n values");
    }
    match (mat_ref(&a), mat_ref(&b)) {
        (Some(ar), Some(br)) => written_by_kernel(m, n, |c| gemm::sgemm_uninit(gemm::Kernel::detect(), ar, br, c)),
        _ => matmul_matrixmultiply(a, b),
    }
}

/// `C = A B` through the packed GEMM kernel at every size, `B` packed on the
/// fly: bit for bit what [`matmul_packed`] gives with `b` packed as float32
/// (the same panels, kernel, blocking and thread split, so the same
/// summation order). A layer whose weight is still being packed in the
/// background uses this, so that its results do not depend on when the
/// packing finishes. Falls back to [`matmul`] where no kernel runs (and
/// then nothing is packed either).
///
/// # Shapes
/// `(M, K) x (K, N) -> (M, N)`
///
/// # Panics
/// If the inner dimensions differ.
pub fn matmul_blocked(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(k, k2, "matmul_blocked: inner dimensions differ ({m}x{k} times {k2}x{n})");
    if m == 0 || n == 0 || k == 0 {
        return matmul(a, b);
    }
    let Some(kernel) = gemm::Kernel::detect() else { return matmul(a, b) };
    // negative strides are copied to standard layout first, as matmul_packed and pack_weight do
    match (mat_ref(&a), mat_ref(&b)) {
        (Some(ar), Some(br)) => written_by_kernel(m, n, |c| gemm::sgemm_uninit(Some(kernel), ar, br, c)),
        (None, _) => matmul_blocked(a.as_standard_layout().view(), b),
        (_, None) => matmul_blocked(a, b.as_standard_layout().view()),
    }
}

/// `C = A B` for a `B` packed once at load ([`gemm::PackedB`], see there why);
/// any number of rows of `A`, any strides.
///
/// # Shapes
/// `(M, K) x (K, N) -> (M, N)`
///
/// # Panics
/// If the inner dimensions differ.
pub fn matmul_packed(a: ArrayView2<f32>, b: &gemm::PackedB) -> Array2<f32> {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(k, k2, "matmul_packed: inner dimensions differ ({m}x{k} times {k2}x{n})");
    if m == 0 || k == 0 {
        return Array2::zeros((m, n));
    }
    match mat_ref(&a) {
        Some(ar) => written_by_kernel(m, n, |c| gemm::sgemm_packed_uninit(ar, b, c)),
        // negative strides: a standard-layout copy first
        None => matmul_packed(a.as_standard_layout().view(), b),
    }
}

/// Packs `b` `(K, N)` once for [`matmul_packed`] with `kernel`, stored as `ty`; any strides.
///
/// # Panics
/// If the CPU does not run `kernel`, or `ty` is bf16 and `kernel` is not AVX-512.
pub fn pack_weight(kernel: gemm::Kernel, ty: gemm::PackedType, b: ArrayView2<f32>) -> gemm::PackedB {
    if b.is_empty() {
        let (rows, cols) = b.dim();
        return gemm::PackedB::new(kernel, ty, gemm::MatRef { data: &[], rows, cols, row_stride: 0, col_stride: 0 });
    }
    match mat_ref(&b) {
        Some(r) => gemm::PackedB::new(kernel, ty, r),
        None => pack_weight(kernel, ty, b.as_standard_layout().view()),
    }
}

/// An `(m, n)` result allocated without zeroing and handed to `fill`, one of
/// the `*_uninit` products, which writes every element (see
/// [`gemm::sgemm_packed_uninit`]).
fn written_by_kernel(m: usize, n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Array2<f32> {
    let mut c = Vec::with_capacity(m * n);
    fill(&mut c.spare_capacity_mut()[..m * n]);
    // SAFETY: `fill` wrote all m * n elements.
    unsafe { c.set_len(m * n) };
    Array2::from_shape_vec((m, n), c).expect("m * n values")
}

/// A [`gemm::MatRef`] over a view with non-negative strides, or `None`.
pub(crate) fn mat_ref<'a>(v: &'a ArrayView2<f32>) -> Option<gemm::MatRef<'a>> {
    let (rows, cols) = v.dim();
    let (rs, cs) = (v.strides()[0], v.strides()[1]);
    if rs < 0 || cs < 0 {
        return None;
    }
    let span = (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1;
    // SAFETY: a view with non-negative strides addresses exactly the elements
    // between its first pointer and `span` floats on, all inside its array.
    let data = unsafe { std::slice::from_raw_parts(v.as_ptr(), span) };
    Some(gemm::MatRef { data, rows, cols, row_stride: rs, col_stride: cs })
}

/// `C = A B` with the `matrixmultiply` crate: a reference for our kernel and
/// the fallback where it cannot run.
///
/// # Shapes
/// `(M, K) x (K, N) -> (M, N)`
///
/// # Panics
/// If the inner dimensions differ.
pub fn matmul_matrixmultiply(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    let (m, n) = (a.nrows(), b.ncols());
    let mut c = Array2::<f32>::zeros((m, n));
    matmul_into(a, b, &mut c);
    c
}

/// `C = A B` with `matrixmultiply`, written into an existing `(M, N)` output
/// (overwritten, not accumulated).
///
/// # Panics
/// If the shapes do not chain.
pub fn matmul_into(a: ArrayView2<f32>, b: ArrayView2<f32>, c: &mut Array2<f32>) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(k, k2, "matmul: inner dimensions differ ({m}x{k} times {k2}x{n})");
    assert_eq!(c.dim(), (m, n), "matmul: output is {:?}, expected ({m}, {n})", c.dim());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    let (rsa, csa) = (a.strides()[0], a.strides()[1]);
    let (rsb, csb) = (b.strides()[0], b.strides()[1]);
    let (rsc, csc) = (c.strides()[0], c.strides()[1]);
    // SAFETY: the pointers and strides come from live ndarray views whose
    // shapes were checked above; sgemm reads a and b and writes only c, and
    // beta = 0 means c's old contents are never read.
    unsafe {
        matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, 0.0, c.as_mut_ptr(), rsc, csc);
    }
}

/// A batch of independent products `C[i] = A[i] B[i]`, spread over threads with rayon.
///
/// # Shapes
/// `(B, M, K) x (B, K, N) -> (B, M, N)`
///
/// # Panics
/// If the batch sizes or inner dimensions differ.
pub fn batched_matmul(a: ArrayView3<f32>, b: ArrayView3<f32>) -> Array3<f32> {
    let (batch, m, _) = a.dim();
    let (batch2, _, n) = b.dim();
    assert_eq!(batch, batch2, "batched_matmul: batch sizes differ ({batch} vs {batch2})");
    let mut c = Array3::<f32>::zeros((batch, m, n));
    c.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(a.axis_iter(Axis(0)).into_par_iter())
        .zip(b.axis_iter(Axis(0)).into_par_iter())
        .for_each(|((mut ci, ai), bi)| {
            // (M, K) x (K, N) -> (M, N)
            let prod = matmul(ai, bi);
            ci.assign(&prod);
        });
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    /// Deterministic pseudo-random fill, so failures reproduce.
    fn filled(shape: (usize, usize), seed: u32) -> Array2<f32> {
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
        Array::from_shape_fn(shape, |_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 2001) as f32 / 1000.0 - 1.0
        })
    }

    fn max_abs_diff(x: &Array2<f32>, y: &Array2<f32>) -> f32 {
        x.iter().zip(y.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn matmul_agrees_with_naive_over_many_shapes() {
        let sizes = [1, 2, 3, 7, 8, 15, 16, 17, 31, 64, 65, 100];
        for (s, &m) in sizes.iter().enumerate() {
            for &k in &sizes {
                for &n in &[1, 5, 16, 33, 129] {
                    let a = filled((m, k), (s * 31 + k) as u32);
                    let b = filled((k, n), (s * 17 + n) as u32);
                    let slow = matmul_naive(a.view(), b.view());
                    let diff = max_abs_diff(&matmul(a.view(), b.view()), &slow);
                    assert!(diff <= 1e-4 * k as f32, "({m},{k})x({k},{n}): max diff {diff}");
                    let diff = max_abs_diff(&matmul_matrixmultiply(a.view(), b.view()), &slow);
                    assert!(diff <= 1e-4 * k as f32, "matrixmultiply ({m},{k})x({k},{n}): max diff {diff}");
                    // the decode path: B given as the transpose of a row-major (N, K) weight
                    let w = b.t().as_standard_layout().into_owned();
                    let diff = max_abs_diff(&matmul(a.view(), w.t()), &slow);
                    assert!(diff <= 1e-4 * k as f32, "W^T ({m},{k})x({k},{n}): max diff {diff}");
                }
            }
        }
    }

    #[test]
    fn matmul_handles_transposed_operands() {
        let a = filled((13, 29), 1);
        let b = filled((11, 29), 2);
        // (13, 29) x (29, 11) -> (13, 11), with b read through a transposed view
        let fast = matmul(a.view(), b.t());
        let slow = matmul_naive(a.view(), b.t());
        assert!(max_abs_diff(&fast, &slow) <= 1e-4);
        // (29, 13) viewed transposed on the left
        let at = a.t().to_owned();
        let fast_t = matmul(at.t(), b.t());
        assert!(max_abs_diff(&fast_t, &slow) <= 1e-4);
    }

    #[test]
    fn batched_matmul_equals_per_item_products() {
        let (batch, m, k, n) = (5, 9, 12, 7);
        let a = Array3::from_shape_fn((batch, m, k), |(i, j, l)| ((i * 7 + j * 3 + l) % 11) as f32 - 5.0);
        let b = Array3::from_shape_fn((batch, k, n), |(i, j, l)| ((i + j * 5 + l * 2) % 13) as f32 - 6.0);
        let c = batched_matmul(a.view(), b.view());
        for i in 0..batch {
            let expect = matmul_naive(a.index_axis(Axis(0), i), b.index_axis(Axis(0), i));
            assert_eq!(c.index_axis(Axis(0), i), expect);
        }
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        let a = Array2::<f32>::zeros((3, 0));
        let b = Array2::<f32>::zeros((0, 4));
        assert_eq!(matmul(a.view(), b.view()), Array2::<f32>::zeros((3, 4)));
    }
}
