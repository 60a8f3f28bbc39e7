//! Our own SGEMM: packed panels, cache blocking and a SIMD micro-kernel, in
//! the style of BLIS (Van Zee & van de Geijn, 2015). With `B` packed per call
//! ([`sgemm`]), the few-row products of decoding go to [`crate::matvec`]
//! instead; with `B` packed once ([`PackedB`], [`sgemm_packed`]), every row
//! count runs here, one row as well as a thousand.
//!
//! # Design
//! `C (M x N) = A (M x K) B (K x N)` is computed in loops around a
//! micro-kernel that keeps an `MR x NR` tile of `C` in registers and, for
//! every `k`, adds the outer product of `MR` values of `A` (broadcast) and
//! `NR` values of `B` (vector loads):
//!
//! ```text
//! for pc in K, step KC
//!   pack A[.., pc..] (the thread's rows) into MR-tall panels [k][MR]
//!   for jc in N, step NC
//!     pack B[pc.., jc..] into NR-wide panels [k][NR]   B block: KC x NC, 512 KiB, stays in L2
//!     for each A panel                                 MR x KC: 14 KiB (AVX-512), stays in L1
//!       for each B panel                               KC x NR, streamed from L2
//!         tile(MR x NR) (+)= A panel x B panel         the first K slice stores, the rest add
//! ```
//!
//! Why these sizes: the A panel is reused for every B panel of the block, so
//! it must sit in L1 (32 KiB on the machines measured) beside the B panel
//! streaming through (`KC * NR * 4` = 32 KiB for AVX-512, read once per
//! tile, which L1 tolerates since each B line is used `MR` times as soon as
//! it arrives); the B block is reused by every A panel, so `KC x NC` is sized
//! for half of a 1 MiB L2. `KC` = 256 makes each tile update (load, add and
//! store `MR x NR` floats of `C`) cost under 1% of the tile's `2 MR NR KC`
//! flops.
//!
//! Kernels, chosen at run time ([`Kernel::detect`]):
//! - AVX-512F: 14 x 32, 28 accumulator registers of the 32, 2 for the `B`
//!   row, 1 for the broadcast of `A`: 28 FMAs per 16 loads, so the FMA units,
//!   not the load ports, set the pace. Measured alone on L1-resident panels
//!   on a Xeon with two 512-bit FMA units (peak about 210 GFLOP/s a core):
//!   12 x 32 ran at 175 GFLOP/s and dropped to 158 with the B panels streaming
//!   from L2, 14 x 32 at 183 either way, 8 x 48 at 170, 6 x 64 at 165. The
//!   kernel prefetches its tile of `C` before the K loop, so that the final
//!   read-add-write of a tile that has left the caches does not stall;
//! - AVX2+FMA: 6 x 16, 12 accumulators of the 16 registers.
//!
//! Without either, or off x86-64, [`sgemm`] falls back to the
//! `matrixmultiply` crate. Threads (rayon) take disjoint blocks of `C`: the
//! columns when `N >= M`, otherwise the rows, so that the operand every
//! thread packs for itself (`A` for a column split, `B` for a row split) is
//! the smaller one.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Depth of a packed slice (see the module docs).
pub const KC: usize = 256;
/// Columns of `B` packed at once: `KC x NC` floats = 512 KiB.
pub const NC: usize = 512;

/// How many steps of `k` ahead of its B panel the AVX-512 kernel prefetches.
const PREFETCH_STEPS: usize = 48;

/// The largest kernel's tile, `MR x NR` floats.
const MAX_TILE: usize = 14 * 32;

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
    /// The offset of `(r, c)` in `data`.
    #[inline(always)]
    fn index(&self, r: usize, c: usize) -> usize {
        (r as isize * self.row_stride + c as isize * self.col_stride) as usize
    }
}

/// The micro-kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// 14 x 32 with AVX-512F.
    Avx512,
    /// 6 x 16 with AVX2 and FMA.
    Avx2,
}

impl Kernel {
    /// Every kernel, best first.
    const ALL: [Kernel; 2] = [Kernel::Avx512, Kernel::Avx2];

    /// Whether this CPU runs the kernel.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
                Kernel::Avx2 => {
                    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The best kernel this CPU runs, if any.
    pub fn detect() -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.supported())
    }

    /// Every kernel this CPU runs, best first.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.supported()).collect()
    }

    /// Rows of the register tile.
    pub fn mr(self) -> usize {
        match self {
            Kernel::Avx512 => 14,
            Kernel::Avx2 => 6,
        }
    }

    /// Columns of the register tile (two vectors).
    pub fn nr(self) -> usize {
        match self {
            Kernel::Avx512 => 32,
            Kernel::Avx2 => 16,
        }
    }

    /// `C[0..rows, 0..nr] (+)= A panel (rows of mr x kc) * B panel (kc x nr)`, `C` with `ldc`
    /// floats per row: added to `C` if `accumulate`, else stored over it. `rows < mr` computes
    /// only the first `rows` rows of the panel (the bottom edge of `C`, or the few rows of decoding).
    ///
    /// # Safety
    /// The CPU runs this kernel; `1 <= rows <= mr`; `a` holds `kc * mr` floats, `b` `kc * nr`,
    /// and `c` addresses `rows` rows of `nr` floats, `ldc` apart.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        self,
        rows: usize,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let tile = match self {
            Kernel::Avx512 => avx512_tile::<false>(rows),
            Kernel::Avx2 => match rows {
                1 => kernel_avx2::<1>,
                2 => kernel_avx2::<2>,
                3 => kernel_avx2::<3>,
                4 => kernel_avx2::<4>,
                5 => kernel_avx2::<5>,
                _ => kernel_avx2::<6>,
            },
        };
        tile(kc, a, b, c, ldc, accumulate)
    }
}

/// A tile kernel: `(kc, a, b, c, ldc, accumulate)` as in [`Kernel::run`].
#[cfg(target_arch = "x86_64")]
type Tile = unsafe fn(usize, *const f32, *const f32, *mut f32, usize, bool);

/// [`kernel_avx512`] for `rows` rows (1 to 14), over float32 or bf16 B panels.
#[cfg(target_arch = "x86_64")]
fn avx512_tile<const BF16: bool>(rows: usize) -> Tile {
    match rows {
        1 => kernel_avx512::<1, BF16>,
        2 => kernel_avx512::<2, BF16>,
        3 => kernel_avx512::<3, BF16>,
        4 => kernel_avx512::<4, BF16>,
        5 => kernel_avx512::<5, BF16>,
        6 => kernel_avx512::<6, BF16>,
        7 => kernel_avx512::<7, BF16>,
        8 => kernel_avx512::<8, BF16>,
        9 => kernel_avx512::<9, BF16>,
        10 => kernel_avx512::<10, BF16>,
        11 => kernel_avx512::<11, BF16>,
        12 => kernel_avx512::<12, BF16>,
        13 => kernel_avx512::<13, BF16>,
        _ => kernel_avx512::<14, BF16>,
    }
}

/// The 14 x 32 tile in 28 zmm registers, or its first `R` rows.
///
/// With `BF16`, the B panel is in [`PackedB`]'s bf16 layout: each step loads
/// 32 bf16 values in one 64-byte load and widens them to float32 with a shift
/// and a mask (why: the few-row products of decoding are bound by how fast the
/// weights arrive, and bf16 halves their bytes). Either way a step of `k`
/// moves `b` on by the floats (or pairs of bf16) of one panel row.
///
/// The tile of `C` is prefetched before the K loop, so that the final
/// read-add-write of a tile that has left the caches does not stall.
///
/// # Safety
/// See [`Kernel::run`]; the CPU has AVX-512F; with `BF16`, `b` holds `kc * 16` words.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512<const R: usize, const BF16: bool>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    const MR: usize = 14;
    // 4-byte units of B per step of k: 32 floats, or 16 pairs of bf16
    let step = if BF16 { 16 } else { 32 };
    for i in 0..R {
        _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc + 16) as *const i8);
    }
    let high = _mm512_set1_epi32(0xffff_0000_u32 as i32);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc {
        // past the last panel the address leaves the buffer: wrapping arithmetic, and a prefetch never faults
        let ahead = bp.wrapping_add(PREFETCH_STEPS * step);
        _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
        let (b0, b1) = if BF16 {
            let words = _mm512_loadu_si512(bp.cast());
            // low halves: columns 0..16; high halves: columns 16..32
            (_mm512_castsi512_ps(_mm512_slli_epi32::<16>(words)), _mm512_castsi512_ps(_mm512_and_si512(words, high)))
        } else {
            // a float32 row is two cache lines
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16) as *const i8);
            (_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16)))
        };
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*ap.add(i));
            row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
        }
        ap = ap.add(MR);
        bp = bp.add(step);
    }
    for (i, row) in acc.iter_mut().enumerate() {
        let out = c.add(i * ldc);
        if accumulate {
            row[0] = _mm512_add_ps(_mm512_loadu_ps(out), row[0]);
            row[1] = _mm512_add_ps(_mm512_loadu_ps(out.add(16)), row[1]);
        }
        _mm512_storeu_ps(out, row[0]);
        _mm512_storeu_ps(out.add(16), row[1]);
    }
}

/// The 6 x 16 tile in 12 ymm registers, or its first `R` rows.
///
/// # Safety
/// See [`Kernel::run`]; the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    const MR: usize = 6;
    const NR: usize = 16;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc {
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*ap.add(i));
            row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
        }
        ap = ap.add(MR);
        bp = bp.add(NR);
    }
    for (i, row) in acc.iter_mut().enumerate() {
        let out = c.add(i * ldc);
        if accumulate {
            row[0] = _mm256_add_ps(_mm256_loadu_ps(out), row[0]);
            row[1] = _mm256_add_ps(_mm256_loadu_ps(out.add(8)), row[1]);
        }
        _mm256_storeu_ps(out, row[0]);
        _mm256_storeu_ps(out.add(8), row[1]);
    }
}

/// Packs `count` lines starting at `first` (rows of `A` if `lines_are_rows`,
/// else columns of `B`), depth `p0..p0+kc`, into `width`-wide panels
/// `[panel][k][width]`, zero-padded.
#[allow(clippy::too_many_arguments)]
fn pack(
    m: &MatRef,
    lines_are_rows: bool,
    first: usize,
    count: usize,
    p0: usize,
    kc: usize,
    width: usize,
    out: &mut Vec<f32>,
) {
    out.clear();
    out.resize(count.div_ceil(width) * kc * width, 0.0);
    for (panel, dst) in out.chunks_exact_mut(kc * width).enumerate() {
        let lines = width.min(count - panel * width);
        pack_panel(m, first + panel * width, lines, p0, kc, width, lines_are_rows, dst);
    }
}

/// One panel: `count` lines (rows of `A` if `lines_are_rows`, else columns of
/// `B`) starting at `first`, depth `p0..p0+kc`, interleaved as `dst[k * width + line]`.
#[allow(clippy::too_many_arguments)]
fn pack_panel(
    m: &MatRef,
    first: usize,
    count: usize,
    p0: usize,
    kc: usize,
    width: usize,
    lines_are_rows: bool,
    dst: &mut [f32],
) {
    // element (line l, depth k) sits at base + l * line_stride + k * depth_stride
    let (line_stride, depth_stride) =
        if lines_are_rows { (m.row_stride, m.col_stride) } else { (m.col_stride, m.row_stride) };
    let at = |l: usize, k: usize| if lines_are_rows { m.index(first + l, p0 + k) } else { m.index(p0 + k, first + l) };
    if depth_stride == 1 {
        // each line is contiguous along k (a row-major activation, or an (N, K)
        // weight read transposed): a transpose. Blocks of up to 8 lines x 8 depths
        // go through registers (8 loads, 24 shuffles, 8 stores, where element by
        // element takes 64 loads and 64 stores; packing was 16% of a DistilBERT
        // batch before). A group of fewer than 8 lines (the last 6 of a 14-wide A
        // panel, or a ragged edge) repeats its last line to fill the block and
        // stores only its own lanes; depths past the last multiple of 8 are copied
        // one float at a time.
        let mut lines_done = 0;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            let full_depth = kc / 8 * 8;
            for l0 in (0..count).step_by(8) {
                let lines = 8.min(count - l0);
                let rows: [&[f32]; 8] = std::array::from_fn(|i| {
                    let l = l0 + i.min(lines - 1);
                    &m.data[at(l, 0)..at(l, 0) + kc]
                });
                for k0 in (0..full_depth).step_by(8) {
                    // SAFETY: AVX was detected; each row has kc >= k0 + 8 floats, and
                    // dst has room for depths k0..k0+8 of lines l0..l0+lines (l0 + lines <= width).
                    unsafe { transpose_8x8_avx(&rows, k0, &mut dst[k0 * width + l0..], width, lines) };
                }
                for (i, row) in rows.iter().take(lines).enumerate() {
                    for k in full_depth..kc {
                        dst[k * width + l0 + i] = row[k];
                    }
                }
            }
            lines_done = count;
        }
        for l in lines_done..count {
            let src = &m.data[at(l, 0)..at(l, 0) + kc];
            for (k, &v) in src.iter().enumerate() {
                dst[k * width + l] = v;
            }
        }
    } else if line_stride == 1 {
        // lines are contiguous across k: copy `count` floats per k
        for k in 0..kc {
            let start = at(0, k);
            dst[k * width..k * width + count].copy_from_slice(&m.data[start..start + count]);
        }
    } else {
        for l in 0..count {
            for k in 0..kc {
                dst[k * width + l] = m.data[at(l, k)];
            }
        }
    }
}

/// Writes `rows[i][k0 + j]` to `dst[j * stride + i]` for `i < lanes`, `j < 8`.
///
/// # Safety
/// The CPU has AVX; `1 <= lanes <= 8`; every row holds `k0 + 8` floats and `dst`
/// at least `7 * stride + lanes`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_8x8_avx(rows: &[&[f32]; 8], k0: usize, dst: &mut [f32], stride: usize, lanes: usize) {
    use std::arch::x86_64::*;
    debug_assert!(rows.iter().all(|r| r.len() >= k0 + 8) && dst.len() >= 7 * stride + lanes);
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(rows[i].as_ptr().add(k0)));
    // interleave pairs of rows, then pairs of pairs, then swap 128-bit halves
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let cols = [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ];
    if lanes == 8 {
        for (j, col) in cols.into_iter().enumerate() {
            _mm256_storeu_ps(dst.as_mut_ptr().add(j * stride), col);
        }
    } else {
        // lane i is stored where its mask element has the top bit set: `lanes` of -1, then 0s
        const ONES_THEN_ZEROS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
        let mask = _mm256_loadu_si256(ONES_THEN_ZEROS.as_ptr().add(8 - lanes).cast());
        for (j, col) in cols.into_iter().enumerate() {
            _mm256_maskstore_ps(dst.as_mut_ptr().add(j * stride), mask, col);
        }
    }
}

/// A pointer to `C` that threads share; each writes only its own block.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the blocks handed to different threads never overlap (see `run_blocks`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

thread_local! {
    /// Each thread's packing buffers, kept between products: a fresh 512 KiB
    /// buffer per call comes from `mmap` and page-faults in, which cost more than
    /// the arithmetic of a 9 x 768 x 768 product.
    static PACKING: std::cell::Cell<(Vec<f32>, Vec<f32>)> = const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// Where a product's `B` panels come from.
#[derive(Clone, Copy)]
enum BSource<'a> {
    /// Packed by each call, block by block.
    Strided(&'a MatRef<'a>),
    /// Packed once, at load ([`PackedB`]).
    Packed(&'a PackedB),
}

/// Writes the product of rows `r0..r0+mt` of `a` and columns `c0..c0+nt` of `b`
/// over the block of `C` starting at `c` (row-major, `ldc` floats per row).
/// With a [`PackedB`], `c0` is a multiple of `NR`.
///
/// # Safety
/// `kernel` runs on this CPU, and `c` addresses the `mt x nt` block with row stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block(
    kernel: Kernel,
    a: &MatRef,
    r0: usize,
    mt: usize,
    b: BSource,
    c0: usize,
    nt: usize,
    c: *mut f32,
    ldc: usize,
) {
    let (mut packed_a, mut packed_b) = PACKING.take();
    let (mr, nr) = (kernel.mr(), kernel.nr());
    let k = a.cols;
    // an edge tile is computed whole here, then clipped into C
    let mut tile = [0.0f32; MAX_TILE];
    debug_assert!(mr * nr <= MAX_TILE);
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        // the first slice of K writes C, the others add to it
        let accumulate = pc > 0;
        pack(a, true, r0, mt, pc, kc, mr, &mut packed_a);
        for jc in (0..nt).step_by(NC) {
            let nc = NC.min(nt - jc);
            // this block's B panels: the first one, the bytes from one to the next, and whether bf16
            let (first_panel, panel_bytes, bf16): (*const u8, usize, bool) = match b {
                BSource::Strided(b) => {
                    pack(b, false, c0 + jc, nc, pc, kc, nr, &mut packed_b);
                    (packed_b.as_ptr().cast(), kc * nr * 4, false)
                }
                BSource::Packed(p) => {
                    debug_assert!(c0.is_multiple_of(nr), "a packed B is split at whole panels");
                    let panel_bytes = kc * nr * p.ty.bytes();
                    (p.slice(pc, kc).as_ptr().add((c0 + jc) / nr * panel_bytes), panel_bytes, p.ty == PackedType::Bf16)
                }
            };
            for (ip, apanel) in packed_a.chunks_exact(kc * mr).enumerate() {
                let height = mr.min(mt - ip * mr);
                for jp in 0..nc.div_ceil(nr) {
                    let bpanel = first_panel.add(jp * panel_bytes);
                    let width = nr.min(nc - jp * nr);
                    let out = c.add(ip * mr * ldc + jc + jp * nr);
                    // a right-edge tile is computed whole into `tile`, then the part inside C written
                    let (dst, ld, add) =
                        if width == nr { (out, ldc, accumulate) } else { (tile.as_mut_ptr(), nr, false) };
                    if bf16 {
                        avx512_tile::<true>(height)(kc, apanel.as_ptr(), bpanel.cast(), dst, ld, add);
                    } else {
                        kernel.run(height, kc, apanel.as_ptr(), bpanel.cast(), dst, ld, add);
                    }
                    if width < nr {
                        for i in 0..height {
                            for j in 0..width {
                                let o = out.add(i * ldc + j);
                                *o = if accumulate { *o + tile[i * nr + j] } else { tile[i * nr + j] };
                            }
                        }
                    }
                }
            }
        }
    }
    PACKING.set((packed_a, packed_b));
}

/// How a [`PackedB`] stores its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackedType {
    /// float32, as given.
    F32,
    /// bfloat16 (the top 16 bits of a float32, rounded to nearest even): half
    /// the bytes, about 3 significant digits. Products still multiply and add
    /// in float32 (each value is widened in registers), so only the stored
    /// weights are rounded. AVX-512 only.
    Bf16,
}

impl PackedType {
    /// Bytes per stored value.
    fn bytes(self) -> usize {
        match self {
            PackedType::F32 => 4,
            PackedType::Bf16 => 2,
        }
    }
}

/// A `B (K x N)` operand packed once for every later product with it: the
/// panels `gemm_block` would otherwise pack on each call.
///
/// Why: a weight matrix is multiplied by every batch and every token; packing
/// it per call is a second pass over it each time (8-12% of a 1024^3 product,
/// and for a few rows, where each weight is used only a few times, as much
/// memory traffic as the product itself). Packed, each `NR`-wide panel of a
/// depth slice is one contiguous run of memory that the kernel streams
/// front to back, so the few-row products of decoding read their weights at
/// the prefetchers' full speed too. Stored as bf16 ([`PackedType::Bf16`]),
/// those reads are half as many bytes.
///
/// Layout: for each `KC` slice of depth (the last one shorter), `ceil(N / NR)`
/// panels `[k][NR]`, zero-padded past `N`. In bf16, each `k` row of a 32-wide
/// panel is 16 words of 32 bits, word `i` holding column `16 + i` in its high
/// half and column `i` in its low half: one shift gives columns 0..16 as
/// float32 and one mask columns 16..32 (see `kernel_avx512`).
pub struct PackedB {
    kernel: Kernel,
    ty: PackedType,
    k: usize,
    n: usize,
    /// `k * ceil(n / NR) * NR` values, in fresh anonymous memory: see [`PackedB::new`].
    memory: memmap2::MmapMut,
}

impl PackedB {
    /// Packs `b` for `kernel` as `ty`, the depth slices in parallel.
    ///
    /// # Panics
    /// If the CPU does not run `kernel`, or `ty` is bf16 and `kernel` is not AVX-512.
    pub fn new(kernel: Kernel, ty: PackedType, b: MatRef) -> Self {
        assert!(kernel.supported(), "PackedB: this CPU cannot run {kernel:?}");
        assert!(ty == PackedType::F32 || kernel == Kernel::Avx512, "PackedB: bf16 needs the AVX-512 kernel");
        let (k, n, nr) = (b.rows, b.cols, kernel.nr());
        let width = n.div_ceil(nr) * nr;
        let bytes = k * width * ty.bytes();
        // Fresh pages are zeroed by the kernel on first touch, one fault per
        // 4 KiB page: for BART's 1 GB of weights those faults took more time than
        // the packing itself. Asking for transparent huge pages (2 MiB, where the
        // system allows them) makes that one fault per 512 pages.
        let mut memory = memmap2::MmapMut::map_anon(bytes.max(1)).expect("cannot allocate packed weights");
        #[cfg(target_os = "linux")]
        let _ = memory.advise(memmap2::Advice::HugePage);
        if bytes == 0 {
            return Self { kernel, ty, k, n, memory };
        }
        memory[..bytes].par_chunks_mut(KC * width * ty.bytes()).enumerate().for_each(|(slice, out)| {
            let pc = slice * KC;
            let kc = KC.min(k - pc);
            // bf16 panels are packed as float32 first, then rounded
            let mut panel = if ty == PackedType::Bf16 { vec![0.0f32; kc * nr] } else { Vec::new() };
            for (index, dst) in out.chunks_exact_mut(kc * nr * ty.bytes()).enumerate() {
                let cols = nr.min(n - index * nr);
                match ty {
                    PackedType::F32 => {
                        // SAFETY: the map is page-aligned and each panel a multiple of 4 bytes
                        // from its start, so f32-aligned; a fresh map reads as zeros (0.0f32).
                        let dst = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast(), kc * nr) };
                        pack_panel(&b, index * nr, cols, pc, kc, nr, false, dst);
                    }
                    PackedType::Bf16 => {
                        panel.fill(0.0);
                        pack_panel(&b, index * nr, cols, pc, kc, nr, false, &mut panel);
                        let half = nr / 2;
                        for (row, words) in panel.chunks_exact(nr).zip(dst.chunks_exact_mut(nr * 2)) {
                            for (i, word) in words.chunks_exact_mut(4).enumerate() {
                                let pair = (u32::from(to_bf16(row[half + i])) << 16) | u32::from(to_bf16(row[i]));
                                word.copy_from_slice(&pair.to_ne_bytes());
                            }
                        }
                    }
                }
            }
        });
        Self { kernel, ty, k, n, memory }
    }

    /// `(K, N)`.
    pub fn dim(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The bytes of the depth slice starting at `pc`, `kc` deep.
    fn slice(&self, pc: usize, kc: usize) -> &[u8] {
        let row = self.n.div_ceil(self.kernel.nr()) * self.kernel.nr() * self.ty.bytes();
        &self.memory[pc * row..(pc + kc) * row]
    }
}

/// `x` rounded to the nearest bfloat16, ties to even (as PyTorch's
/// `.to(torch.bfloat16)`); NaN stays NaN.
pub fn to_bf16(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    let bits = x.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// `C = A B` into `c` (row-major `M x N`, overwritten) for a `B` packed at load.
///
/// The threads split the columns (whole panels) when `N >= M`, else the rows;
/// any `M` goes here, one row as well as a thousand.
///
/// # Panics
/// If the sizes do not chain.
pub fn sgemm_packed(a: MatRef, b: &PackedB, c: &mut [f32]) {
    sgemm_packed_uninit(a, b, as_uninit(c));
}

/// [`sgemm_packed`] into memory that need not be initialised: every element
/// of `c` is written (the first `K` slice stores, it never reads), so callers
/// allocating `C` skip zeroing it (4% of a DistilBERT batch).
///
/// # Panics
/// If the sizes do not chain.
pub fn sgemm_packed_uninit(a: MatRef, b: &PackedB, c: &mut [MaybeUninit<f32>]) {
    let (m, k, n) = (a.rows, a.cols, b.n);
    assert_eq!(b.k, k, "sgemm_packed: inner dimensions differ");
    assert_eq!(c.len(), m * n, "sgemm_packed: output has {} floats, expected {}", c.len(), m * n);
    if m == 0 || n == 0 || k == 0 {
        c.fill(MaybeUninit::new(0.0));
        return;
    }
    #[cfg(target_arch = "x86_64")]
    run_blocks(b.kernel, &a, BSource::Packed(b), c);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("a PackedB exists only where a kernel runs, so on x86-64");
}

/// `c` viewed as possibly uninitialised memory (which initialised memory is).
fn as_uninit(c: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: MaybeUninit<f32> has f32's layout, and writing initialised
    // values through it keeps `c` initialised.
    unsafe { std::slice::from_raw_parts_mut(c.as_mut_ptr().cast(), c.len()) }
}

/// Splits `C` among the threads and runs [`gemm_block`] on each part.
///
/// Disjoint blocks: whole `NR` panels of columns when `N >= M`, else whole
/// `MR` panels of rows, so that the operand every thread packs for itself
/// (`A` for a column split, `B` for a row split) is the smaller one.
#[cfg(target_arch = "x86_64")]
fn run_blocks(kernel: Kernel, a: &MatRef, b: BSource, c: &mut [MaybeUninit<f32>]) {
    let (m, n) = (a.rows, c.len() / a.rows);
    let threads = rayon::current_num_threads().max(1);
    let out = OutPtr(c.as_mut_ptr().cast());
    let (split_cols, unit, len) = if n >= m { (true, kernel.nr(), n) } else { (false, kernel.mr(), m) };
    let per_thread = len.div_ceil(threads).div_ceil(unit) * unit;
    rayon::scope(|s| {
        for start in (0..len).step_by(per_thread) {
            let size = per_thread.min(len - start);
            s.spawn(move |_| {
                let out = out;
                // SAFETY: the callers checked the kernel runs here; each task's block
                // (its rows or its columns of C) is disjoint from every other's.
                unsafe {
                    if split_cols {
                        gemm_block(kernel, a, 0, m, b, start, size, out.0.add(start), n);
                    } else {
                        gemm_block(kernel, a, start, size, b, 0, n, out.0.add(start * n), n);
                    }
                }
            });
        }
    });
}

/// `C = A B` into `c` (row-major `M x N`, overwritten) with the best kernel
/// this CPU has, else `matrixmultiply`.
///
/// # Panics
/// If the sizes do not chain.
pub fn sgemm(a: MatRef, b: MatRef, c: &mut [f32]) {
    sgemm_with(Kernel::detect(), a, b, c);
}

/// [`sgemm`] with a chosen kernel (`None`: `matrixmultiply`), for tests and benchmarks.
///
/// # Panics
/// If the sizes do not chain, or the CPU does not run `kernel`.
pub fn sgemm_with(kernel: Option<Kernel>, a: MatRef, b: MatRef, c: &mut [f32]) {
    sgemm_uninit(kernel, a, b, as_uninit(c));
}

/// [`sgemm_with`] into memory that need not be initialised (see [`sgemm_packed_uninit`]).
///
/// # Panics
/// If the sizes do not chain, or the CPU does not run `kernel`.
pub fn sgemm_uninit(kernel: Option<Kernel>, a: MatRef, b: MatRef, c: &mut [MaybeUninit<f32>]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "sgemm: inner dimensions differ");
    assert_eq!(c.len(), m * n, "sgemm: output has {} floats, expected {}", c.len(), m * n);
    assert!(kernel.is_none_or(Kernel::supported), "sgemm: this CPU cannot run {kernel:?}");
    if m == 0 || n == 0 || k == 0 {
        c.fill(MaybeUninit::new(0.0));
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = kernel {
        run_blocks(kernel, &a, BSource::Strided(&b), c);
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
            // beta = 0: C is only written
            c.as_mut_ptr().cast(),
            n as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::mat_ref;
    use crate::matmul_naive;
    use ndarray::Array2;

    /// bf16 weights: the product with B packed as bf16 equals the triple loop
    /// over B rounded to bf16 (the only rounding bf16 adds), for every row count
    /// of decoding and the block edges.
    #[test]
    fn bf16_packing_rounds_only_the_weights() {
        if !Kernel::Avx512.supported() {
            return;
        }
        for (m, k, n) in [(1, 300, 77), (9, 257, 100), (14, 40, 64), (37, 2 * KC + 5, NC + 33)] {
            let a = filled(m, k, 3);
            let b = filled(k, n, 4);
            let rounded = b.mapv(|v| f32::from_bits(u32::from(to_bf16(v)) << 16));
            let expect = matmul_naive(a.view(), rounded.view());
            let (av, bv) = (a.view(), b.view());
            let mut c = vec![f32::NAN; m * n];
            let packed = PackedB::new(Kernel::Avx512, PackedType::Bf16, mat_ref(&bv).expect("positive strides"));
            sgemm_packed(mat_ref(&av).expect("positive strides"), &packed, &mut c);
            let diff = c.iter().zip(expect.iter()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(
                diff <= 1e-5 * k as f32,
                "bf16 ({m},{k})x({k},{n}): max diff {diff}, first {:?}",
                &c[..4.min(c.len())]
            );
        }
    }

    /// A layer whose weight is still being packed in the background multiplies
    /// with `matmul_blocked`; once packed, with `matmul_packed`. The two must
    /// agree bit for bit, for every row count, or outputs would depend on timing.
    #[test]
    fn packing_on_the_fly_and_at_load_agree_bit_for_bit() {
        use crate::matmul::{matmul_blocked, matmul_packed, pack_weight};
        let Some(kernel) = Kernel::detect() else { return };
        for (m, k, n) in [(1, 768, 96), (9, 257, 100), (16, 40, 64), (133, KC + 1, NC + 33)] {
            let a = filled(m, k, 5);
            let w = filled(n, k, 6); // an (N, K) Linear weight, read transposed
            let packed = pack_weight(kernel, PackedType::F32, w.t());
            assert_eq!(matmul_blocked(a.view(), w.t()), matmul_packed(a.view(), &packed), "({m},{k})x({k},{n})");
            // rows read backwards (a negative stride) too
            let reversed = a.slice(ndarray::s![..;-1, ..]);
            assert_eq!(
                matmul_blocked(reversed, w.t()),
                matmul_packed(reversed, &packed),
                "reversed ({m},{k})x({k},{n})"
            );
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even (1.0)
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // a hair above halfway rounds up
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert!(f32::from_bits(u32::from(to_bf16(f32::NAN)) << 16).is_nan());
    }

    fn sgemm_with_into(kernel: Option<Kernel>, a: MatRef, b: MatRef, len: usize) -> Vec<f32> {
        let mut c = vec![f32::NAN; len];
        sgemm_with(kernel, a, b, &mut c);
        c
    }

    fn filled(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| ((i * 131 + j * 71 + seed * 17) % 197) as f32 / 98.5 - 1.0)
    }

    /// Every kernel this CPU has, with B packed per call and packed once
    /// ([`PackedB`]), and `matrixmultiply`, against the triple loop, over shapes
    /// that cross every block size (KC, NC, the tiles) with tails and the few
    /// rows of decoding, with B row-major (K, N) and as the transpose of an
    /// (N, K) weight.
    #[test]
    fn every_kernel_agrees_with_naive_across_block_edges() {
        let mut kernels: Vec<Option<Kernel>> = Kernel::available().into_iter().map(Some).collect();
        kernels.push(None);
        let shapes = [
            (1, 1, 1),
            (1, 300, 77),
            (5, 3, 7),
            (9, 257, 100),
            (16, 40, 64),
            (13, 33, 31),
            (12, 256, 32),
            (25, 257, 65),
            (133, KC + 1, NC + 33),
            (37, 2 * KC + 5, 2 * NC + 1),
        ];
        for (m, k, n) in shapes {
            let a = filled(m, k, 1);
            let b = filled(k, n, 2);
            let w = b.t().as_standard_layout().into_owned();
            let expect = matmul_naive(a.view(), b.view());
            for kernel in &kernels {
                for (layout, bv) in [("kn", b.view()), ("nk", w.t())] {
                    let av = a.view();
                    let (ar, br) = (mat_ref(&av).expect("positive strides"), mat_ref(&bv).expect("positive strides"));
                    let mut runs = vec![("per call", sgemm_with_into(*kernel, ar, br, m * n))];
                    if let Some(kernel) = kernel {
                        let mut c = vec![f32::NAN; m * n];
                        sgemm_packed(ar, &PackedB::new(*kernel, PackedType::F32, br), &mut c);
                        runs.push(("packed once", c));
                    }
                    for (packing, c) in runs {
                        let diff = c.iter().zip(expect.iter()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                        assert!(
                            diff <= 1e-5 * k as f32,
                            "{kernel:?} {layout} B {packing} ({m},{k})x({k},{n}): max diff {diff}, first values {:?} vs {:?}",
                            &c[..c.len().min(4)],
                            expect.iter().take(4).collect::<Vec<_>>()
                        );
                    }
                }
            }
        }
    }
}
