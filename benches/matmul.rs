//! Matrix-multiply kernels side by side: the naive triple loop (small shapes
//! only), the `matrixmultiply` crate, and ours (`tensor::matmul`: the packed
//! AVX-512 or AVX2+FMA kernel, or the few-row path; and with the weight
//! packed once, as the models hold it, in float32 and bf16). Criterion's
//! throughput is in floating-point operations (`2 M N K` per product), so
//! "Gelem/s" reads as GFLOP/s.
//!
//! Criterion calls from its own thread, outside rayon's pool, so each parallel
//! product hands its work to the pool and sleeps until it is done: two thread
//! wake-ups, which on the 2-core VM cost more than a 9 x 768 x 768 product
//! (packed: 100 us here against 42 us in `pipeline bench gemm`, which runs
//! inside the pool as the `pipeline` commands do).
//!
//! `cargo bench --bench matmul`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;

/// (name, M, K, N): square sizes, then the shapes the models run.
const SHAPES: [(&str, usize, usize, usize); 7] = [
    ("square-1024", 1024, 1024, 1024),
    ("square-2048", 2048, 2048, 2048),
    ("distilbert-1-sentence-qkv", 9, 768, 768),
    ("distilbert-batch-ffn", 128, 768, 3072),
    ("gpt2-decode-c_attn", 1, 768, 2304),
    ("gpt2-decode-lm_head", 1, 768, 50257),
    ("distilbart-encoder-ffn", 347, 1024, 4096),
];

fn filled(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(i, j)| ((i * 31 + j * 17 + seed) % 23) as f32 * 0.01 - 0.1)
}

fn kernels(c: &mut Criterion) {
    for (name, m, k, n) in SHAPES {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        if m * n * k > 100_000_000 {
            group.sample_size(10);
        }
        let a = filled(m, k, 1);
        // The weight is stored (N, K) as in nn.Linear and read transposed, as the models do.
        let w = filled(n, k, 2);
        if m * n * k <= 50_000_000 {
            group.bench_function(BenchmarkId::new("naive", ""), |bch| {
                bch.iter(|| black_box(tensor::matmul_naive(a.view(), w.t())))
            });
        }
        group.bench_function(BenchmarkId::new("matrixmultiply", ""), |bch| {
            bch.iter(|| black_box(tensor::matmul_matrixmultiply(a.view(), w.t())))
        });
        group.bench_function(BenchmarkId::new("ours", ""), |bch| {
            bch.iter(|| black_box(tensor::matmul(a.view(), w.t())))
        });
        // as the models hold their Linear weights: packed once, float32 and bf16
        if let Some(kernel) = tensor::gemm::Kernel::detect() {
            let mut types = vec![("ours-packed", tensor::PackedType::F32)];
            if kernel == tensor::gemm::Kernel::Avx512 {
                types.push(("ours-packed-bf16", tensor::PackedType::Bf16));
            }
            for (id, ty) in types {
                let packed = tensor::matmul::pack_weight(kernel, ty, w.t());
                group.bench_function(BenchmarkId::new(id, ""), |bch| {
                    bch.iter(|| black_box(tensor::matmul_packed(a.view(), &packed)))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
