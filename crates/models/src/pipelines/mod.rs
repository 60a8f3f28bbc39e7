//! The Hugging Face pipeline tasks, on top of the models: tokenize, batch,
//! run, post-process, exactly as transformers' pipelines do.

pub mod summarization;
pub mod text_generation;

use std::path::Path;

use anyhow::{bail, Result};
use ndarray::{s, ArrayView1};

use crate::auto::{load_classifier, load_encoder};
use crate::config::{ClassifierLabels, ScoreFunction};
use crate::encoder::EncoderOutput;
use crate::encoder::{Encoder, SequenceClassifier};
use crate::study::{token_strings, Study};
use crate::tokenizer::{Batch, Encoded, TextTokenizer};
use crate::weights::Packing;
use crate::Keep;
use tensor::PackedType;

/// Options shared by the encoder tasks.
#[derive(Clone, Debug)]
pub struct EncodeOptions {
    /// Cut inputs longer than the model maximum (transformers' `truncation=True`).
    pub truncation: bool,
    /// Inputs per padded forward pass.
    pub batch_size: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self { truncation: false, batch_size: 8 }
    }
}

/// Tokenizes every input, rejecting empty inputs and inputs the position table cannot hold.
fn encode_all(
    tokenizer: &TextTokenizer,
    inputs: &[String],
    truncation: bool,
    max_positions: usize,
) -> Result<Vec<Encoded>> {
    if inputs.is_empty() {
        bail!("no input given: pass texts as arguments or one per line on stdin");
    }
    inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            if text.trim().is_empty() {
                bail!("input {} is empty", i + 1);
            }
            let enc = tokenizer.encode(text, truncation)?;
            if enc.ids.len() > max_positions {
                let hint = if truncation { "" } else { "; pass --truncation to cut it" };
                bail!(
                    "input {} has {} tokens, more than the model's limit of {max_positions} (max_position_embeddings){hint}",
                    i + 1,
                    enc.ids.len()
                );
            }
            Ok(enc)
        })
        .collect()
}

/// Runs every input as one padded batch and records what transformers'
/// `output_attentions=True, output_hidden_states=True` returns:
/// `attentions.{layer}` `(B, nh, T, T)` and `hidden_states.{i}` `(B, T, C)`.
fn encoder_study(
    tokenizer: &TextTokenizer,
    encoder: &dyn Encoder,
    inputs: &[String],
    opts: &EncodeOptions,
    forward: impl Fn(&Batch) -> EncoderOutput,
) -> Result<Study> {
    let encoded = encode_all(tokenizer, inputs, opts.truncation, encoder.max_positions())?;
    let batch = Batch::pad(&encoded, encoder.pad_token_id())?;
    let out = forward(&batch);
    let mut study = Study::default();
    study.push_all("attentions", &out.attentions);
    study.push_all("hidden_states", &out.hidden_states);
    let tokens: Vec<Vec<String>> = encoded.iter().map(|e| token_strings(tokenizer, &e.ids)).collect();
    study.metadata.insert("tokens".into(), serde_json::to_string(&tokens)?);
    Ok(study)
}

/// One `{"label", "score"}` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelScore {
    pub label: String,
    /// The f32 score widened to f64, as `numpy.float32.item()` does.
    pub score: f64,
}

/// What the text-classification pipeline returns for one input.
#[derive(Clone, Debug, PartialEq)]
pub enum Classification {
    /// Without `top_k`: the best label alone.
    Best(LabelScore),
    /// With `top_k`: the k best, sorted by score, highest first.
    TopK(Vec<LabelScore>),
}

/// `pipeline("text-classification")` / `pipeline("sentiment-analysis")`.
pub struct TextClassification {
    pub model: Box<dyn SequenceClassifier>,
    pub labels: ClassifierLabels,
    pub tokenizer: TextTokenizer,
    /// The weights still being packed in the background, if any.
    pub packing: Packing,
}

impl TextClassification {
    /// Loads a checkpoint directory.
    ///
    /// # Errors
    /// See [`load_classifier`].
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_as(dir, PackedType::F32)
    }

    /// Loads a checkpoint directory with the weight matrices packed as `weights`.
    ///
    /// # Errors
    /// See [`load_classifier`].
    pub fn load_as(dir: &Path, weights: PackedType) -> Result<Self> {
        let (model, labels, tokenizer, packing) = load_classifier(dir, weights)?;
        Ok(Self { model, labels, tokenizer, packing })
    }

    /// Classifies every input; `top_k` as the pipeline's `top_k` argument.
    ///
    /// # Errors
    /// On empty or over-long inputs.
    pub fn run(&self, inputs: &[String], top_k: Option<usize>, opts: &EncodeOptions) -> Result<Vec<Classification>> {
        let encoder = self.model.encoder();
        let encoded = encode_all(&self.tokenizer, inputs, opts.truncation, encoder.max_positions())?;
        let mut results = Vec::with_capacity(inputs.len());
        for chunk in encoded.chunks(opts.batch_size.max(1)) {
            let batch = Batch::pad(chunk, encoder.pad_token_id())?;
            let (logits, _) = self.model.classify(&batch, Keep::Result);
            for row in logits.rows() {
                results.push(self.postprocess(row, top_k));
            }
        }
        Ok(results)
    }

    /// Attentions and hidden states of all inputs as one padded batch.
    ///
    /// # Errors
    /// On empty or over-long inputs.
    pub fn study(&self, inputs: &[String], opts: &EncodeOptions) -> Result<Study> {
        encoder_study(&self.tokenizer, self.model.encoder(), inputs, opts, |b| {
            self.model.classify(b, Keep::AllLayers).1
        })
    }

    /// Scores and labels for one row of logits, as `TextClassificationPipeline.postprocess`.
    fn postprocess(&self, logits: ArrayView1<f32>, top_k: Option<usize>) -> Classification {
        let scores = score(logits, self.labels.function);
        let mut entries: Vec<LabelScore> = scores
            .iter()
            .zip(&self.labels.labels)
            .map(|(&s, label)| LabelScore { label: label.clone(), score: s as f64 })
            .collect();
        match top_k {
            None => {
                // argmax: the first of equal maxima, as numpy's
                let best = (0..entries.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
                Classification::Best(entries.swap_remove(best))
            }
            Some(k) => {
                // stable sort, highest first: ties keep label order, as Python's sort(reverse=True)
                entries.sort_by(|a, b| b.score.total_cmp(&a.score));
                entries.truncate(k);
                Classification::TopK(entries)
            }
        }
    }
}

/// The pipeline's score functions, in f32 as its NumPy code computes them:
/// softmax `exp(x - max) / sum(exp(x - max))`, sigmoid `1 / (1 + exp(-x))`.
///
/// The math: `docs/attention.md`, section "9. Text-classification scores".
fn score(logits: ArrayView1<f32>, function: ScoreFunction) -> Vec<f32> {
    match function {
        ScoreFunction::Softmax => {
            let max = logits.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let exps: Vec<f32> = logits.iter().map(|&v| (v - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.iter().map(|e| e / sum).collect()
        }
        ScoreFunction::Sigmoid => logits.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect(),
        ScoreFunction::Identity => logits.to_vec(),
    }
}

/// `pipeline("feature-extraction")`.
pub struct FeatureExtraction {
    pub model: Box<dyn Encoder>,
    pub tokenizer: TextTokenizer,
    /// The weights still being packed in the background, if any.
    pub packing: Packing,
}

impl FeatureExtraction {
    /// Loads a checkpoint directory (any head is ignored, as `AutoModel` does).
    ///
    /// # Errors
    /// See [`load_encoder`].
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_as(dir, PackedType::F32)
    }

    /// Loads a checkpoint directory with the weight matrices packed as `weights`.
    ///
    /// # Errors
    /// See [`load_encoder`].
    pub fn load_as(dir: &Path, weights: PackedType) -> Result<Self> {
        let (model, tokenizer, packing) = load_encoder(dir, weights)?;
        Ok(Self { model, tokenizer, packing })
    }

    /// Attentions and hidden states of all inputs as one padded batch.
    ///
    /// # Errors
    /// On empty or over-long inputs.
    pub fn study(&self, inputs: &[String], opts: &EncodeOptions) -> Result<Study> {
        encoder_study(&self.tokenizer, self.model.as_ref(), inputs, opts, |b| self.model.forward(b, Keep::AllLayers))
    }

    /// The last hidden state of every input, `[1][tokens][hidden]` each,
    /// special tokens included and padding removed.
    ///
    /// # Errors
    /// On empty or over-long inputs.
    pub fn run(&self, inputs: &[String], opts: &EncodeOptions) -> Result<Vec<Vec<Vec<Vec<f32>>>>> {
        let encoded = encode_all(&self.tokenizer, inputs, opts.truncation, self.model.max_positions())?;
        let mut results = Vec::with_capacity(inputs.len());
        for chunk in encoded.chunks(opts.batch_size.max(1)) {
            let batch = Batch::pad(chunk, self.model.pad_token_id())?;
            let out = self.model.forward(&batch, Keep::Result);
            let h = &out.last_hidden_state;
            for (b, &len) in batch.lengths.iter().enumerate() {
                // (B, T, C) -> (len, C) for this input
                let rows = h.slice(s![b, ..len, ..]);
                results.push(vec![rows.rows().into_iter().map(|r| r.to_vec()).collect()]);
            }
        }
        Ok(results)
    }
}
