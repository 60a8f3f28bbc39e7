//! One forward pass per model family, and one attention call, on the
//! repository's tiny fixtures (the shapes that matter for speed are measured
//! by `pipeline bench` on shape-faithful checkpoints; see BENCHMARKS.md).
//!
//! `cargo bench --bench models`

use std::path::PathBuf;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use models::pipelines::summarization::Summarization;
use models::pipelines::text_generation::TextGeneration;
use models::pipelines::{EncodeOptions, TextClassification};
use ndarray::Array4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

fn forwards(c: &mut Criterion) {
    let text = "We are SI Dream Engineering Team.".to_string();
    let sst2 = TextClassification::load(&fixture("distilbert-sst2-tiny")).unwrap();
    c.bench_function("distilbert-sst2-tiny classify", |b| {
        b.iter(|| black_box(sst2.run(std::slice::from_ref(&text), None, &EncodeOptions::default()).unwrap()))
    });
    let gpt2 = TextGeneration::load(&fixture("gpt2-tiny")).unwrap();
    let mut greedy = gpt2.defaults.clone();
    greedy.update(&serde_json::json!({"do_sample": false, "max_new_tokens": 16})).unwrap();
    c.bench_function("gpt2-tiny 16 greedy tokens", |b| {
        b.iter(|| black_box(gpt2.generate(&text, &greedy, 0, &mut |_| {}).unwrap()))
    });
    let bart = Summarization::load(&fixture("bart-tiny")).unwrap();
    c.bench_function("bart-tiny beam-search summary", |b| {
        b.iter(|| black_box(bart.summarize(&text, &bart.defaults).unwrap()))
    });
}

fn attention(c: &mut Criterion) {
    // distilbert-base shape: 12 heads of 64, 128 tokens
    let q = Array4::from_shape_fn((1, 12, 128, 64), |(_, h, t, d)| ((h + t * 3 + d) % 13) as f32 * 0.1);
    for (keep_probs, what) in [(false, "context only"), (true, "probabilities kept")] {
        c.bench_function(&format!("attention 12 heads x 128 tokens x 64, {what}"), |b| {
            b.iter(|| black_box(transformer::attention(q.view(), q.view(), q.view(), None, keep_probs)))
        });
    }
}

criterion_group!(benches, forwards, attention);
criterion_main!(benches);
