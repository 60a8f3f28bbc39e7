//! `config.json`, deserialised with Hugging Face's field names.
//!
//! Each field's comment gives the value of the base model of its family.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use transformer::Activation;

/// Reads `config.json` as a JSON value (the architecture is chosen from its `model_type`).
pub fn read_config(dir: &Path) -> Result<Value> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// Deserialises one architecture's config from the JSON value, naming the file on error.
pub fn parse<T: for<'de> Deserialize<'de>>(value: &Value, what: &str) -> Result<T> {
    T::deserialize(value).with_context(|| format!("config.json does not describe a {what} model"))
}

/// Parses an activation name from the config, listing the supported ones on error.
pub fn activation(name: &str) -> Result<Activation> {
    match Activation::from_name(name) {
        Some(a) => Ok(a),
        None => bail!("activation `{name}` in config.json is not supported (supported: {})", Activation::SUPPORTED),
    }
}

/// `BertConfig` (bert-base-uncased values in comments).
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    /// 30522
    pub vocab_size: usize,
    /// 768
    pub hidden_size: usize,
    /// 12
    pub num_hidden_layers: usize,
    /// 12
    pub num_attention_heads: usize,
    /// 3072
    pub intermediate_size: usize,
    /// "gelu"
    #[serde(default = "default_gelu")]
    pub hidden_act: String,
    /// 512
    pub max_position_embeddings: usize,
    /// 2
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// 1e-12
    #[serde(default = "default_bert_eps")]
    pub layer_norm_eps: f32,
    /// 0
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// "absolute"; relative position types are not implemented.
    #[serde(default = "default_absolute")]
    pub position_embedding_type: String,
}

/// `DistilBertConfig` (distilbert-base-uncased values in comments).
#[derive(Clone, Debug, Deserialize)]
pub struct DistilBertConfig {
    /// 30522
    pub vocab_size: usize,
    /// 768
    pub dim: usize,
    /// 6
    pub n_layers: usize,
    /// 12
    pub n_heads: usize,
    /// 3072, the feed-forward width
    pub hidden_dim: usize,
    /// "gelu"
    #[serde(default = "default_gelu")]
    pub activation: String,
    /// 512
    pub max_position_embeddings: usize,
    /// false: learned positions; true: the fixed sinusoidal table
    #[serde(default)]
    pub sinusoidal_pos_embds: bool,
    /// 0
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_gelu() -> String {
    "gelu".into()
}
fn default_absolute() -> String {
    "absolute".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_bert_eps() -> f32 {
    1e-12
}

/// How the text-classification pipeline turns logits into scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreFunction {
    Softmax,
    Sigmoid,
    /// Raw logits (regression heads).
    Identity,
}

/// The classification head's labels and scoring, from `id2label` and `problem_type`.
#[derive(Clone, Debug)]
pub struct ClassifierLabels {
    /// `id2label` in id order, e.g. `["NEGATIVE", "POSITIVE"]`.
    pub labels: Vec<String>,
    /// Chosen as transformers' pipeline chooses it (see [`ClassifierLabels::from_config`]).
    pub function: ScoreFunction,
}

impl ClassifierLabels {
    /// Reads `id2label` (default `LABEL_0`, `LABEL_1` when absent) and picks the
    /// score function as `TextClassificationPipeline` does:
    /// `problem_type == "regression"` -> none; `"multi_label_classification"` or
    /// a single label -> sigmoid; otherwise softmax.
    pub fn from_config(config: &Value) -> Result<Self> {
        let labels: Vec<String> = match config.get("id2label") {
            Some(map) => {
                let map: BTreeMap<String, String> =
                    serde_json::from_value(map.clone()).context("config.json: `id2label` must map ids to names")?;
                let mut pairs = Vec::with_capacity(map.len());
                for (id, name) in map {
                    let id: usize =
                        id.parse().with_context(|| format!("config.json: id2label key `{id}` is not an integer"))?;
                    pairs.push((id, name));
                }
                pairs.sort();
                if pairs.iter().enumerate().any(|(i, (id, _))| *id != i) {
                    bail!("config.json: id2label ids must be 0..{}", pairs.len());
                }
                pairs.into_iter().map(|(_, name)| name).collect()
            }
            None => {
                let n = config.get("num_labels").and_then(Value::as_u64).unwrap_or(2) as usize;
                (0..n).map(|i| format!("LABEL_{i}")).collect()
            }
        };
        let problem_type = config.get("problem_type").and_then(Value::as_str);
        let function = match problem_type {
            Some("regression") => ScoreFunction::Identity,
            Some("multi_label_classification") => ScoreFunction::Sigmoid,
            _ if labels.len() == 1 => ScoreFunction::Sigmoid,
            _ => ScoreFunction::Softmax,
        };
        Ok(Self { labels, function })
    }
}
