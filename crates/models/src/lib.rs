//! Hugging Face checkpoints (`config.json`, `model.safetensors`,
//! `tokenizer.json`) mapped onto hand-written model graphs, and the pipeline
//! tasks built on them.
//!
//! - [`weights`]: memory-mapped safetensors and the path-scoped, shape-checking loader;
//! - [`config`]: `config.json` with Hugging Face field names;
//! - [`tokenizer`]: `tokenizer.json`, configured as Python transformers uses it;
//! - [`bert`], [`distilbert`]: the encoder models;
//! - [`auto`]: choosing the architecture from `model_type`;
//! - [`pipelines`]: the tasks (`text-classification`, `feature-extraction`);
//! - [`hub`]: resolving a model id in the local Hugging Face cache.

pub mod auto;
pub mod bart;
pub mod bert;
pub mod config;
pub mod distilbert;
pub mod encoder;
pub mod explain;
pub mod generation;
pub mod gpt2;
pub mod hub;
pub mod pipelines;
pub mod study;
pub mod tokenizer;
pub mod weights;

/// What a forward pass keeps besides its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Only what the result needs: a pipeline's run.
    Result,
    /// Every layer's attention probabilities and hidden states, as transformers
    /// returns them with `output_attentions=True, output_hidden_states=True`:
    /// the study tools.
    AllLayers,
}

impl Keep {
    /// Whether every layer's tensors are kept.
    pub fn all_layers(self) -> bool {
        self == Keep::AllLayers
    }

    /// Appends `make()` to `layers` when every layer's tensors are kept
    /// (`make` does not run otherwise).
    pub fn record<T>(self, layers: &mut Vec<T>, make: impl FnOnce() -> T) {
        if self.all_layers() {
            layers.push(make());
        }
    }
}
