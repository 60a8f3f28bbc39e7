//! The activation functions a checkpoint's config can name.

use ndarray::Array2;
use rayon::prelude::*;

/// A pointwise non-linearity, selected by the config's `hidden_act` /
/// `activation` / `activation_function` string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `"gelu"`: `0.5 x (1 + erf(x / sqrt 2))` (BERT, DistilBERT, BART).
    Gelu,
    /// `"gelu_new"` (also `"gelu_pytorch_tanh"`): the tanh approximation (GPT-2).
    GeluNew,
    /// `"relu"`: `max(x, 0)`.
    Relu,
}

impl Activation {
    /// The names accepted by [`Activation::from_name`], for error messages.
    pub const SUPPORTED: &'static str = "gelu, gelu_new, gelu_pytorch_tanh, relu";

    /// Parses a config string; `None` for a name this engine does not implement.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Self::GeluNew),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }

    /// Applies the activation to every element, in place, rows in parallel.
    pub fn apply(self, x: &mut Array2<f32>) {
        let f: fn(&mut [f32]) = match self {
            Self::Gelu => tensor::gelu_erf_inplace,
            Self::GeluNew => tensor::gelu_tanh_inplace,
            Self::Relu => |c| c.iter_mut().for_each(|v| *v = v.max(0.0)),
        };
        x.as_slice_mut()
            .expect("activations are computed on freshly allocated, contiguous arrays")
            .par_chunks_mut(4096)
            .for_each(f);
    }
}
