//! BERT (Devlin et al., 2018): `BertModel` and `BertForSequenceClassification`.
//!
//! Shape legend: `B` batch, `T` tokens, `C` hidden size, `nh` heads,
//! `hs = C / nh`, `I` intermediate (feed-forward) size, `N = B * T`.
//!
//! A post-LayerNorm encoder: each sub-layer is `x = LayerNorm(x + f(x))`.
//! Struct fields are named after the checkpoint's tensor names, so
//! `encoder.layer.3.attention.self.query.weight` is
//! `self.encoder.layer[3].attention.self_.query.weight`.

use anyhow::{bail, Result};
use ndarray::{s, Array2, Array3, Axis};

use transformer::{multi_head_attention, Activation, AttentionMask, Embedding, LayerNorm, Linear, Projections};

use crate::config::{self, BertConfig};
use crate::encoder::{Encoder, EncoderOutput, SequenceClassifier};
use crate::explain::Block;
use crate::tokenizer::Batch;
use crate::weights::Weights;
use crate::Keep;

/// `embeddings.*`: word + position + token type, then LayerNorm.
pub struct BertEmbeddings {
    /// `(V, C)`
    pub word_embeddings: Embedding,
    /// `(max_position_embeddings, C)`
    pub position_embeddings: Embedding,
    /// `(type_vocab_size, C)`
    pub token_type_embeddings: Embedding,
    /// checkpoint name `LayerNorm`
    pub layer_norm: LayerNorm,
}

/// `attention.self.*`: the query, key and value projections.
pub struct BertSelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
}

/// `attention.output.*` and `output.*`: projection, residual, LayerNorm.
pub struct BertOutput {
    pub dense: Linear,
    /// checkpoint name `LayerNorm`
    pub layer_norm: LayerNorm,
}

impl BertOutput {
    /// `LayerNorm(residual + dense(x))`.
    ///
    /// # Shapes
    /// `x` `(N, in)`, `residual` `(N, C)` -> `(N, C)`
    ///
    /// The math: `docs/attention.md`, section "7. Each model's quirks".
    fn forward(&self, x: &Array2<f32>, residual: &Array2<f32>) -> Array2<f32> {
        let y = self.dense.forward(x.view()) + residual;
        self.layer_norm.forward(y.view())
    }
}

/// `attention.*`
pub struct BertAttention {
    /// checkpoint name `self`
    pub self_: BertSelfAttention,
    pub output: BertOutput,
}

/// `encoder.layer.{i}.*`
pub struct BertLayer {
    pub attention: BertAttention,
    /// `intermediate.dense`, `(I, C)`
    pub intermediate: Linear,
    /// `output.dense` `(C, I)` and `output.LayerNorm`
    pub output: BertOutput,
}

impl BertLayer {
    /// ```text
    /// a = LayerNorm(x + MultiHead(x))
    /// y = LayerNorm(a + W_2 act(W_1 a))
    /// ```
    /// # Shapes
    /// `x` `(N, C)` -> `(N, C)`, and the attention probabilities `(B, nh, T, T)`.
    fn forward(
        &self,
        x: &Array2<f32>,
        batch: usize,
        n_head: usize,
        act: Activation,
        mask: &AttentionMask,
        keep_probs: bool,
    ) -> (Array2<f32>, Option<ndarray::Array4<f32>>) {
        let sa = &self.attention.self_;
        let proj =
            Projections { query: &sa.query, key: &sa.key, value: &sa.value, output: &self.attention.output.dense };
        // (N, C) -> (N, C): attention, already through attention.output.dense
        let (attn, probs) = multi_head_attention(x.view(), x.view(), batch, n_head, &proj, Some(mask), keep_probs);
        let a = self.attention.output.layer_norm.forward((attn + x).view());
        // (N, C) -> (N, I)
        let mut h = self.intermediate.forward(a.view());
        act.apply(&mut h);
        // (N, I) -> (N, C)
        (self.output.forward(&h, &a), probs)
    }
}

/// `pooler.dense`: `tanh(W h_[CLS] + b)`, used by the classification head.
pub struct BertPooler {
    pub dense: Linear,
}

/// `BertModel`.
pub struct BertModel {
    pub config: BertConfig,
    activation: Activation,
    pub embeddings: BertEmbeddings,
    /// `encoder.layer.{i}`
    pub encoder: Vec<BertLayer>,
    pub pooler: Option<BertPooler>,
}

impl BertModel {
    /// Loads `BertModel` from the scope that holds `embeddings.*`, `encoder.*`
    /// and (optionally) `pooler.*`.
    ///
    /// # Errors
    /// On a missing tensor, a wrong shape, or an unsupported config option.
    pub fn load(w: &Weights, config: BertConfig) -> Result<Self> {
        if config.position_embedding_type != "absolute" {
            bail!(
                "position_embedding_type `{}` is not supported (supported: absolute)",
                config.position_embedding_type
            );
        }
        if !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            bail!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                config.hidden_size,
                config.num_attention_heads
            );
        }
        let activation = config::activation(&config.hidden_act)?;
        let (c, i, eps) = (config.hidden_size, config.intermediate_size, config.layer_norm_eps);
        let e = w.pp("embeddings");
        let embeddings = BertEmbeddings {
            word_embeddings: e.pp("word_embeddings").embedding(config.vocab_size, c)?,
            position_embeddings: e.pp("position_embeddings").embedding(config.max_position_embeddings, c)?,
            token_type_embeddings: e.pp("token_type_embeddings").embedding(config.type_vocab_size, c)?,
            layer_norm: e.pp("LayerNorm").layer_norm(c, eps)?,
        };
        let mut encoder = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let lw = w.pp("encoder").pp("layer").pp(l);
            let (att, sa) = (lw.pp("attention"), lw.pp("attention").pp("self"));
            encoder.push(BertLayer {
                attention: BertAttention {
                    self_: BertSelfAttention {
                        query: sa.pp("query").linear(c, c)?,
                        key: sa.pp("key").linear(c, c)?,
                        value: sa.pp("value").linear(c, c)?,
                    },
                    output: BertOutput {
                        dense: att.pp("output").pp("dense").linear(c, c)?,
                        layer_norm: att.pp("output").pp("LayerNorm").layer_norm(c, eps)?,
                    },
                },
                intermediate: lw.pp("intermediate").pp("dense").linear(c, i)?,
                output: BertOutput {
                    dense: lw.pp("output").pp("dense").linear(i, c)?,
                    layer_norm: lw.pp("output").pp("LayerNorm").layer_norm(c, eps)?,
                },
            });
        }
        let pooler = if w.pp("pooler").pp("dense").contains("weight") {
            Some(BertPooler { dense: w.pp("pooler").pp("dense").linear(c, c)? })
        } else {
            None
        };
        Ok(Self { config, activation, embeddings, encoder, pooler })
    }

    /// Embedding sum and LayerNorm.
    ///
    /// # Shapes
    /// ids `(B, T)` -> `(N, C)`
    fn embed(&self, batch: &Batch) -> Array2<f32> {
        let (b, t) = batch.dim();
        let e = &self.embeddings;
        let ids: Vec<u32> = batch.input_ids.iter().copied().collect();
        let types: Vec<u32> = batch.token_type_ids.iter().copied().collect();
        // positions 0..T for every row (inputs are right-padded)
        let positions: Vec<u32> = (0..b).flat_map(|_| 0..t as u32).collect();
        let x = e.word_embeddings.forward(&ids)
            + e.position_embeddings.forward(&positions)
            + e.token_type_embeddings.forward(&types);
        e.layer_norm.forward(x.view())
    }
}

/// `(N, C)` -> `(B, T, C)`
fn unflatten(x: &Array2<f32>, b: usize, t: usize) -> Array3<f32> {
    x.clone().into_shape_with_order((b, t, x.ncols())).expect("hidden states are contiguous")
}

impl Encoder for BertModel {
    fn forward(&self, batch: &Batch, keep: Keep) -> EncoderOutput {
        let (b, t) = batch.dim();
        let all = keep.all_layers();
        let mask = AttentionMask::new(Some(batch.attention_mask.view()), b, t, t, false);
        let mut x = self.embed(batch);
        let (mut hidden_states, mut attentions) = (Vec::new(), Vec::new());
        keep.record(&mut hidden_states, || unflatten(&x, b, t));
        for layer in &self.encoder {
            let (y, probs) = layer.forward(&x, b, self.config.num_attention_heads, self.activation, &mask, all);
            x = y;
            keep.record(&mut hidden_states, || unflatten(&x, b, t));
            attentions.extend(probs);
        }
        // (N, C) -> (B, T, C)
        let c = x.ncols();
        let last_hidden_state = x.into_shape_with_order((b, t, c)).expect("hidden states are contiguous");
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
        let l = self.encoder.get(layer)?;
        Some(Block {
            pre_ln: false,
            attn_ln: l.attention.output.layer_norm.clone(),
            ffn_ln: l.output.layer_norm.clone(),
            query: l.attention.self_.query.clone(),
            key: l.attention.self_.key.clone(),
            value: l.attention.self_.value.clone(),
            output: l.attention.output.dense.clone(),
            fc1: l.intermediate.clone(),
            fc2: l.output.dense.clone(),
            activation: self.activation,
            n_head: self.config.num_attention_heads,
            causal: false,
            final_ln: None,
        })
    }
}

/// `BertForSequenceClassification`: `bert.*` with its pooler, then `classifier`.
pub struct BertForSequenceClassification {
    pub bert: BertModel,
    /// `(num_labels, C)`
    pub classifier: Linear,
}

impl BertForSequenceClassification {
    /// Loads from the root scope (`bert.*`, `classifier.*`).
    ///
    /// # Errors
    /// As [`BertModel::load`]; also if the pooler is missing.
    pub fn load(w: &Weights, config: BertConfig, num_labels: usize) -> Result<Self> {
        let c = config.hidden_size;
        let bert = BertModel::load(&w.pp("bert"), config)?;
        if bert.pooler.is_none() {
            bail!("tensor `bert.pooler.dense.weight` not found: BertForSequenceClassification needs the pooler");
        }
        Ok(Self { bert, classifier: w.pp("classifier").linear(c, num_labels)? })
    }
}

impl SequenceClassifier for BertForSequenceClassification {
    fn encoder(&self) -> &dyn Encoder {
        &self.bert
    }

    fn classify(&self, batch: &Batch, keep: Keep) -> (Array2<f32>, EncoderOutput) {
        let out = self.bert.forward(batch, keep);
        // (B, T, C) -> (B, C): the [CLS] token
        let cls = out.last_hidden_state.index_axis(Axis(1), 0).to_owned();
        let pooler = self.bert.pooler.as_ref().expect("checked at load");
        let pooled = pooler.dense.forward(cls.view()).mapv(f32::tanh);
        // (B, C) -> (B, num_labels)
        let logits = self.classifier.forward(pooled.slice(s![.., ..]));
        (logits, out)
    }
}
