//! `pipeline`: Hugging Face pipeline tasks on local checkpoints, from the command line.
//!
//! ```text
//! pipeline <TASK> --model <DIR | ORG/NAME> [OPTIONS] [INPUT ...]
//! ```
//! Prints one JSON array with one element per input, each element what the
//! Python pipeline returns for that input. Errors are one line on stderr and
//! a non-zero exit.

mod pyjson;

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use models::hub::resolve_model;
use models::pipelines::{
    Classification, EncodeOptions, FeatureExtraction, LabelScore, TextClassification,
};

#[derive(Parser)]
#[command(
    name = "pipeline",
    version,
    about = "Hugging Face pipelines in pure Rust, on local checkpoints"
)]
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
    /// The texts; with none, one text per line is read from stdin.
    inputs: Vec<String>,
}

impl EncoderArgs {
    fn options(&self) -> EncodeOptions {
        EncodeOptions {
            truncation: self.truncation,
            batch_size: self.batch_size as usize,
        }
    }

    fn texts(&self) -> Result<Vec<String>> {
        if !self.inputs.is_empty() {
            return Ok(self.inputs.clone());
        }
        let stdin = std::io::stdin();
        stdin
            .lock()
            .lines()
            .collect::<std::io::Result<Vec<_>>>()
            .context("cannot read inputs from stdin")
    }
}

fn label_score(e: &LabelScore) -> Value {
    json!({"label": e.label, "score": e.score})
}

fn run(cli: Cli) -> Result<Value> {
    match cli.task {
        Task::SentimentAnalysis { common, top_k } => {
            let dir = resolve_model(&common.model)?;
            let texts = common.texts()?;
            let pipe = TextClassification::load(&dir)?;
            let results = pipe.run(&texts, top_k, &common.options())?;
            Ok(Value::Array(
                results
                    .iter()
                    .map(|r| match r {
                        Classification::Best(e) => label_score(e),
                        Classification::TopK(list) => {
                            Value::Array(list.iter().map(label_score).collect())
                        }
                    })
                    .collect(),
            ))
        }
        Task::FeatureExtraction { common } => {
            let dir = resolve_model(&common.model)?;
            let texts = common.texts()?;
            let pipe = FeatureExtraction::load(&dir)?;
            Ok(serde_json::to_value(pipe.run(&texts, &common.options())?)?)
        }
    }
}

fn main() -> ExitCode {
    // A panic is a bug in this program, not in the user's input: say so on one line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error ({info}); please report it");
    }));
    let cli = Cli::parse();
    match run(cli) {
        Ok(value) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let written = pyjson::to_writer(&mut out, &value)
                .map_err(std::io::Error::from)
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
