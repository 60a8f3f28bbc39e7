//! Picks the architecture from `config.json` (`model_type`), like transformers' `Auto*` classes.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bert::{BertForSequenceClassification, BertModel};
use crate::config::{parse, read_config, ClassifierLabels};
use crate::distilbert::{DistilBertForSequenceClassification, DistilBertModel};
use crate::encoder::{Encoder, SequenceClassifier};
use crate::tokenizer::TextTokenizer;
use crate::weights::Checkpoint;

/// The encoder `model_type`s this engine implements.
pub const ENCODER_MODEL_TYPES: &str = "bert, distilbert";

fn model_type(config: &Value) -> Result<&str> {
    config.get("model_type").and_then(Value::as_str).context("config.json has no `model_type`")
}

fn open_checkpoint(dir: &Path) -> Result<Checkpoint> {
    Checkpoint::open(dir.join("model.safetensors"))
}

/// Loads the tokenizer and checks every id it can produce has an embedding row.
///
/// # Errors
/// If tokenizer.json cannot be loaded or has more tokens than `vocab_size`.
pub fn load_tokenizer(dir: &Path, max_positions: usize, vocab_size: usize) -> Result<TextTokenizer> {
    let tokenizer = TextTokenizer::from_dir(dir, max_positions)?;
    if tokenizer.vocab_size() > vocab_size {
        bail!(
            "tokenizer.json has {} tokens but the model embeds only {vocab_size} (vocab_size); the tokenizer does not belong to this checkpoint",
            tokenizer.vocab_size()
        );
    }
    Ok(tokenizer)
}

/// Checks `config.json`'s `model_type` is `expected`, naming the task and the supported types otherwise.
///
/// # Errors
/// On another or a missing `model_type`.
pub fn require_model_type(config: &Value, expected: &str, task: &str) -> Result<()> {
    match model_type(config)? {
        t if t == expected => Ok(()),
        other => bail!("model_type `{other}` is not supported for {task} (supported: {expected})"),
    }
}

/// Loads the base encoder of a checkpoint (as `AutoModel` does), whether the
/// file holds the bare model or one with a head.
///
/// Checkpoint quirk: a bare `BertModel` is saved without a prefix
/// (`embeddings.*`), a model with a head under `bert.` (`bert.embeddings.*`);
/// DistilBERT likewise under `distilbert.`. The prefix is chosen by which
/// word-embedding name the file has.
///
/// # Errors
/// On unreadable files, an unsupported `model_type` (the supported ones are
/// listed), or any tensor that is missing or misshapen.
pub fn load_encoder(dir: &Path) -> Result<(Box<dyn Encoder>, TextTokenizer)> {
    let config = read_config(dir)?;
    let ckpt = open_checkpoint(dir)?;
    let prefixed = |prefix: &str| ckpt.contains(&format!("{prefix}.embeddings.word_embeddings.weight"));
    let encoder: Box<dyn Encoder> = match model_type(&config)? {
        "bert" => {
            let w = if prefixed("bert") { ckpt.root().pp("bert") } else { ckpt.root() };
            Box::new(BertModel::load(&w, parse(&config, "BERT")?)?)
        }
        "distilbert" => {
            let w = if prefixed("distilbert") { ckpt.root().pp("distilbert") } else { ckpt.root() };
            Box::new(DistilBertModel::load(&w, parse(&config, "DistilBERT")?)?)
        }
        other => bail!("model_type `{other}` is not supported for this task (supported: {ENCODER_MODEL_TYPES})"),
    };
    let tokenizer = load_tokenizer(dir, encoder.max_positions(), encoder.vocab_size())?;
    Ok((encoder, tokenizer))
}

/// Loads a `*ForSequenceClassification` checkpoint with its labels.
///
/// # Errors
/// As [`load_encoder`]; also if the checkpoint has no classification head.
pub fn load_classifier(dir: &Path) -> Result<(Box<dyn SequenceClassifier>, ClassifierLabels, TextTokenizer)> {
    let config = read_config(dir)?;
    let labels = ClassifierLabels::from_config(&config)?;
    let ckpt = open_checkpoint(dir)?;
    if !ckpt.contains("classifier.weight") {
        bail!(
            "{} has no classification head (no tensor `classifier.weight`); use a *ForSequenceClassification checkpoint, or the feature-extraction task",
            dir.display()
        );
    }
    let n = labels.labels.len();
    let model: Box<dyn SequenceClassifier> = match model_type(&config)? {
        "bert" => Box::new(BertForSequenceClassification::load(&ckpt.root(), parse(&config, "BERT")?, n)?),
        "distilbert" => {
            Box::new(DistilBertForSequenceClassification::load(&ckpt.root(), parse(&config, "DistilBERT")?, n)?)
        }
        other => {
            bail!("model_type `{other}` is not supported for text classification (supported: {ENCODER_MODEL_TYPES})")
        }
    };
    let tokenizer = load_tokenizer(dir, model.encoder().max_positions(), model.encoder().vocab_size())?;
    Ok((model, labels, tokenizer))
}
