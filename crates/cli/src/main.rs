//! `pipeline`: Hugging Face pipeline tasks on local checkpoints, from the command line.
//!
//! ```text
//! pipeline <TASK> --model <DIR | ORG/NAME> [OPTIONS] [INPUT ...]
//! ```
//! Prints one JSON array with one element per input, each element what the
//! Python pipeline returns for that input. Errors are one line on stderr and
//! a non-zero exit.

mod bench;
mod heatmap;
mod pyjson;

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use models::hub::resolve_model;
use models::pipelines::summarization::Summarization;
use models::pipelines::text_generation::TextGeneration;
use models::pipelines::{Classification, EncodeOptions, FeatureExtraction, LabelScore, TextClassification};
use models::study::Study;
use tensor::PackedType;

#[derive(Parser)]
#[command(name = "pipeline", version, about = "Hugging Face pipelines in pure Rust, on local checkpoints")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Classify each text (softmax or sigmoid over the labels in config.json's id2label).
    #[command(name = "sentiment-analysis", alias = "text-classification")]
    SentimentAnalysis {
        #[command(flatten)]
        common: EncoderArgs,
        /// Return the N best labels, sorted by score, instead of the best one.
        #[arg(long, value_name = "N")]
        top_k: Option<usize>,
    },
    /// The last hidden state of each text: [1][tokens][hidden], special tokens included.
    FeatureExtraction {
        #[command(flatten)]
        common: EncoderArgs,
    },
    /// Continue each prompt with a causal language model (GPT-2).
    TextGeneration(GenerationArgs),
    /// Summarize each text with an encoder-decoder model (BART, distilbart).
    Summarization(SummarizationArgs),
    /// Draw attention heatmaps (tokens on both axes) for one text.
    Attention(AttentionArgs),
    /// Walk through one attention head of one layer, step by step, with the real numbers.
    Explain(ExplainArgs),
    /// Time a task (or `gemm`) and print one JSON object.
    Bench(BenchArgs),
}

/// `--dtype`: how the weight matrices are stored.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Dtype {
    F32,
    Bf16,
}

/// `--dtype`, taken by every task and by `bench`.
#[derive(Args)]
struct WeightsArg {
    /// How the weight matrices are stored: f32 (exact), or bf16 (half the bytes
    /// for faster decoding, weights rounded to about 3 digits; needs AVX-512).
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

impl WeightsArg {
    fn packed(&self) -> PackedType {
        match self.dtype {
            Dtype::F32 => PackedType::F32,
            Dtype::Bf16 => PackedType::Bf16,
        }
    }
}

#[derive(Args)]
struct BenchArgs {
    /// `gemm`, or a task: sentiment-analysis, feature-extraction, text-generation, summarization.
    target: String,
    /// The checkpoint (tasks only).
    #[arg(long, value_name = "DIR | ORG/NAME")]
    model: Option<String>,
    #[command(flatten)]
    weights: WeightsArg,
    /// Timed runs after one load; the median and minimum are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Inputs per call (encoder tasks).
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Synthetic inputs of exactly this many tokens (no INPUT needed).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Generation steps (EOS ignored).
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    #[arg(long)]
    num_beams: Option<usize>,
    /// gemm: rows of A and C.
    #[arg(long, default_value_t = 1024)]
    m: usize,
    /// gemm: columns of B and C.
    #[arg(long, default_value_t = 1024)]
    n: usize,
    /// gemm: the inner dimension.
    #[arg(long, default_value_t = 1024)]
    k: usize,
    /// gemm: how B is stored: `nk`, an (N, K) `nn.Linear` weight read transposed;
    /// `kn`, a row-major (K, N) matrix such as GPT-2's `Conv1D` weight; `packed`,
    /// packed once before timing, as the models' layers hold their weights.
    #[arg(long, default_value = "nk", value_parser = ["nk", "kn", "packed"])]
    weight_layout: String,
    /// The input text (instead of --seq-len).
    input: Option<String>,
}

#[derive(Args)]
struct ExplainArgs {
    /// A checkpoint directory or a model id in the local Hugging Face cache.
    #[arg(long, value_name = "DIR | ORG/NAME")]
    model: String,
    /// The layer (0-based; for BART, an encoder layer).
    #[arg(long)]
    layer: usize,
    /// The head (0-based).
    #[arg(long)]
    head: usize,
    /// The input text.
    text: String,
}

/// Formats a matrix for the terminal: values rounded to 4 decimals, the
/// middle rows and columns elided when there are many.
fn format_matrix(values: &ndarray::Array2<f32>, labels: &[String]) -> String {
    const EDGE_ROWS: (usize, usize) = (4, 2);
    const EDGE_COLS: (usize, usize) = (4, 2);
    let (rows, cols) = values.dim();
    let pick = |n: usize, (head, tail): (usize, usize)| -> Vec<Option<usize>> {
        if n <= head + tail + 1 {
            (0..n).map(Some).collect()
        } else {
            (0..head).map(Some).chain([None]).chain((n - tail..n).map(Some)).collect()
        }
    };
    let cell = |v: f32| if v == f32::NEG_INFINITY { format!("{:>9}", "-inf") } else { format!("{v:>9.4}") };
    let mut out = String::new();
    for r in pick(rows, EDGE_ROWS) {
        let label = match r {
            Some(r) => labels.get(r).cloned().unwrap_or_default(),
            None => "...".to_string(),
        };
        out += &format!("   {:<14}", label.chars().take(14).collect::<String>());
        for c in pick(cols, EDGE_COLS) {
            out += &match (r, c) {
                (Some(r), Some(c)) => cell(values[[r, c]]),
                _ => format!("{:>9}", "..."),
            };
        }
        out += "\n";
    }
    out
}

fn explain(args: ExplainArgs) -> Result<String> {
    let dir = resolve_model(&args.model)?;
    let ex = models::explain::explain(&dir, args.layer, args.head, &args.text)?;
    let (t, c) = ex.output.dim();
    let mut out =
        format!("Layer {}, head {} on {:?}: T = {t} tokens, C = {c} channels\n\n", args.layer, args.head, args.text);
    for (i, st) in ex.steps.iter().enumerate() {
        let (r, k) = st.values.dim();
        out += &format!("{}. {}   shape ({r}, {k})\n   {}\n", i + 1, st.title, st.formula);
        out += &format_matrix(&st.values, &ex.tokens);
        out += "\n";
    }
    let diff = ex.output.iter().zip(ex.forward_output.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    out += &format!(
        "The last step is the layer's output; the model's own forward pass gives the same values (max |difference| = {diff:.1e})."
    );
    Ok(out)
}

#[derive(Args)]
struct AttentionArgs {
    /// A checkpoint directory or a model id in the local Hugging Face cache.
    #[arg(long, value_name = "DIR | ORG/NAME")]
    model: String,
    /// One layer (0-based); without it, one row of panels per layer.
    #[arg(long)]
    layer: Option<usize>,
    /// One head (0-based); without it, every head of the layer.
    #[arg(long)]
    head: Option<usize>,
    /// `self`, or `cross` for BART: summary tokens (queries) attending to source tokens (keys).
    #[arg(long, default_value = "self", value_parser = ["self", "cross"])]
    kind: String,
    /// The picture to write: FILE.svg or FILE.png.
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    out: std::path::PathBuf,
    /// The text (for cross-attention, the source; the summary is generated with the checkpoint's settings).
    text: String,
}

/// The attention maps of one input: `(layers of (1, nh, T, S), query tokens, key tokens)`.
type AttentionMaps = (Vec<ndarray::ArrayD<f32>>, Vec<String>, Vec<String>);

fn attention_maps(args: &AttentionArgs, dir: &std::path::Path) -> Result<AttentionMaps> {
    let config = models::config::read_config(dir)?;
    let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("");
    let first_tokens = |study: &Study, key: &str| -> Result<Vec<String>> {
        let all: Vec<Vec<String>> = serde_json::from_str(&study.metadata[key])?;
        Ok(all.into_iter().next().unwrap_or_default())
    };
    let collect = |study: &Study, field: &str| -> Vec<ndarray::ArrayD<f32>> {
        (0..).map_while(|l| study.get(&format!("{field}.{l}")).cloned()).collect()
    };
    if args.kind == "cross" && model_type != "bart" {
        anyhow::bail!("--kind cross needs an encoder-decoder model (bart); this is a `{model_type}` model");
    }
    let texts = vec![args.text.clone()];
    match model_type {
        "gpt2" => {
            let study = TextGeneration::load(dir)?.study(&args.text)?;
            let tokens = first_tokens(&study, "tokens")?;
            Ok((collect(&study, "attentions"), tokens.clone(), tokens))
        }
        "bart" => {
            let pipe = Summarization::load(dir)?;
            if args.kind == "cross" {
                let summary = pipe.summarize(&args.text, &pipe.defaults)?.remove(0);
                let study = pipe.study(&args.text, Some(&summary.token_ids))?;
                Ok((
                    collect(&study, "cross_attentions"),
                    first_tokens(&study, "decoder_tokens")?,
                    first_tokens(&study, "tokens")?,
                ))
            } else {
                let study = pipe.study(&args.text, None)?;
                let tokens = first_tokens(&study, "tokens")?;
                Ok((collect(&study, "encoder_attentions"), tokens.clone(), tokens))
            }
        }
        _ => {
            let study = FeatureExtraction::load(dir)?.study(&texts, &EncodeOptions::default())?;
            let tokens = first_tokens(&study, "tokens")?;
            Ok((collect(&study, "attentions"), tokens.clone(), tokens))
        }
    }
}

fn attention(args: AttentionArgs) -> Result<Value> {
    let dir = resolve_model(&args.model)?;
    let (maps, query_tokens, key_tokens) = attention_maps(&args, &dir)?;
    let n_layers = maps.len();
    let n_heads = maps.first().map_or(0, |m| m.shape()[1]);
    if let Some(l) = args.layer.filter(|&l| l >= n_layers) {
        anyhow::bail!("--layer {l} is out of range: the model has {n_layers} layers (0..{})", n_layers - 1);
    }
    if let Some(h) = args.head.filter(|&h| h >= n_heads) {
        anyhow::bail!("--head {h} is out of range: the model has {n_heads} heads (0..{})", n_heads - 1);
    }
    let layers: Vec<usize> = args.layer.map_or_else(|| (0..n_layers).collect(), |l| vec![l]);
    let heads: Vec<usize> = args.head.map_or_else(|| (0..n_heads).collect(), |h| vec![h]);
    let rows: Vec<Vec<heatmap::Panel>> = layers
        .iter()
        .map(|&l| {
            heads
                .iter()
                .map(|&h| heatmap::Panel {
                    // (1, nh, T, S) -> (T, S)
                    probs: maps[l].slice(ndarray::s![0, h, .., ..]).into_dimensionality().expect("rank 2"),
                    caption: format!("layer {l} head {h}"),
                })
                .collect()
        })
        .collect();
    let name = dir.file_name().map_or_else(|| args.model.clone(), |n| n.to_string_lossy().into_owned());
    let what = match (args.layer, args.head) {
        (Some(l), Some(h)) => format!("layer {l}, head {h}"),
        (Some(l), None) => format!("layer {l}, all heads"),
        (None, Some(h)) => format!("all layers, head {h}"),
        (None, None) => "all layers and heads".to_string(),
    };
    let title = format!("{name}: {} attention, {what}", args.kind);
    let fig = heatmap::Figure { title, query_tokens, key_tokens, rows };
    let (width, height) = heatmap::render(&fig, &args.out)?;
    Ok(
        json!({"out": args.out.display().to_string(), "width": width, "height": height, "layers": layers, "heads": heads}),
    )
}

/// Length and beam-search flags shared by `text-generation` and `summarization`.
#[derive(Args)]
struct SearchArgs {
    /// Total length limit: the prompt (GPT-2) or the decoder start token (BART) included.
    #[arg(long)]
    max_length: Option<usize>,
    /// EOS is suppressed while the sequence (counted as for --max-length) is shorter than this.
    #[arg(long)]
    min_length: Option<usize>,
    #[arg(long)]
    num_beams: Option<usize>,
    #[arg(long)]
    num_return_sequences: Option<usize>,
    /// Beam scores are `sum log p / length^X`: X > 0 favours longer sequences.
    #[arg(long)]
    length_penalty: Option<f32>,
    #[arg(long)]
    no_repeat_ngram_size: Option<usize>,
}

impl SearchArgs {
    /// The flags that were given, with Hugging Face's setting names.
    fn pairs(&self) -> Vec<(&'static str, Option<Value>)> {
        vec![
            ("max_length", self.max_length.map(Value::from)),
            ("min_length", self.min_length.map(Value::from)),
            ("num_beams", self.num_beams.map(Value::from)),
            ("num_return_sequences", self.num_return_sequences.map(Value::from)),
            ("length_penalty", self.length_penalty.map(Value::from)),
            ("no_repeat_ngram_size", self.no_repeat_ngram_size.map(Value::from)),
        ]
    }
}

/// Flags of `summarization`; any left unset keep the checkpoint's settings.
#[derive(Args)]
struct SummarizationArgs {
    /// A checkpoint directory or a model id in the local Hugging Face cache.
    #[arg(long, value_name = "DIR | ORG/NAME")]
    model: String,
    #[command(flatten)]
    weights: WeightsArg,
    #[command(flatten)]
    search: SearchArgs,
    /// When beam search stops: true (num_beams finished), false (heuristic) or never.
    #[arg(long, value_name = "true|false|never")]
    early_stopping: Option<String>,
    /// Print token ids (`summary_token_ids`) instead of text.
    #[arg(long)]
    return_tensors: bool,
    #[command(flatten)]
    study: StudyArgs,
    /// The texts; with none, one text per line is read from stdin.
    inputs: Vec<String>,
}

impl SummarizationArgs {
    /// The flags that were given, as generation settings (HF names).
    fn overrides(&self) -> Result<Value> {
        let early = match self.early_stopping.as_deref() {
            None => None,
            Some("true") => Some(Value::Bool(true)),
            Some("false") => Some(Value::Bool(false)),
            Some("never") => Some(Value::from("never")),
            Some(other) => anyhow::bail!("--early-stopping takes true, false or never, not `{other}`"),
        };
        let mut pairs = self.search.pairs();
        pairs.push(("early_stopping", early));
        Ok(settings(&pairs))
    }
}

fn summarization(args: SummarizationArgs) -> Result<Value> {
    let dir = resolve_model(&args.model)?;
    let texts = if args.inputs.is_empty() { stdin_lines()? } else { args.inputs.clone() };
    if texts.is_empty() {
        anyhow::bail!("no input given: pass texts as arguments or one per line on stdin");
    }
    let overrides = args.overrides()?;
    let pipe = Summarization::load_as(&dir, args.weights.packed())?;
    args.study.write(|| match texts.as_slice() {
        [text] => pipe.study(text, None),
        _ => anyhow::bail!("--dump takes exactly one text"),
    })?;
    let mut config = pipe.defaults.clone();
    config.update(&overrides)?;
    let mut results = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let summaries = pipe.summarize(text, &config).with_context(|| format!("input {}", i + 1))?;
        results.push(Value::Array(
            summaries
                .into_iter()
                .map(|s| {
                    if args.return_tensors {
                        json!({"summary_token_ids": s.token_ids})
                    } else {
                        json!({"summary_text": s.text})
                    }
                })
                .collect(),
        ));
    }
    Ok(Value::Array(results))
}

/// Flags of `text-generation`; any left unset keep the checkpoint's settings
/// (generation_config.json, else config.json, then task_specific_params).
#[derive(Args)]
struct GenerationArgs {
    /// A checkpoint directory or a model id in the local Hugging Face cache.
    #[arg(long, value_name = "DIR | ORG/NAME")]
    model: String,
    #[command(flatten)]
    weights: WeightsArg,
    /// Tokens to generate after the prompt.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// EOS is suppressed until this many tokens were generated.
    #[arg(long)]
    min_new_tokens: Option<usize>,
    /// Sample (true) or decode greedily / by beam search (false).
    #[arg(long, value_name = "true|false")]
    do_sample: Option<bool>,
    #[arg(long)]
    temperature: Option<f32>,
    /// Sample only among the K most likely tokens (0: no limit).
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample only within the smallest set of tokens whose probability reaches P.
    #[arg(long)]
    top_p: Option<f32>,
    /// Seed of the sampler, for reproducible runs (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    repetition_penalty: Option<f32>,
    #[command(flatten)]
    search: SearchArgs,
    /// Include the prompt in generated_text.
    #[arg(long, value_name = "true|false", default_value_t = true, action = clap::ArgAction::Set)]
    return_full_text: bool,
    /// Print token ids (`generated_token_ids`) instead of text.
    #[arg(long)]
    return_tensors: bool,
    /// Print the text as it is produced instead of the final JSON.
    #[arg(long)]
    stream: bool,
    #[command(flatten)]
    study: StudyArgs,
    /// The prompts; with none, one prompt per line is read from stdin.
    inputs: Vec<String>,
}

impl GenerationArgs {
    /// The flags that were given, as generation settings (HF names).
    fn overrides(&self) -> Value {
        let mut pairs = self.search.pairs();
        pairs.extend([
            ("max_new_tokens", self.max_new_tokens.map(Value::from)),
            ("min_new_tokens", self.min_new_tokens.map(Value::from)),
            ("do_sample", self.do_sample.map(Value::from)),
            ("temperature", self.temperature.map(Value::from)),
            ("top_k", self.top_k.map(Value::from)),
            ("top_p", self.top_p.map(Value::from)),
            ("repetition_penalty", self.repetition_penalty.map(Value::from)),
        ]);
        settings(&pairs)
    }
}

/// The generation settings given on the command line, as a JSON object with
/// Hugging Face's names (flags left out are absent).
fn settings(pairs: &[(&str, Option<Value>)]) -> Value {
    Value::Object(pairs.iter().filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v))).collect())
}

/// Reads inputs from stdin, one per line.
fn stdin_lines() -> Result<Vec<String>> {
    let stdin = std::io::stdin();
    stdin.lock().lines().collect::<std::io::Result<Vec<_>>>().context("cannot read inputs from stdin")
}

/// Prints decoded text as tokens arrive, holding back an incomplete UTF-8
/// character (the byte-level decoder shows it as U+FFFD until it is whole).
struct Streamer<'a> {
    pipe: &'a TextGeneration,
    ids: Vec<u32>,
    printed: usize,
}

impl Streamer<'_> {
    fn push(&mut self, id: u32) {
        self.ids.push(id);
        if let Ok(text) = self.pipe.tokenizer.decode(&self.ids, true) {
            if !text.ends_with('\u{FFFD}') && text.len() > self.printed {
                // a closed pipe ends the output, not the program
                let mut stdout = std::io::stdout();
                let _ = stdout.write_all(&text.as_bytes()[self.printed..]).and_then(|_| stdout.flush());
                self.printed = text.len();
            }
        }
    }
}

fn text_generation(args: GenerationArgs) -> Result<Option<Value>> {
    let dir = resolve_model(&args.model)?;
    let prompts = if args.inputs.is_empty() { stdin_lines()? } else { args.inputs.clone() };
    if prompts.is_empty() {
        anyhow::bail!("no input given: pass prompts as arguments or one per line on stdin");
    }
    let pipe = TextGeneration::load_as(&dir, args.weights.packed())?;
    args.study.write(|| match prompts.as_slice() {
        [prompt] => pipe.study(prompt),
        _ => anyhow::bail!("--dump takes exactly one prompt"),
    })?;
    let mut config = pipe.defaults.clone();
    config.update(&args.overrides())?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    let mut results = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.iter().enumerate() {
        let context = || format!("prompt {}", i + 1);
        if args.stream {
            if args.return_full_text {
                let _ = std::io::stdout().write_all(prompt.as_bytes());
            }
            let mut streamer = Streamer { pipe: &pipe, ids: Vec::new(), printed: 0 };
            pipe.generate(prompt, &config, seed, &mut |id| streamer.push(id)).with_context(context)?;
            let _ = std::io::stdout().write_all(b"\n");
            continue;
        }
        let generated = pipe.generate(prompt, &config, seed, &mut |_| {}).with_context(context)?;
        results.push(Value::Array(
            generated
                .into_iter()
                .map(|g| {
                    if args.return_tensors {
                        json!({"generated_token_ids": g.token_ids})
                    } else if args.return_full_text {
                        json!({"generated_text": format!("{prompt}{}", g.new_text)})
                    } else {
                        json!({"generated_text": g.new_text})
                    }
                })
                .collect(),
        ));
    }
    Ok((!args.stream).then_some(Value::Array(results)))
}

/// Flags shared by every task for studying a forward pass.
#[derive(Args)]
struct StudyArgs {
    /// Write the attention probabilities of every layer to the --dump file.
    #[arg(long)]
    output_attentions: bool,
    /// Write the hidden states of every layer (embedding output first) to the --dump file.
    #[arg(long)]
    output_hidden_states: bool,
    /// A safetensors file for the tensors, named and shaped as transformers
    /// returns them (both kinds when neither flag is given); token strings go in its metadata.
    #[arg(long, value_name = "FILE.safetensors")]
    dump: Option<std::path::PathBuf>,
}

impl StudyArgs {
    /// Writes the study produced by `make` when --dump was given.
    fn write(&self, make: impl FnOnce() -> Result<Study>) -> Result<()> {
        let Some(path) = &self.dump else {
            if self.output_attentions || self.output_hidden_states {
                anyhow::bail!("--output-attentions and --output-hidden-states need --dump FILE.safetensors");
            }
            return Ok(());
        };
        let both = !self.output_attentions && !self.output_hidden_states;
        let study = make()?.select(both || self.output_attentions, both || self.output_hidden_states);
        study.write(path)
    }
}

#[derive(Args)]
struct EncoderArgs {
    /// A checkpoint directory (config.json, model.safetensors, tokenizer.json) or a model id in the local Hugging Face cache.
    #[arg(long, value_name = "DIR | ORG/NAME")]
    model: String,
    /// Cut inputs longer than the model's maximum length instead of failing.
    #[arg(long)]
    truncation: bool,
    /// Inputs per padded forward pass.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    #[command(flatten)]
    weights: WeightsArg,
    #[command(flatten)]
    study: StudyArgs,
    /// The texts; with none, one text per line is read from stdin.
    inputs: Vec<String>,
}

impl EncoderArgs {
    fn options(&self) -> EncodeOptions {
        EncodeOptions { truncation: self.truncation, batch_size: self.batch_size as usize }
    }

    fn texts(&self) -> Result<Vec<String>> {
        if !self.inputs.is_empty() {
            return Ok(self.inputs.clone());
        }
        let stdin = std::io::stdin();
        stdin.lock().lines().collect::<std::io::Result<Vec<_>>>().context("cannot read inputs from stdin")
    }
}

fn label_score(e: &LabelScore) -> Value {
    json!({"label": e.label, "score": e.score})
}

/// What a command prints on stdout.
enum Output {
    /// One JSON document, in Python's `json.dumps` style.
    Json(Value),
    /// Plain text.
    Text(String),
}

fn run(cli: Cli) -> Result<Option<Output>> {
    Ok(Some(Output::Json(match cli.task {
        Task::SentimentAnalysis { common, top_k } => {
            let dir = resolve_model(&common.model)?;
            let texts = common.texts()?;
            let pipe = TextClassification::load_as(&dir, common.weights.packed())?;
            common.study.write(|| pipe.study(&texts, &common.options()))?;
            let results = pipe.run(&texts, top_k, &common.options())?;
            Value::Array(
                results
                    .iter()
                    .map(|r| match r {
                        Classification::Best(e) => label_score(e),
                        Classification::TopK(list) => Value::Array(list.iter().map(label_score).collect()),
                    })
                    .collect(),
            )
        }
        Task::FeatureExtraction { common } => {
            let dir = resolve_model(&common.model)?;
            let texts = common.texts()?;
            let pipe = FeatureExtraction::load_as(&dir, common.weights.packed())?;
            common.study.write(|| pipe.study(&texts, &common.options()))?;
            serde_json::to_value(pipe.run(&texts, &common.options())?)?
        }
        Task::TextGeneration(args) => return Ok(text_generation(args)?.map(Output::Json)),
        Task::Summarization(args) => summarization(args)?,
        Task::Attention(args) => attention(args)?,
        Task::Explain(args) => return Ok(Some(Output::Text(explain(args)?))),
        Task::Bench(args) => bench::bench(&bench::BenchSettings {
            target: args.target,
            model: args.model,
            runs: args.runs,
            batch_size: args.batch_size,
            seq_len: args.seq_len,
            max_new_tokens: args.max_new_tokens,
            num_beams: args.num_beams,
            input: args.input,
            mnk: (args.m, args.n, args.k),
            weight_layout: args.weight_layout,
            weights: args.weights.packed(),
        })?,
    })))
}

/// Tells glibc's allocator to keep freed memory for reuse instead of handing
/// it back to the kernel. A forward pass allocates and frees megabytes of
/// activations per layer; by default glibc serves such blocks with fresh
/// `mmap`s (or trims the heap after freeing them), so every layer paid page
/// faults and the kernel's zeroing of each page again: 8% of a DistilBERT batch
/// of 8 x 128 (454 -> 416 ms with this, peak memory unchanged).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn main() -> ExitCode {
    // A panic is a bug in this program, not in the user's input: say so on one line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error ({info}); please report it");
    }));
    keep_freed_memory();
    let cli = Cli::parse();
    // The whole command runs on a thread of rayon's pool: the parallel kernels
    // started from there begin at once on this thread while the other workers
    // join in, where from outside the pool every parallel call would hand its
    // work over and sleep until it is done (two thread wake-ups, measured at
    // about 90 us each on a 2-core VM: a 9 x 96 x 768 product took 99 us).
    match rayon::scope(|_| run(cli)) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(output)) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let written = match output {
                Output::Json(value) => pyjson::to_writer(&mut out, &value).map_err(std::io::Error::from),
                Output::Text(text) => out.write_all(text.as_bytes()),
            }
            .and_then(|_| {
                writeln!(out)?;
                out.flush()
            });
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write output: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
