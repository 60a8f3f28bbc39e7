//! The numbers behind a forward pass, for people studying the math:
//! attention probabilities and hidden states of every layer, named and
//! shaped as transformers returns them with `output_attentions=True,
//! output_hidden_states=True`, and written to a safetensors file.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use ndarray::{ArrayD, Dimension};
use safetensors::tensor::{Dtype, TensorView};

/// Named tensors plus string metadata (the token strings).
#[derive(Clone, Debug, Default)]
pub struct Study {
    /// `(name, tensor)` in the order written, e.g. `("attentions.0", (B, nh, T, T))`.
    pub tensors: Vec<(String, ArrayD<f32>)>,
    /// e.g. `tokens` -> a JSON list of token-string lists, one per input.
    pub metadata: HashMap<String, String>,
}

impl Study {
    /// Adds `field.0`, `field.1`, ... from a list of per-layer tensors.
    pub fn push_all<D: Dimension>(&mut self, field: &str, values: &[ndarray::Array<f32, D>]) {
        for (i, v) in values.iter().enumerate() {
            self.tensors.push((format!("{field}.{i}"), v.clone().into_dyn()));
        }
    }

    /// The tensor of this name, if present.
    pub fn get(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Keeps only attentions and/or hidden states.
    pub fn select(mut self, attentions: bool, hidden_states: bool) -> Self {
        self.tensors.retain(|(name, _)| {
            let is_attention = name.contains("attentions.");
            (is_attention && attentions) || (!is_attention && hidden_states)
        });
        self
    }

    /// Writes a safetensors file (f32, little-endian) with the metadata.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let data: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.clone(), data, t.shape().to_vec())
            })
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(name, data, shape)| {
                let view = TensorView::new(Dtype::F32, shape.clone(), data).expect("size matches shape");
                (name.clone(), view)
            })
            .collect();
        safetensors::serialize_to_file(views, &Some(self.metadata.clone()), path)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Token strings of each row of ids, as the tokenizer's vocabulary spells them.
pub fn token_strings(tokenizer: &crate::tokenizer::TextTokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&id| tokenizer.id_to_token(id).unwrap_or_else(|| format!("<{id}>"))).collect()
}
