//! Our own SGEMM: packed panels, cache blocking and a SIMD micro-kernel, in
//! the style of BLIS (Van Zee & van de Geijn, 2015). The few-row products of
//! decoding go to [`crate::matvec`] instead.
//!
//! # Design
//! `C (M x N) = A (M x K) B (K x N)` is computed in three loops around a
//! micro-kernel that keeps an `MR x NR` block of `C` in registers:
//!
//! - `K` is cut into slices of [`KC`]; for each slice, the `KC x N` part of `B`
//!   is *packed* into `NR`-wide column panels laid out `[k][NR]`, so the
//!   micro-kernel streams it with unit stride (the panel for one `NR` block,
//!   `KC * NR * 4` = 16 KiB, sits in L1 while it is reused for every row block);
//! - the `MC x KC` block of `A` is packed into `MR`-tall row panels `[k][MR]`
//!   (`MC * KC * 4` = 96 KiB, in L2);
//! - the micro-kernel multiplies an `MR x KC` panel of `A` by a `KC x NR` panel
//!   of `B` with one broadcast and two fused multiply-adds per row per `k`.
//!
//! With AVX2 and FMA (16 registers of 8 floats) the kernel is 6 x 16: 12
//! accumulators, 2 registers for the `B` row and 1 for the broadcast `A`
//! value. Each tile is computed in registers and added to `C` (edges
//! clipped). The threads (rayon) split the rows of `C` for tall products
//! (each packs `B` for itself and writes its rows in place), the columns for
//! short ones.
//!
//! The kernel is chosen at run time; without AVX2+FMA, or off x86-64,
//! [`sgemm`] falls back to the `matrixmultiply` crate.

use rayon::prelude::*;

/// Rows of the register tile.
pub const MR: usize = 6;
/// Columns of the register tile (two 8-float vectors).
pub const NR: usize = 16;
/// Depth of a packed slice: 256 keeps a `KC x NR` panel of `B` (16 KiB) in L1.
pub const KC: usize = 256;
/// Rows of `A` packed at once: 96 x 256 floats (96 KiB) stay in L2.
pub const MC: usize = 96;

/// A strided, read-only matrix.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: isize,
    pub col_stride: isize,
}

impl MatRef<'_> {
    #[inline(always)]
    fn at(&self, r: usize, c: usize) -> f32 {
        let i = (r as isize * self.row_stride + c as isize * self.col_stride) as usize;
        debug_assert!(i < self.data.len());
        // SAFETY: `data` spans every element of the `rows x cols` view (see `MatRef`
        // construction in matmul.rs) and r < rows, c < cols at every call site.
        unsafe { *self.data.get_unchecked(i) }
    }
}

/// Whether this CPU runs the AVX2+FMA kernel.
pub fn has_simd_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Packs rows `r0..r0+mc`, depth `p0..p0+kc` of `a` into `MR`-tall panels, `[panel][k][MR]`, zero-padded.
fn pack_a(a: &MatRef, r0: usize, mc: usize, p0: usize, kc: usize, out: &mut Vec<f32>) {
    let panels = mc.div_ceil(MR);
    out.clear();
    out.resize(panels * kc * MR, 0.0);
    for panel in 0..panels {
        let base = panel * kc * MR;
        for i in 0..MR.min(mc - panel * MR) {
            let r = r0 + panel * MR + i;
            for k in 0..kc {
                out[base + k * MR + i] = a.at(r, p0 + k);
            }
        }
    }
}

/// Packs depth `p0..p0+kc`, columns `c0..c0+nc` of `b` into `NR`-wide panels, `[panel][k][NR]`, zero-padded.
fn pack_b(b: &MatRef, p0: usize, kc: usize, c0: usize, nc: usize, out: &mut Vec<f32>) {
    let panels = nc.div_ceil(NR);
    out.clear();
    out.resize(panels * kc * NR, 0.0);
    for panel in 0..panels {
        let base = panel * kc * NR;
        let width = NR.min(nc - panel * NR);
        // read along whichever direction is contiguous in memory
        if b.row_stride.abs() <= b.col_stride.abs() {
            for j in 0..width {
                for k in 0..kc {
                    out[base + k * NR + j] = b.at(p0 + k, c0 + panel * NR + j);
                }
            }
        } else {
            for k in 0..kc {
                for j in 0..width {
                    out[base + k * NR + j] = b.at(p0 + k, c0 + panel * NR + j);
                }
            }
        }
    }
}

/// The 6 x 16 register tile: `tile += A_panel (6 x kc) * B_panel (kc x 16)`.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `a` holds `kc * MR` and `b` `kc * NR` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16(kc: usize, a: &[f32], b: &[f32], tile: &mut [f32; MR * NR]) {
    use std::arch::x86_64::*;
    debug_assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    let (mut ap, mut bp) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2 * MR];
    for _ in 0..kc {
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        for i in 0..MR {
            let ai = _mm256_broadcast_ss(&*ap.add(i));
            acc[2 * i] = _mm256_fmadd_ps(ai, b0, acc[2 * i]);
            acc[2 * i + 1] = _mm256_fmadd_ps(ai, b1, acc[2 * i + 1]);
        }
        ap = ap.add(MR);
        bp = bp.add(NR);
    }
    for i in 0..MR {
        let row = tile.as_mut_ptr().add(i * NR);
        _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), acc[2 * i]));
        _mm256_storeu_ps(row.add(8), _mm256_add_ps(_mm256_loadu_ps(row.add(8)), acc[2 * i + 1]));
    }
}

/// Computes the block `C[r0..r0+mt, c0..c0+nc]` into `out` (row-major, `ldc`
/// floats per row, starting at the block's first element), accumulating.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn gemm_block(a: &MatRef, r0: usize, mt: usize, b: &MatRef, c0: usize, nc: usize, out: &mut [f32], ldc: usize) {
    let k = a.cols;
    let (mut packed_a, mut packed_b) = (Vec::new(), Vec::new());
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        pack_b(b, p0, kc, c0, nc, &mut packed_b);
        for i0 in (0..mt).step_by(MC) {
            let mc = MC.min(mt - i0);
            pack_a(a, r0 + i0, mc, p0, kc, &mut packed_a);
            for (jp, bpanel) in packed_b.chunks_exact(kc * NR).enumerate() {
                let width = NR.min(nc - jp * NR);
                for (ip, apanel) in packed_a.chunks_exact(kc * MR).enumerate() {
                    let height = MR.min(mc - ip * MR);
                    let mut tile = [0.0f32; MR * NR];
                    // SAFETY: callers reach this only after has_simd_kernel(); panel sizes match kc.
                    unsafe { kernel_6x16(kc, apanel, bpanel, &mut tile) };
                    for i in 0..height {
                        let row = (i0 + ip * MR + i) * ldc + jp * NR;
                        for (o, t) in out[row..row + width].iter_mut().zip(&tile[i * NR..i * NR + width]) {
                            *o += t;
                        }
                    }
                }
            }
        }
    }
}

/// `C = A B` into `c` (row-major `M x N`, overwritten) with our kernel when
/// the CPU has it, else `matrixmultiply`.
///
/// # Panics
/// If the sizes do not chain.
pub fn sgemm(a: MatRef, b: MatRef, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "sgemm: inner dimensions differ");
    assert_eq!(c.len(), m * n, "sgemm: output has {} floats, expected {}", c.len(), m * n);
    c.fill(0.0);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_simd_kernel() {
        let threads = rayon::current_num_threads().max(1);
        if threads > 1 && m >= threads * MC {
            // Tall products: split the rows of C between threads; each writes its
            // own rows in place and packs B for itself.
            let rows_per = m.div_ceil(threads).div_ceil(MR) * MR;
            c.par_chunks_mut(rows_per * n).enumerate().for_each(|(t, rows)| {
                gemm_block(&a, t * rows_per, rows.len() / n, &b, 0, n, rows, n);
            });
            return;
        }
        // Short products: split the columns of C, in whole NR panels.
        let per_thread = n.div_ceil(threads).div_ceil(NR) * NR;
        if threads == 1 || per_thread >= n {
            gemm_block(&a, 0, m, &b, 0, n, c, n);
            return;
        }
        let parts: Vec<(usize, Vec<f32>)> = (0..n)
            .step_by(per_thread)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|c0| {
                let nc = per_thread.min(n - c0);
                let mut buf = vec![0.0; m * nc];
                gemm_block(&a, 0, m, &b, c0, nc, &mut buf, nc);
                (c0, buf)
            })
            .collect();
        for (c0, buf) in parts {
            let nc = buf.len() / m;
            for r in 0..m {
                c[r * n + c0..r * n + c0 + nc].copy_from_slice(&buf[r * nc..(r + 1) * nc]);
            }
        }
        return;
    }
    // SAFETY: strides and sizes describe `a.data`, `b.data` and `c` (checked by the callers' views).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.row_stride,
            a.col_stride,
            b.data.as_ptr(),
            b.row_stride,
            b.col_stride,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}
