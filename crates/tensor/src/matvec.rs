//! Few-row products for decoding, `C = X W^T` and `C = X W`, with a handful
//! of rows in `X` (one token per sequence, a few beams, a short prompt).
//!
//! Why a separate path: with `M` rows the product does `2 M` flops per weight,
//! so for small `M` it is bound by how fast the weights stream from memory,
//! not by arithmetic, and packing them for the blocked kernel
//! ([`crate::gemm`]) would only add a second pass over them. Here every weight
//! is read exactly once, in the order it is stored, and the few rows of `X`
//! stay in L1:
//!
//! - [`matvec_rows`]: `W` stored `(N, K)` row-major (`nn.Linear`): each output
//!   is a dot product of a row of `X` with a row of `W`; the AVX-512 kernel
//!   computes a block of up to 5 rows of `X` against 3 rows of `W` at once
//!   (15 accumulators), so each vector load feeds up to 2 multiply-adds;
//! - [`matvec_cols`]: `W` stored `(K, N)` row-major (GPT-2's `Conv1D`, read in
//!   place from the checkpoint): each row of `W` is scaled by `X[i, k]` and
//!   added to the outputs (an "axpy"), 4 rows of `W` per pass over the outputs.
//!
//! Each thread streams its own contiguous part of `W`: [`matvec_rows`] splits
//! the outputs `N`, [`matvec_cols`] the depth `K`. Kernels: AVX-512F where the CPU has it, else AVX2+FMA
//! (rows) or the compiler's AVX2 vectorisation (columns), else portable Rust;
//! the tests run every kernel the CPU has against [`crate::matmul_naive`].

use rayon::prelude::*;

/// The instruction sets the few-row kernels are written for, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Simd {
    Avx512,
    Avx2,
    Portable,
}

impl Simd {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Simd::Avx2;
            }
        }
        Simd::Portable
    }
}

/// Rows of `X` one axpy kernel call handles (16 accumulators with 4 vectors
/// of outputs; AVX-512 has 32 registers).
const ROWS: usize = 4;

/// Rows of `X` one dot-product kernel call handles, against [`DOT_BLOCK`]
/// rows of `W` (15 accumulators; see [`rows_avx512`]).
const DOT_ROWS: usize = 5;

/// Rows of `W` one dot-product kernel call handles.
const DOT_BLOCK: usize = 3;

/// The width of each thread's task, a multiple of `unit`: about four tasks per
/// thread, so that a thread that finishes early steals work instead of idling.
fn task_width(n: usize, unit: usize) -> usize {
    let tasks = 4 * rayon::current_num_threads().max(1);
    n.div_ceil(tasks).div_ceil(unit).max(1) * unit
}

/// `C = X W^T` for a few rows `X (M, K)` and a weight `W (N, K)` stored
/// row-major, as every `nn.Linear` weight is; `c` is `(M, N)` row-major.
///
/// # Panics
/// If the sizes do not chain.
pub fn matvec_rows(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, c: &mut [f32]) {
    matvec_rows_with(Simd::detect(), x, m, k, w, n, c);
}

fn matvec_rows_with(simd: Simd, x: &[f32], m: usize, k: usize, w: &[f32], n: usize, c: &mut [f32]) {
    assert_eq!(x.len(), m * k, "matvec: x has {} floats, expected {m} x {k}", x.len());
    assert_eq!(w.len(), n * k, "matvec: w has {} floats, expected {n} x {k}", w.len());
    assert_eq!(c.len(), m * n, "matvec: output has {} floats, expected {m} x {n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    let width = task_width(n, DOT_BLOCK);
    // (N, M): each task writes whole rows of the transpose, then one pass puts them in place
    let mut out_t = vec![0.0f32; n * m];
    out_t.par_chunks_mut(width * m).enumerate().for_each(|(task, out)| {
        let (j0, nj) = (task * width, out.len() / m);
        let w = &w[j0 * k..(j0 + nj) * k];
        match simd {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Simd::Avx512` is only chosen when the CPU has AVX-512F; sizes as asserted above.
            Simd::Avx512 => unsafe { rows_avx512(x, m, k, w, nj, out) },
            _ => {
                for (j, outs) in out.chunks_exact_mut(m).enumerate() {
                    for (i, o) in outs.iter_mut().enumerate() {
                        *o = dot(simd, &x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
                    }
                }
            }
        }
    });
    for j in 0..n {
        for i in 0..m {
            c[i * n + j] = out_t[j * m + i];
        }
    }
}

/// `out (nj, m) = W X^T` for `W (nj, K)`, in blocks of 3 rows of `W` by up
/// to [`DOT_ROWS`] rows of `X`. The block of `W` is the outer loop: it comes from
/// memory once and serves every row of `X` from L1.
///
/// Why 3 by up to 5: each step does 15 multiply-adds for 8 loads; measured
/// alone with the data in L1 on a two-FMA Xeon, 5 x 3 and 4 x 4 ran at about
/// 100-110 GFLOP/s, 8 x 3 at 47 (the compiler no longer keeps every
/// accumulator in a register) and 1 x 4 at 68. Rows of `X` are split into
/// near-equal groups (9 = 5 + 4, not 4 + 4 + 1), so that no group is a single
/// row, for which the loads dominate.
///
/// # Safety
/// The CPU must have AVX-512F; `x` is `(m, k)`, `w` `(nj, k)`, `out` `nj * m` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(x: &[f32], m: usize, k: usize, w: &[f32], nj: usize, out: &mut [f32]) {
    type Dots = unsafe fn(*const f32, usize, *const f32, *mut f32, usize);
    // (blocks of DOT_BLOCK rows of W, the single rows of the tail) for r rows of X
    let kernels = |r: usize| -> (Dots, Dots) {
        match r {
            1 => (dots_avx512::<1, DOT_BLOCK>, dots_avx512::<1, 1>),
            2 => (dots_avx512::<2, DOT_BLOCK>, dots_avx512::<2, 1>),
            3 => (dots_avx512::<3, DOT_BLOCK>, dots_avx512::<3, 1>),
            4 => (dots_avx512::<4, DOT_BLOCK>, dots_avx512::<4, 1>),
            _ => (dots_avx512::<5, DOT_BLOCK>, dots_avx512::<5, 1>),
        }
    };
    let group = m.div_ceil(m.div_ceil(DOT_ROWS));
    let mut j = 0;
    while j < nj {
        let block = if j + DOT_BLOCK <= nj { DOT_BLOCK } else { 1 };
        for i0 in (0..m).step_by(group) {
            let (full, one) = kernels(group.min(m - i0));
            let kernel = if block == DOT_BLOCK { full } else { one };
            kernel(x.as_ptr().add(i0 * k), k, w.as_ptr().add(j * k), out.as_mut_ptr().add(j * m + i0), m);
        }
        j += block;
    }
}

/// `R x J` dot products of length `k`: rows `x[0..R]` against rows `w[0..J]`
/// (both `k` floats apart), 16 lanes at a time with a masked tail; writes
/// `out[j * ld + i]`.
///
/// # Safety
/// The CPU must have AVX-512F; `x` holds `R * k`, `w` `J * k` floats, and
/// `out[j * ld + i]` is writable for `i < R`, `j < J`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512<const R: usize, const J: usize>(
    x: *const f32,
    k: usize,
    w: *const f32,
    out: *mut f32,
    ld: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); J]; R];
    let mut p = 0;
    while p < k {
        // lanes past k are masked off: not loaded, counted as 0
        let mask: __mmask16 = if k - p >= 16 { 0xffff } else { (1u16 << (k - p)) - 1 };
        let mut wv = [_mm512_setzero_ps(); J];
        for (jj, v) in wv.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(mask, w.add(jj * k + p));
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let xv = _mm512_maskz_loadu_ps(mask, x.add(i * k + p));
            for (a, v) in acc_i.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(xv, *v, *a);
            }
        }
        p += 16;
    }
    for (i, acc_i) in acc.iter().enumerate() {
        for (jj, a) in acc_i.iter().enumerate() {
            *out.add(jj * ld + i) = _mm512_reduce_add_ps(*a);
        }
    }
}

/// `C = X W` for a few rows `X (M, K)` and a weight `W (K, N)` stored
/// row-major (GPT-2's `Conv1D` orientation, used in place); `c` is `(M, N)` row-major.
///
/// The threads split `K`, not `N`: each takes a contiguous block of rows of
/// `W` (so it reads one unbroken stretch of memory, which the prefetchers
/// follow; splitting `N` instead reads short pieces of every row, a new page
/// each time) and returns its partial `C`; the partials are then added in
/// order, so the result does not depend on thread timing.
///
/// # Panics
/// If the sizes do not chain.
pub fn matvec_cols(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, c: &mut [f32]) {
    matvec_cols_with(Simd::detect(), x, m, k, w, n, c);
}

/// Rows of `W` one pass over the outputs adds (each output vector is loaded
/// and stored once per [`DEPTH`] rows).
const DEPTH: usize = 4;

fn matvec_cols_with(simd: Simd, x: &[f32], m: usize, k: usize, w: &[f32], n: usize, c: &mut [f32]) {
    assert_eq!(x.len(), m * k, "matvec: x has {} floats, expected {m} x {k}", x.len());
    assert_eq!(w.len(), k * n, "matvec: w has {} floats, expected {k} x {n}", w.len());
    assert_eq!(c.len(), m * n, "matvec: output has {} floats, expected {m} x {n}", c.len());
    c.fill(0.0);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    // rows of W per task, a multiple of DEPTH; at least 64 rows, so small products stay on one thread
    let depth = k.div_ceil(threads).div_ceil(DEPTH).max(64 / DEPTH) * DEPTH;
    let partials: Vec<Vec<f32>> = (0..k.div_ceil(depth))
        .into_par_iter()
        .map(|task| {
            let (k0, k1) = (task * depth, (task * depth + depth).min(k));
            let mut out = vec![0.0f32; m * n];
            match simd {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Simd::Avx512` is only chosen when the CPU has AVX-512F; sizes as asserted above.
                Simd::Avx512 => unsafe { cols_avx512(x, m, k, w, n, k0, k1, &mut out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Simd::Avx2` is only chosen when the CPU has AVX2 and FMA.
                Simd::Avx2 => unsafe { cols_avx2(x, m, k, w, n, k0, k1, &mut out) },
                _ => cols_portable(x, m, k, w, n, k0, k1, &mut out),
            }
            out
        })
        .collect();
    for part in partials {
        for (ci, pi) in c.iter_mut().zip(&part) {
            *ci += pi;
        }
    }
}

/// `out (m, n) += X[:, k0..k1] W[k0..k1, :]`: for each row of `W`, each row of
/// `X` adds its multiple of it.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn cols_portable(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, k0: usize, k1: usize, out: &mut [f32]) {
    debug_assert_eq!(out.len(), m * n);
    for p in k0..k1 {
        let w_row = &w[p * n..(p + 1) * n];
        for (i, o) in out.chunks_exact_mut(n).enumerate() {
            let a = x[i * k + p];
            for (o, wv) in o.iter_mut().zip(w_row) {
                *o += a * wv;
            }
        }
    }
}

/// [`cols_portable`] compiled for AVX2+FMA: the compiler vectorises its inner loop.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn cols_avx2(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, k0: usize, k1: usize, out: &mut [f32]) {
    cols_portable(x, m, k, w, n, k0, k1, out);
}

/// `out (m, n) += X[:, k0..k1] W[k0..k1, :]`, [`DEPTH`] rows of `W` at a time
/// against up to [`ROWS`] rows of `X`, 16 outputs per vector (masked tail).
///
/// # Safety
/// The CPU must have AVX-512F; `x` is `(m, k)`, `w` `(k, n)`, `k1 <= k`, `out` `m * n` floats.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn cols_avx512(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, k0: usize, k1: usize, out: &mut [f32]) {
    type Axpy = unsafe fn(*const f32, usize, *const f32, usize, usize, *mut f32);
    // the rows of W are the outer loop, so that each comes from memory once and
    // serves every group of rows of X from L1 (with the groups outside, a 6-row
    // prompt read all of GPT-2's weights twice: 37 ms for its first token, 20 for the next)
    let mut p = k0;
    while p < k1 {
        let depth = DEPTH.min(k1 - p);
        for i0 in (0..m).step_by(ROWS) {
            let r = ROWS.min(m - i0);
            let kernel: Axpy = match (r, depth) {
                (1, DEPTH) => axpy_avx512::<1, DEPTH>,
                (2, DEPTH) => axpy_avx512::<2, DEPTH>,
                (3, DEPTH) => axpy_avx512::<3, DEPTH>,
                (_, DEPTH) => axpy_avx512::<4, DEPTH>,
                (1, _) => axpy_avx512::<1, 1>,
                (2, _) => axpy_avx512::<2, 1>,
                (3, _) => axpy_avx512::<3, 1>,
                _ => axpy_avx512::<4, 1>,
            };
            kernel(x.as_ptr().add(i0 * k + p), k, w.as_ptr().add(p * n), n, n, out.as_mut_ptr().add(i0 * n));
        }
        p += if depth == DEPTH { DEPTH } else { 1 };
    }
}

/// `out[i][..] += sum_{q < D} x[i][q] w[q][..]` for `R` rows of `x` (`ldx`
/// floats apart) and `D` rows of `w` (`ldw` apart), over `n` outputs (rows
/// of `out` `n` apart), 16 at a time with a masked tail.
///
/// # Safety
/// The CPU must have AVX-512F; `x[i * ldx + q]`, `w[q * ldw + j]` are readable
/// and `out[i * n + j]` writable for `i < R`, `q < D`, `j < n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn axpy_avx512<const R: usize, const D: usize>(
    x: *const f32,
    ldx: usize,
    w: *const f32,
    ldw: usize,
    n: usize,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut xs = [[_mm512_setzero_ps(); D]; R];
    for (i, xs_i) in xs.iter_mut().enumerate() {
        for (q, v) in xs_i.iter_mut().enumerate() {
            *v = _mm512_set1_ps(*x.add(i * ldx + q));
        }
    }
    let mut j = 0;
    while j < n {
        // lanes past n are masked off: not loaded, not stored
        let mask: __mmask16 = if n - j >= 16 { 0xffff } else { (1u16 << (n - j)) - 1 };
        let mut wv = [_mm512_setzero_ps(); D];
        for (q, v) in wv.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(mask, w.add(q * ldw + j));
        }
        for (i, xs_i) in xs.iter().enumerate() {
            let o = out.add(i * n + j);
            let mut acc = _mm512_maskz_loadu_ps(mask, o);
            for (xq, wq) in xs_i.iter().zip(&wv) {
                acc = _mm512_fmadd_ps(*xq, *wq, acc);
            }
            _mm512_mask_storeu_ps(o, mask, acc);
        }
        j += 16;
    }
}

/// `sum_i a_i b_i`: the AVX2+FMA version when `simd` allows it, else [`dot_portable`].
fn dot(simd: Simd, a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd != Simd::Portable {
        // SAFETY: Avx512 and Avx2 are only detected on CPUs with AVX2 and FMA
        // (every AVX-512 CPU has both).
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
    use ndarray::Array2;

    /// The kernels this CPU can run, best first.
    fn available() -> Vec<Simd> {
        let all = [Simd::Avx512, Simd::Avx2, Simd::Portable];
        let best = all.iter().position(|s| *s == Simd::detect()).expect("detect returns one of them");
        all[best..].to_vec()
    }

    fn filled(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| ((i * 31 + j * 17 + seed * 7) % 23) as f32 * 0.1 - 1.1)
    }

    #[test]
    fn dot_products_agree_with_a_plain_sum_for_every_tail() {
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 100, 768] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5) % 13) as f32 * 0.1 - 0.6).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64) * (*y as f64)).sum();
            for simd in available() {
                assert!((dot(simd, &a, &b) as f64 - plain).abs() < 1e-4, "{simd:?}, n = {n}");
            }
        }
    }

    #[test]
    fn every_kernel_agrees_with_naive_in_both_weight_orientations() {
        // rows 1..=9 cover every row-group size (4 + 4 + 1); N and K hit every tail of 4, 16 and 64
        for m in 1..=9 {
            for (k, n) in [(1, 1), (5, 3), (16, 64), (17, 65), (33, 130), (100, 7), (768, 200)] {
                let x = filled(m, k, m);
                let w_nk = filled(n, k, n); // (N, K), nn.Linear
                let expect = crate::matmul_naive(x.view(), w_nk.t());
                let w_kn = w_nk.t().as_standard_layout().into_owned(); // (K, N), Conv1D
                let xs = x.as_slice().unwrap();
                for simd in available() {
                    let mut c = vec![0.0f32; m * n];
                    matvec_rows_with(simd, xs, m, k, w_nk.as_slice().unwrap(), n, &mut c);
                    let diff = Array2::from_shape_vec((m, n), c).unwrap() - &expect;
                    let max = diff.iter().fold(0.0f32, |a, d| a.max(d.abs()));
                    assert!(max <= 1e-4 * k as f32, "rows {simd:?} ({m},{k})x({k},{n}): max diff {max}");
                    let mut c = vec![0.0f32; m * n];
                    matvec_cols_with(simd, xs, m, k, w_kn.as_slice().unwrap(), n, &mut c);
                    let diff = Array2::from_shape_vec((m, n), c).unwrap() - &expect;
                    let max = diff.iter().fold(0.0f32, |a, d| a.max(d.abs()));
                    assert!(max <= 1e-4 * k as f32, "cols {simd:?} ({m},{k})x({k},{n}): max diff {max}");
                }
            }
        }
    }
}
