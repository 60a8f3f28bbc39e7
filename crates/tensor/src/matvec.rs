//! Few-row products for decoding: `C = X W^T` (and `C = X W`) with a handful
//! of rows in `X`, where the product is bound by memory bandwidth, not
//! arithmetic: the weights stream from memory exactly once and packing them
//! for the blocked kernel ([`crate::gemm`]) would only add traffic.

use rayon::prelude::*;

use crate::gemm::has_simd_kernel;

/// Few-row products against a matrix whose columns are contiguous, `C = X W^T`
/// with `W` stored `(N, K)` row-major, as every `Linear` weight is: each output
/// is a dot product of two contiguous rows, so the weights stream from memory
/// exactly once, split between threads. This is the decode path (a few rows),
/// where the product is bound by memory bandwidth, not arithmetic, and
/// packing would only add traffic.
///
/// # Panics
/// If the sizes do not chain.
pub fn matvec_rows(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, c: &mut [f32]) {
    assert_eq!(x.len(), m * k, "matvec: x has {} floats, expected {m} x {k}", x.len());
    assert_eq!(w.len(), n * k, "matvec: w has {} floats, expected {n} x {k}", w.len());
    assert_eq!(c.len(), m * n, "matvec: output has {} floats, expected {m} x {n}", c.len());
    const CHUNK: usize = 256;
    let mut out_t = vec![0.0f32; n * m]; // (N, M): each thread writes whole rows
    out_t.par_chunks_mut(CHUNK * m).enumerate().for_each(|(ci, block)| {
        for (jj, outs) in block.chunks_exact_mut(m).enumerate() {
            let j = ci * CHUNK + jj;
            let wj = &w[j * k..(j + 1) * k];
            for (i, o) in outs.iter_mut().enumerate() {
                *o = dot(&x[i * k..(i + 1) * k], wj);
            }
        }
    });
    for j in 0..n {
        for i in 0..m {
            c[i * n + j] = out_t[j * m + i];
        }
    }
}

/// `sum_i a_i b_i`: the AVX2+FMA version when the CPU has it, else [`dot_portable`].
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_simd_kernel() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

/// Four 8-float accumulators (32 products in flight hide the FMA latency).
///
/// # Safety
/// The CPU must have AVX2 and FMA; `a` and `b` have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (l, accl) in acc.iter_mut().enumerate() {
            *accl = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * l)), _mm256_loadu_ps(pb.add(i + 8 * l)), *accl);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    let mut total: f32 = lanes.iter().sum();
    while i < n {
        total += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    total
}

/// A dot product with eight independent partial sums, which the compiler
/// vectorises (the sums are reassociated, unlike a single running total).
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (xa, xb) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += xa[l] * xb[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_products_agree_with_a_plain_sum_for_every_tail() {
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 100, 768] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5) % 13) as f32 * 0.1 - 0.6).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64) * (*y as f64)).sum();
            assert!((dot(&a, &b) as f64 - plain).abs() < 1e-4, "n = {n}");
            assert!((dot_portable(&a, &b) as f64 - plain).abs() < 1e-4, "n = {n}");
        }
    }
}
