//! What every encoder-only model (BERT, DistilBERT) offers the pipelines.

use ndarray::{Array2, Array3, Array4};

use crate::tokenizer::Batch;
use crate::Keep;

/// The outputs of an encoder forward pass; with [`Keep::AllLayers`], laid out
/// as transformers' `output_hidden_states=True, output_attentions=True` returns them.
#[derive(Clone, Debug)]
pub struct EncoderOutput {
    /// `(B, T, C)`: the last layer's output.
    pub last_hidden_state: Array3<f32>,
    /// With [`Keep::AllLayers`], `L + 1` tensors `(B, T, C)`: the embedding
    /// output, then each layer's output; else empty.
    pub hidden_states: Vec<Array3<f32>>,
    /// With [`Keep::AllLayers`], `L` tensors `(B, nh, T, T)`: each layer's
    /// attention probabilities; else empty.
    pub attentions: Vec<Array4<f32>>,
}

/// An encoder-only transformer.
pub trait Encoder: Send + Sync {
    /// Runs the model on a padded batch, keeping what `keep` says.
    fn forward(&self, batch: &Batch, keep: Keep) -> EncoderOutput;
    /// The longest input the position table allows.
    fn max_positions(&self) -> usize;
    /// The number of rows of the word-embedding table.
    fn vocab_size(&self) -> usize;
    /// The id used for padding.
    fn pad_token_id(&self) -> u32;
    /// Layer `layer` in the common form of the walk-through, or `None` past the last layer.
    fn block(&self, layer: usize) -> Option<crate::explain::Block>;
}

/// An encoder with a sequence-classification head.
pub trait SequenceClassifier: Send + Sync {
    /// The encoder underneath.
    fn encoder(&self) -> &dyn Encoder;
    /// Classification logits `(B, num_labels)` and the encoder's outputs.
    fn classify(&self, batch: &Batch, keep: Keep) -> (Array2<f32>, EncoderOutput);
}
