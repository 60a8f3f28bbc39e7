//! `tokenizer.json` through the `tokenizers` crate, configured as Python
//! transformers uses it, and padded batches.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ndarray::Array2;
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

/// transformers' placeholder for "no limit" (`VERY_LARGE_INTEGER = int(1e30)`).
const UNSET_MAX_LENGTH: f64 = 1e29;

/// One tokenized input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Segment ids (BERT's `token_type_ids`).
    pub type_ids: Vec<u32>,
}

/// A tokenizer that behaves like transformers' `PreTrainedTokenizerFast`.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// The length `truncation=True` cuts to: `model_max_length` from
    /// tokenizer_config.json, or the model's position limit.
    pub model_max_length: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (and `model_max_length` from `tokenizer_config.json`, if present).
    ///
    /// # Errors
    /// If a file cannot be read or parsed.
    pub fn from_dir(dir: &Path, max_positions: usize) -> Result<Self> {
        Self::from_parsed(Self::parse(dir)?, dir, max_positions)
    }

    /// Parses `tokenizer.json`: the slow part of loading a tokenizer (GPT-2's
    /// 50,000 merges take about 100 ms), so that it can run on its own thread
    /// while the model loads.
    ///
    /// # Errors
    /// If the file cannot be read or parsed.
    pub fn parse(dir: &Path) -> Result<tokenizers::Tokenizer> {
        let path = dir.join("tokenizer.json");
        tokenizers::Tokenizer::from_file(&path).map_err(|e| anyhow!("cannot load {}: {e}", path.display()))
    }

    /// Completes a tokenizer [`parse`](Self::parse)d from `dir`.
    ///
    /// The padding and truncation settings stored in tokenizer.json are
    /// switched off: Python transformers ignores them and pads or truncates
    /// only when asked, per call. (all-MiniLM-L6-v2's file, for one, asks to
    /// pad every input to 128 tokens.)
    ///
    /// # Errors
    /// If tokenizer_config.json cannot be read.
    pub fn from_parsed(mut inner: tokenizers::Tokenizer, dir: &Path, max_positions: usize) -> Result<Self> {
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| anyhow!("cannot reset truncation of {}: {e}", dir.display()))?;
        let model_max_length = read_model_max_length(dir)?.unwrap_or(max_positions);
        Ok(Self { inner, model_max_length })
    }

    /// Size of the vocabulary, added tokens included (the largest id plus one).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The string of a token id, as the vocabulary spells it (`Ġthe`, `##ing`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Tokenizes one text with special tokens; with `truncation`, cuts it to
    /// `model_max_length` as `truncation=True` (longest-first, from the right) does.
    ///
    /// # Errors
    /// If the tokenizer fails on the text.
    pub fn encode(&self, text: &str, truncation: bool) -> Result<Encoded> {
        let encoding = if truncation {
            let mut truncating = self.inner.clone();
            truncating
                .with_truncation(Some(TruncationParams {
                    max_length: self.model_max_length,
                    strategy: TruncationStrategy::LongestFirst,
                    stride: 0,
                    direction: TruncationDirection::Right,
                }))
                .map_err(|e| anyhow!("cannot truncate to {}: {e}", self.model_max_length))?;
            truncating.encode(text, true)
        } else {
            self.inner.encode(text, true)
        }
        .map_err(|e| anyhow!("cannot tokenize input: {e}"))?;
        Ok(Encoded { ids: encoding.get_ids().to_vec(), type_ids: encoding.get_type_ids().to_vec() })
    }

    /// Turns ids back into text.
    ///
    /// # Errors
    /// If the tokenizer's decoder fails.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| anyhow!("cannot decode ids: {e}"))
    }
}

fn read_model_max_length(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(value
        .get("model_max_length")
        .and_then(serde_json::Value::as_f64)
        .filter(|&n| n > 0.0 && n < UNSET_MAX_LENGTH)
        .map(|n| n as usize))
}

/// Several encoded inputs, right-padded to the longest.
///
/// # Shapes
/// `input_ids`, `token_type_ids`, `attention_mask`: `(B, T)`.
#[derive(Clone, Debug)]
pub struct Batch {
    pub input_ids: Array2<u32>,
    pub token_type_ids: Array2<u32>,
    /// 1 for a real token, 0 for padding.
    pub attention_mask: Array2<u8>,
    /// The unpadded length of each input.
    pub lengths: Vec<usize>,
}

impl Batch {
    /// Pads `inputs` on the right with `pad_id` (segment 0, mask 0).
    ///
    /// # Errors
    /// If `inputs` is empty.
    pub fn pad(inputs: &[Encoded], pad_id: u32) -> Result<Self> {
        if inputs.is_empty() {
            bail!("cannot build a batch of zero inputs");
        }
        let t = inputs.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let b = inputs.len();
        let mut input_ids = Array2::from_elem((b, t), pad_id);
        let mut token_type_ids = Array2::zeros((b, t));
        let mut attention_mask = Array2::zeros((b, t));
        for (i, e) in inputs.iter().enumerate() {
            for (j, (&id, &ty)) in e.ids.iter().zip(&e.type_ids).enumerate() {
                input_ids[[i, j]] = id;
                token_type_ids[[i, j]] = ty;
                attention_mask[[i, j]] = 1;
            }
        }
        Ok(Self { input_ids, token_type_ids, attention_mask, lengths: inputs.iter().map(|e| e.ids.len()).collect() })
    }

    /// `(B, T)`
    pub fn dim(&self) -> (usize, usize) {
        self.input_ids.dim()
    }
}
