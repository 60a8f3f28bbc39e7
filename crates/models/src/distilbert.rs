//! DistilBERT (Sanh et al., 2019): `DistilBertModel` and
//! `DistilBertForSequenceClassification` (the sst-2 sentiment model's class).
//!
//! Shape legend: `B` batch, `T` tokens, `C` = `dim`, `nh` = `n_heads`,
//! `hs = C / nh`, `I` = `hidden_dim`, `N = B * T`.
//!
//! A post-LayerNorm encoder like BERT's, without token types or pooler; the
//! head is `classifier(relu(pre_classifier(h_[CLS])))`. The LayerNorm epsilon
//! is fixed at 1e-12 in transformers' code, not read from the config.

use anyhow::{bail, Result};
use ndarray::{Array2, Array3, Array4, Axis};

use transformer::{
    multi_head_attention, sinusoidal_positions, Activation, AttentionMask, Embedding, LayerNorm, Linear, Projections,
};

use crate::config::{self, DistilBertConfig};
use crate::encoder::{Encoder, EncoderOutput, SequenceClassifier};
use crate::explain::Block;
use crate::tokenizer::Batch;
use crate::weights::Weights;
use crate::Keep;

/// `nn.LayerNorm(dim, eps=1e-12)` throughout DistilBERT's code.
const LAYER_NORM_EPS: f32 = 1e-12;

/// `embeddings.*`: word + position, then LayerNorm.
pub struct Embeddings {
    /// `(V, C)`
    pub word_embeddings: Embedding,
    /// `(max_position_embeddings, C)`: learned, or the sinusoidal table.
    pub position_embeddings: Embedding,
    /// checkpoint name `LayerNorm`
    pub layer_norm: LayerNorm,
}

/// `attention.*`: `q_lin`, `k_lin`, `v_lin`, `out_lin`.
pub struct MultiHeadSelfAttention {
    pub q_lin: Linear,
    pub k_lin: Linear,
    pub v_lin: Linear,
    pub out_lin: Linear,
}

/// `ffn.*`: `lin2(act(lin1(x)))`.
pub struct Ffn {
    /// `(I, C)`
    pub lin1: Linear,
    /// `(C, I)`
    pub lin2: Linear,
}

/// `transformer.layer.{i}.*`
pub struct TransformerBlock {
    pub attention: MultiHeadSelfAttention,
    pub sa_layer_norm: LayerNorm,
    pub ffn: Ffn,
    pub output_layer_norm: LayerNorm,
}

impl TransformerBlock {
    /// ```text
    /// a = sa_layer_norm(x + MultiHead(x))
    /// y = output_layer_norm(a + lin2(act(lin1(a))))
    /// ```
    /// # Shapes
    /// `(N, C) -> (N, C)`, and the attention probabilities `(B, nh, T, T)`.
    ///
    /// The math: `docs/attention.md`, section "7. Each model's quirks".
    fn forward(
        &self,
        x: &Array2<f32>,
        batch: usize,
        n_head: usize,
        act: Activation,
        mask: &AttentionMask,
        keep_probs: bool,
    ) -> (Array2<f32>, Option<Array4<f32>>) {
        let at = &self.attention;
        let proj = Projections { query: &at.q_lin, key: &at.k_lin, value: &at.v_lin, output: &at.out_lin };
        let (sa, probs) = multi_head_attention(x.view(), x.view(), batch, n_head, &proj, Some(mask), keep_probs);
        let a = self.sa_layer_norm.forward((sa + x).view());
        // (N, C) -> (N, I)
        let mut h = self.ffn.lin1.forward(a.view());
        act.apply(&mut h);
        // (N, I) -> (N, C)
        let y = self.ffn.lin2.forward(h.view()) + &a;
        (self.output_layer_norm.forward(y.view()), probs)
    }
}

/// `DistilBertModel`.
pub struct DistilBertModel {
    pub config: DistilBertConfig,
    activation: Activation,
    pub embeddings: Embeddings,
    /// `transformer.layer.{i}`
    pub transformer: Vec<TransformerBlock>,
}

impl DistilBertModel {
    /// Loads from the scope holding `embeddings.*` and `transformer.*`.
    ///
    /// With `sinusoidal_pos_embds`, the position table is computed by
    /// [`sinusoidal_positions`]; transformers also stores it in the checkpoint,
    /// and we check the stored table matches the computed one.
    ///
    /// # Errors
    /// On a missing tensor, a wrong shape, or an unsupported config option.
    pub fn load(w: &Weights, config: DistilBertConfig) -> Result<Self> {
        if !config.dim.is_multiple_of(config.n_heads) {
            bail!("dim {} is not divisible by n_heads {}", config.dim, config.n_heads);
        }
        let activation = config::activation(&config.activation)?;
        let (c, i) = (config.dim, config.hidden_dim);
        let e = w.pp("embeddings");
        let position_embeddings = if config.sinusoidal_pos_embds {
            let table = sinusoidal_positions(config.max_position_embeddings, c);
            let name = "position_embeddings";
            if e.pp(name).contains("weight") {
                let stored = e.pp(name).get2("weight", (config.max_position_embeddings, c))?;
                let diff = stored.iter().zip(table.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                if diff > 1e-6 {
                    bail!(
                        "tensor `{}` differs from the sinusoidal table by {diff} although sinusoidal_pos_embds is true",
                        e.pp(name).full_name("weight")
                    );
                }
            }
            Embedding { weight: table.into() }
        } else {
            e.pp("position_embeddings").embedding(config.max_position_embeddings, c)?
        };
        let embeddings = Embeddings {
            word_embeddings: e.pp("word_embeddings").embedding(config.vocab_size, c)?,
            position_embeddings,
            layer_norm: e.pp("LayerNorm").layer_norm(c, LAYER_NORM_EPS)?,
        };
        let mut transformer = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let lw = w.pp("transformer").pp("layer").pp(l);
            let at = lw.pp("attention");
            transformer.push(TransformerBlock {
                attention: MultiHeadSelfAttention {
                    q_lin: at.pp("q_lin").linear(c, c)?,
                    k_lin: at.pp("k_lin").linear(c, c)?,
                    v_lin: at.pp("v_lin").linear(c, c)?,
                    out_lin: at.pp("out_lin").linear(c, c)?,
                },
                sa_layer_norm: lw.pp("sa_layer_norm").layer_norm(c, LAYER_NORM_EPS)?,
                ffn: Ffn { lin1: lw.pp("ffn").pp("lin1").linear(c, i)?, lin2: lw.pp("ffn").pp("lin2").linear(i, c)? },
                output_layer_norm: lw.pp("output_layer_norm").layer_norm(c, LAYER_NORM_EPS)?,
            });
        }
        Ok(Self { config, activation, embeddings, transformer })
    }
}

impl Encoder for DistilBertModel {
    fn forward(&self, batch: &Batch, keep: Keep) -> EncoderOutput {
        let (b, t) = batch.dim();
        let c = self.config.dim;
        let e = &self.embeddings;
        let ids: Vec<u32> = batch.input_ids.iter().copied().collect();
        let positions: Vec<u32> = (0..b).flat_map(|_| 0..t as u32).collect();
        // (N, C)
        let mut x =
            e.layer_norm.forward((e.word_embeddings.forward(&ids) + e.position_embeddings.forward(&positions)).view());
        let unflatten =
            |x: &Array2<f32>| -> Array3<f32> { x.clone().into_shape_with_order((b, t, c)).expect("contiguous") };
        let mask = AttentionMask::new(Some(batch.attention_mask.view()), b, t, t, false);
        let all = keep.all_layers();
        let (mut hidden_states, mut attentions) = (Vec::new(), Vec::new());
        keep.record(&mut hidden_states, || unflatten(&x));
        for block in &self.transformer {
            let (y, probs) = block.forward(&x, b, self.config.n_heads, self.activation, &mask, all);
            x = y;
            keep.record(&mut hidden_states, || unflatten(&x));
            attentions.extend(probs);
        }
        // (N, C) -> (B, T, C)
        let last_hidden_state = x.into_shape_with_order((b, t, c)).expect("contiguous");
        EncoderOutput { last_hidden_state, hidden_states, attentions }
    }

    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn pad_token_id(&self) -> u32 {
        self.config.pad_token_id.unwrap_or(0)
    }

    fn block(&self, layer: usize) -> Option<Block> {
        let l = self.transformer.get(layer)?;
        Some(Block {
            pre_ln: false,
            attn_ln: l.sa_layer_norm.clone(),
            ffn_ln: l.output_layer_norm.clone(),
            query: l.attention.q_lin.clone(),
            key: l.attention.k_lin.clone(),
            value: l.attention.v_lin.clone(),
            output: l.attention.out_lin.clone(),
            fc1: l.ffn.lin1.clone(),
            fc2: l.ffn.lin2.clone(),
            activation: self.activation,
            n_head: self.config.n_heads,
            causal: false,
            final_ln: None,
        })
    }
}

/// `DistilBertForSequenceClassification`: `distilbert.*`, `pre_classifier`, `classifier`.
pub struct DistilBertForSequenceClassification {
    pub distilbert: DistilBertModel,
    /// `(C, C)`
    pub pre_classifier: Linear,
    /// `(num_labels, C)`
    pub classifier: Linear,
}

impl DistilBertForSequenceClassification {
    /// Loads from the root scope.
    ///
    /// # Errors
    /// As [`DistilBertModel::load`].
    pub fn load(w: &Weights, config: DistilBertConfig, num_labels: usize) -> Result<Self> {
        let c = config.dim;
        Ok(Self {
            distilbert: DistilBertModel::load(&w.pp("distilbert"), config)?,
            pre_classifier: w.pp("pre_classifier").linear(c, c)?,
            classifier: w.pp("classifier").linear(c, num_labels)?,
        })
    }
}

impl SequenceClassifier for DistilBertForSequenceClassification {
    fn encoder(&self) -> &dyn Encoder {
        &self.distilbert
    }

    fn classify(&self, batch: &Batch, keep: Keep) -> (Array2<f32>, EncoderOutput) {
        let out = self.distilbert.forward(batch, keep);
        // (B, T, C) -> (B, C): the [CLS] token
        let cls = out.last_hidden_state.index_axis(Axis(1), 0).to_owned();
        let h = self.pre_classifier.forward(cls.view()).mapv(|v| v.max(0.0));
        // (B, C) -> (B, num_labels)
        (self.classifier.forward(h.view()), out)
    }
}
