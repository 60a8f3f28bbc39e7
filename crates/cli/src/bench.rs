//! `pipeline bench`: timings a user can reproduce, as one JSON object.
//!
//! A run is one whole pipeline call after loading (tokenize, forward or
//! generate, post-process); untimed warm-up runs come first (at least one, and
//! as many as fit in 200 ms). `load_ms` is the time to load the checkpoint and
//! the tokenizer; `packed_ms`, the time until the weights packed in the
//! background after loading are all packed (the runs start then); for
//! generation, `first_token_ms_after_load` is the first token of the first
//! warm-up run. Generation runs exactly `--max-new-tokens` steps (EOS
//! suppressed, as PyTorch's `min_new_tokens` does), and `tokens_per_s` is new
//! tokens per second of the whole call, prefill included.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use serde_json::{json, Value};

use models::hub::resolve_model;
use models::pipelines::summarization::Summarization;
use models::pipelines::text_generation::TextGeneration;
use models::pipelines::{EncodeOptions, FeatureExtraction, TextClassification};
use models::weights::Packing;
use tensor::PackedType;

/// The benchmark's settings (see `pipeline bench --help`).
pub struct BenchSettings {
    pub target: String,
    pub model: Option<String>,
    pub runs: usize,
    pub batch_size: usize,
    pub seq_len: Option<usize>,
    pub max_new_tokens: usize,
    pub num_beams: Option<usize>,
    pub input: Option<String>,
    pub mnk: (usize, usize, usize),
    /// gemm: `nk` (an `(N, K)` weight read transposed), `kn` (row-major `(K, N)`)
    /// or `packed` (packed once before timing).
    pub weight_layout: String,
    /// How the weight matrices are stored (`--dtype`).
    pub weights: PackedType,
}

/// Peak resident memory of this process, from `/proc/self/status` (`VmHWM`), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs `f` untimed for a warm-up (first-touch page faults, thread-pool start,
/// the CPU leaving its idle clock): once, then again until 200 ms have passed;
/// then `runs` times; returns (median, min) in milliseconds.
fn time_runs(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    let warm_up = Instant::now();
    f()?;
    while warm_up.elapsed().as_secs_f64() < 0.2 {
        f()?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[0]))
}

/// A text that tokenizes to exactly `len` tokens (special tokens included):
/// `word` repeated as often as needed, found by searching the count.
fn text_of_length(len: usize, count_tokens: impl Fn(&str) -> Result<usize>) -> Result<String> {
    let make = |n: usize| vec!["hello"; n].join(" ");
    for n in 1..=len + 4 {
        match count_tokens(&make(n))? {
            c if c == len => return Ok(make(n)),
            c if c > len => break,
            _ => {}
        }
    }
    bail!("cannot build an input of exactly {len} tokens with this tokenizer")
}

fn gemm(s: &BenchSettings) -> Result<Value> {
    let (m, n, k) = s.mnk;
    let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 13) % 17) as f32 * 0.01);
    // B is a weight stored (N, K) and read transposed, as every Linear layer reads
    // it, or stored (K, N) as GPT-2's Conv1D weights are, or packed once as the
    // models' layers hold it.
    let w = Array2::from_shape_fn((n, k), |(i, j)| ((i * 11 + j * 5) % 19) as f32 * 0.01);
    if s.weights != PackedType::F32 && s.weight_layout != "packed" {
        bail!("--dtype bf16 applies to packed weights: add --weight-layout packed");
    }
    let mut pack_ms = None;
    let (median, min) = match s.weight_layout.as_str() {
        "kn" => {
            let b = w.t().as_standard_layout().into_owned();
            time_runs(s.runs, || {
                std::hint::black_box(tensor::matmul(a.view(), b.view()));
                Ok(())
            })?
        }
        "packed" => {
            let kernel = tensor::gemm::Kernel::detect().context("--weight-layout packed needs AVX-512F or AVX2+FMA")?;
            let packing = Instant::now();
            models::weights::require_packed_type(s.weights)?;
            let b = tensor::matmul::pack_weight(kernel, s.weights, w.t());
            pack_ms = Some(packing.elapsed().as_secs_f64() * 1e3);
            time_runs(s.runs, || {
                std::hint::black_box(tensor::matmul_packed(a.view(), &b));
                Ok(())
            })?
        }
        _ => time_runs(s.runs, || {
            std::hint::black_box(tensor::matmul(a.view(), w.t()));
            Ok(())
        })?,
    };
    let gflops = 2.0 * (m * n * k) as f64 / (median * 1e-3) / 1e9;
    Ok(
        json!({"task": "gemm", "m": m, "n": n, "k": k, "weight_layout": s.weight_layout, "pack_ms": pack_ms, "runs": s.runs, "median_ms": median, "min_ms": min, "gflops": gflops, "peak_rss_mb": peak_rss_mb()}),
    )
}

/// Runs the benchmark and returns its JSON object.
///
/// # Errors
/// On a missing `--model`, loading failures, or settings the task cannot take.
pub fn bench(s: &BenchSettings) -> Result<Value> {
    if s.target == "gemm" {
        return gemm(s);
    }
    let model = s.model.as_deref().context("--model is required for a task benchmark")?;
    let dir = resolve_model(model)?;
    let start = Instant::now();
    // The timed runs measure the steady state: they start once the background
    // packing of the weights is over (results are the same before and after).
    let packed_after = |packing: &Packing| {
        packing.wait();
        start.elapsed().as_secs_f64() * 1e3
    };
    let result = match s.target.as_str() {
        "sentiment-analysis" | "text-classification" => {
            let pipe = TextClassification::load_as(&dir, s.weights)?;
            let load_ms = start.elapsed().as_secs_f64() * 1e3;
            let packed_ms = packed_after(&pipe.packing);
            let inputs = encoder_inputs(s, |t| Ok(pipe.tokenizer.encode(t, false)?.ids.len() + 2))?;
            let opts = EncodeOptions { truncation: false, batch_size: s.batch_size };
            let (median, min) = time_runs(s.runs, || pipe.run(&inputs, None, &opts).map(drop))?;
            json!({"load_ms": load_ms, "packed_ms": packed_ms, "median_ms": median, "min_ms": min, "batch_size": inputs.len()})
        }
        "feature-extraction" => {
            let pipe = FeatureExtraction::load_as(&dir, s.weights)?;
            let load_ms = start.elapsed().as_secs_f64() * 1e3;
            let packed_ms = packed_after(&pipe.packing);
            let inputs = encoder_inputs(s, |t| Ok(pipe.tokenizer.encode(t, true)?.ids.len()))?;
            let opts = EncodeOptions { truncation: false, batch_size: s.batch_size };
            let (median, min) = time_runs(s.runs, || pipe.run(&inputs, &opts).map(drop))?;
            json!({"load_ms": load_ms, "packed_ms": packed_ms, "median_ms": median, "min_ms": min, "batch_size": inputs.len()})
        }
        "text-generation" => {
            let pipe = TextGeneration::load_as(&dir, s.weights)?;
            let load_ms = start.elapsed().as_secs_f64() * 1e3;
            let packed_ms = packed_after(&pipe.packing);
            let prompt = match (&s.input, s.seq_len) {
                (Some(text), _) => text.clone(),
                (None, Some(len)) => text_of_length(len, |t| Ok(pipe.encode_prompt(t)?.len()))?,
                (None, None) => bail!("give an INPUT or --seq-len for the prompt"),
            };
            let mut config = pipe.defaults.clone();
            let n = s.max_new_tokens;
            config.update(&json!({"max_new_tokens": n, "min_new_tokens": n, "max_length": null}))?;
            if let Some(beams) = s.num_beams {
                config.update(&json!({"num_beams": beams, "do_sample": false}))?;
            }
            let mut first_token_ms = None;
            let (median, min) = time_runs(s.runs, || {
                let t0 = Instant::now();
                let mut first = None;
                pipe.generate(&prompt, &config, 0, &mut |_| {
                    first.get_or_insert_with(|| t0.elapsed().as_secs_f64() * 1e3);
                })?;
                first_token_ms = first_token_ms.or(first);
                Ok(())
            })?;
            json!({"load_ms": load_ms, "packed_ms": packed_ms, "median_ms": median, "min_ms": min, "tokens_per_s": n as f64 / (median * 1e-3),
                   "first_token_ms_after_load": first_token_ms})
        }
        "summarization" => {
            let pipe = Summarization::load_as(&dir, s.weights)?;
            let load_ms = start.elapsed().as_secs_f64() * 1e3;
            let packed_ms = packed_after(&pipe.packing);
            let text = match (&s.input, s.seq_len) {
                (Some(text), _) => text.clone(),
                (None, Some(len)) => text_of_length(len, |t| Ok(pipe.encode_source(t)?.len()))?,
                (None, None) => bail!("give an INPUT or --seq-len for the source"),
            };
            let mut config = pipe.defaults.clone();
            let n = s.max_new_tokens;
            // the decoder start token counts in max_length / min_length
            config.update(&json!({"max_length": n + 1, "min_length": n + 1, "max_new_tokens": null}))?;
            if let Some(beams) = s.num_beams {
                config.update(&json!({"num_beams": beams}))?;
            }
            let (median, min) = time_runs(s.runs, || pipe.summarize(&text, &config).map(drop))?;
            json!({"load_ms": load_ms, "packed_ms": packed_ms, "median_ms": median, "min_ms": min, "tokens_per_s": n as f64 / (median * 1e-3)})
        }
        other => bail!("cannot benchmark `{other}` (choose gemm, sentiment-analysis, feature-extraction, text-generation, summarization)"),
    };
    let mut result = result;
    result["task"] = json!(s.target);
    result["runs"] = json!(s.runs);
    result["peak_rss_mb"] = json!(peak_rss_mb());
    Ok(result)
}

/// The encoder benchmark's inputs: `--batch-size` copies of INPUT, or of a synthetic text of `--seq-len` tokens.
fn encoder_inputs(s: &BenchSettings, count: impl Fn(&str) -> Result<usize>) -> Result<Vec<String>> {
    let text = match (&s.input, s.seq_len) {
        (Some(text), _) => text.clone(),
        (None, Some(len)) => text_of_length(len, count)?,
        (None, None) => bail!("give an INPUT or --seq-len"),
    };
    Ok(vec![text; s.batch_size.max(1)])
}
