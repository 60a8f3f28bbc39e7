//! Picks the architecture from `config.json` (`model_type`), like transformers' `Auto*` classes.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::bert::{BertForSequenceClassification, BertModel};
use crate::config::{parse, read_config, ClassifierLabels};
use crate::distilbert::{DistilBertForSequenceClassification, DistilBertModel};
use crate::encoder::{Encoder, SequenceClassifier};
use crate::tokenizer::TextTokenizer;
use crate::weights::{require_packed_type, Checkpoint, Packing};
use tensor::PackedType;

/// The encoder `model_type`s this engine implements.
pub const ENCODER_MODEL_TYPES: &str = "bert, distilbert";

fn model_type(config: &Value) -> Result<&str> {
    config.get("model_type").and_then(Value::as_str).context("config.json has no `model_type`")
}

fn open_checkpoint(dir: &Path, weights: PackedType) -> Result<Checkpoint> {
    Ok(Checkpoint::open(dir.join("model.safetensors"))?.packing_as(weights))
}

/// Loads a model from the checkpoint with `load_model` and its tokenizer, at
/// the same time: tokenizer.json is parsed on a second thread while the
/// checkpoint is mapped, the model built and the file's pages mapped in
/// ([`Checkpoint::prefault`]); the two take about as long as each other for
/// GPT-2 (~100 ms), so the first token comes that much sooner. Float32 weight
/// matrices are then packed on a background thread
/// ([`Checkpoint::pack_in_background`]). Last, checks that every id the
/// tokenizer can produce has an embedding row.
///
/// `limits` gives the model's position limit and vocabulary size.
///
/// # Errors
/// If either fails to load, or tokenizer.json has more tokens than `vocab_size`.
pub fn load_with_tokenizer<M>(
    dir: &Path,
    weights: PackedType,
    load_model: impl FnOnce(&Checkpoint) -> Result<M>,
    limits: impl FnOnce(&M) -> (usize, usize),
) -> Result<(M, TextTokenizer, Packing)> {
    require_packed_type(weights)?;
    let (model, parsed) = std::thread::scope(|s| {
        let parsing = s.spawn(|| TextTokenizer::parse(dir));
        let model = open_checkpoint(dir, weights).and_then(|ckpt| {
            let model = load_model(&ckpt)?;
            ckpt.prefault();
            Ok((model, ckpt.pack_in_background()))
        });
        (model, parsing.join())
    });
    let (model, packing) = model?;
    let parsed = parsed.map_err(|_| anyhow!("parsing {}/tokenizer.json panicked", dir.display()))??;
    let (max_positions, vocab_size) = limits(&model);
    let tokenizer = TextTokenizer::from_parsed(parsed, dir, max_positions)?;
    if tokenizer.vocab_size() > vocab_size {
        bail!(
            "tokenizer.json has {} tokens but the model embeds only {vocab_size} (vocab_size); the tokenizer does not belong to this checkpoint",
            tokenizer.vocab_size()
        );
    }
    Ok((model, tokenizer, packing))
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
pub fn load_encoder(dir: &Path, weights: PackedType) -> Result<(Box<dyn Encoder>, TextTokenizer, Packing)> {
    let config = read_config(dir)?;
    let load = |ckpt: &Checkpoint| -> Result<Box<dyn Encoder>> {
        let prefixed = |prefix: &str| ckpt.contains(&format!("{prefix}.embeddings.word_embeddings.weight"));
        Ok(match model_type(&config)? {
            "bert" => {
                let w = if prefixed("bert") { ckpt.root().pp("bert") } else { ckpt.root() };
                Box::new(BertModel::load(&w, parse(&config, "BERT")?)?)
            }
            "distilbert" => {
                let w = if prefixed("distilbert") { ckpt.root().pp("distilbert") } else { ckpt.root() };
                Box::new(DistilBertModel::load(&w, parse(&config, "DistilBERT")?)?)
            }
            other => bail!("model_type `{other}` is not supported for this task (supported: {ENCODER_MODEL_TYPES})"),
        })
    };
    load_with_tokenizer(dir, weights, load, |e| (e.max_positions(), e.vocab_size()))
}

/// Loads a `*ForSequenceClassification` checkpoint with its labels.
///
/// # Errors
/// As [`load_encoder`]; also if the checkpoint has no classification head.
pub fn load_classifier(
    dir: &Path,
    weights: PackedType,
) -> Result<(Box<dyn SequenceClassifier>, ClassifierLabels, TextTokenizer, Packing)> {
    let config = read_config(dir)?;
    let labels = ClassifierLabels::from_config(&config)?;
    let n = labels.labels.len();
    let load = |ckpt: &Checkpoint| -> Result<Box<dyn SequenceClassifier>> {
        if !ckpt.contains("classifier.weight") {
            bail!(
                "{} has no classification head (no tensor `classifier.weight`); use a *ForSequenceClassification checkpoint, or the feature-extraction task",
                dir.display()
            );
        }
        Ok(match model_type(&config)? {
            "bert" => Box::new(BertForSequenceClassification::load(&ckpt.root(), parse(&config, "BERT")?, n)?),
            "distilbert" => {
                Box::new(DistilBertForSequenceClassification::load(&ckpt.root(), parse(&config, "DistilBERT")?, n)?)
            }
            other => {
                bail!(
                    "model_type `{other}` is not supported for text classification (supported: {ENCODER_MODEL_TYPES})"
                )
            }
        })
    };
    let (model, tokenizer, packing) =
        load_with_tokenizer(dir, weights, load, |m| (m.encoder().max_positions(), m.encoder().vocab_size()))?;
    Ok((model, labels, tokenizer, packing))
}
