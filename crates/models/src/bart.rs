//! BART (Lewis et al., 2019): `BartForConditionalGeneration`, an
//! encoder-decoder for summarization (sshleifer/distilbart-cnn-12-6 and kin).
//!
//! Shape legend: `B` batch (beams), `S` source tokens, `T` new decoder tokens
//! this call, `P` cached decoder positions, `C` = `d_model`, `nh` heads,
//! `hs = C / nh`, `F` feed-forward size, `V` vocabulary, `N = B * T`.
//!
//! Both stacks are post-LayerNorm: each sub-layer is `x = LayerNorm(x + f(x))`.
//! A decoder layer has three: causal self-attention (with a KV cache),
//! cross-attention over the encoder output, feed-forward.
//!
//! Checkpoint quirks, all handled here:
//! - `model.shared.weight` is the token embedding of both stacks and the
//!   output projection; `model.encoder.embed_tokens.weight`,
//!   `model.decoder.embed_tokens.weight` and `lm_head.weight` are tied to it
//!   and may be absent from the file;
//! - learned positions are looked up at `position + 2` ([`POSITION_OFFSET`]),
//!   so the tables have `max_position_embeddings + 2` rows;
//! - token embeddings are multiplied by `sqrt(d_model)` when `scale_embedding`;
//! - `final_logits_bias` `(1, V)` is added to the logits.

use anyhow::{bail, Result};
use ndarray::{Array1, Array2, Array3, Array4, ArrayView2, Axis};
use serde::Deserialize;

use transformer::{
    attention, multi_head_attention, split_heads, Activation, AttentionMask, Embedding, LayerCache, LayerNorm, Linear,
    Projections,
};

use crate::config;
use crate::encoder::EncoderOutput;
use crate::explain::Block;
use crate::generation::Decoder;
use crate::weights::Weights;
use crate::Keep;

/// BART's learned positional embeddings start at row 2 (a fairseq legacy:
/// rows 0 and 1 were reserved for padding).
pub const POSITION_OFFSET: usize = 2;

/// `nn.LayerNorm` default epsilon, which BART uses throughout.
const LAYER_NORM_EPS: f32 = 1e-5;

/// `BartConfig` (distilbart-cnn-12-6 values in comments).
#[derive(Clone, Debug, Deserialize)]
pub struct BartConfig {
    /// 50264
    pub vocab_size: usize,
    /// 1024
    pub d_model: usize,
    /// 12
    pub encoder_layers: usize,
    /// 6
    pub decoder_layers: usize,
    /// 16
    pub encoder_attention_heads: usize,
    /// 16
    pub decoder_attention_heads: usize,
    /// 4096
    pub encoder_ffn_dim: usize,
    /// 4096
    pub decoder_ffn_dim: usize,
    /// "gelu"
    #[serde(default = "default_gelu")]
    pub activation_function: String,
    /// 1024
    pub max_position_embeddings: usize,
    /// false
    #[serde(default)]
    pub scale_embedding: bool,
    /// 1
    #[serde(default = "default_pad")]
    pub pad_token_id: u32,
    /// false for BART; true would be mBART's pre-LayerNorm, not implemented
    #[serde(default)]
    pub normalize_before: bool,
    /// false for BART; true is mBART's extra final LayerNorm, not implemented
    #[serde(default)]
    pub add_final_layer_norm: bool,
}

fn default_gelu() -> String {
    "gelu".into()
}
fn default_pad() -> u32 {
    1
}

/// `self_attn` / `encoder_attn`: four projections with biases.
pub struct BartAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
}

impl BartAttention {
    fn load(w: &Weights, c: usize) -> Result<Self> {
        Ok(Self {
            q_proj: w.pp("q_proj").linear(c, c)?,
            k_proj: w.pp("k_proj").linear(c, c)?,
            v_proj: w.pp("v_proj").linear(c, c)?,
            out_proj: w.pp("out_proj").linear(c, c)?,
        })
    }

    fn projections(&self) -> Projections<'_> {
        Projections { query: &self.q_proj, key: &self.k_proj, value: &self.v_proj, output: &self.out_proj }
    }
}

/// `fc2(act(fc1(x)))`, shared by both layer kinds.
fn feed_forward(fc1: &Linear, fc2: &Linear, act: Activation, x: &Array2<f32>) -> Array2<f32> {
    // (N, C) -> (N, F) -> (N, C)
    let mut h = fc1.forward(x.view());
    act.apply(&mut h);
    fc2.forward(h.view())
}

/// `model.encoder.layers.{i}`
pub struct BartEncoderLayer {
    pub self_attn: BartAttention,
    pub self_attn_layer_norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub final_layer_norm: LayerNorm,
}

/// `model.decoder.layers.{i}`
pub struct BartDecoderLayer {
    pub self_attn: BartAttention,
    pub self_attn_layer_norm: LayerNorm,
    /// cross-attention: queries from the decoder, keys and values from the encoder output
    pub encoder_attn: BartAttention,
    pub encoder_attn_layer_norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub final_layer_norm: LayerNorm,
}

/// `model.encoder` / `model.decoder` embeddings: positions and the embedding LayerNorm.
pub struct BartStackEmbeddings {
    /// `(max_position_embeddings + 2, C)`
    pub embed_positions: Embedding,
    pub layernorm_embedding: LayerNorm,
}

/// `BartForConditionalGeneration`.
pub struct BartForConditionalGeneration {
    pub config: BartConfig,
    activation: Activation,
    /// `sqrt(C)` with `scale_embedding`, else 1
    embed_scale: f32,
    /// `model.shared`, `(V, C)`
    pub shared: Embedding,
    pub encoder: BartStackEmbeddings,
    pub encoder_layers: Vec<BartEncoderLayer>,
    pub decoder: BartStackEmbeddings,
    pub decoder_layers: Vec<BartDecoderLayer>,
    /// `(V)`, from `final_logits_bias` `(1, V)`
    pub final_logits_bias: Array1<f32>,
    /// `(V, C)`: the checkpoint's own `lm_head.weight`, or `shared`'s matrix when tied.
    pub lm_head: Linear,
}

/// The decoder's caches for one generation: self-attention keys and values
/// grow by one position per step; cross-attention keys and values are
/// projected from the encoder output once.
pub struct BartCache {
    self_attn: Vec<LayerCache>,
    /// per layer, `(B, nh, S, hs)` keys and values
    cross_attn: Vec<(Array4<f32>, Array4<f32>)>,
}

impl BartCache {
    /// Cached decoder positions.
    pub fn len(&self) -> usize {
        self.self_attn.first().map_or(0, LayerCache::len)
    }

    /// Whether no decoder position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a decoder pass returns.
pub struct BartDecoderOutput {
    /// `(B, T, V)` with all positions, or `(B, 1, V)` for the last one only.
    pub logits: Array3<f32>,
    /// With [`Keep::AllLayers`], `decoder_layers + 1` tensors `(B, T, C)`; else empty.
    pub hidden_states: Vec<Array3<f32>>,
    /// With [`Keep::AllLayers`], `decoder_layers` tensors `(B, nh, T, P + T)`; else empty.
    pub self_attentions: Vec<Array4<f32>>,
    /// With [`Keep::AllLayers`], `decoder_layers` tensors `(B, nh, T, S)`; else empty.
    pub cross_attentions: Vec<Array4<f32>>,
}

impl BartForConditionalGeneration {
    /// Loads from the root scope (`model.*`, `final_logits_bias`, optional `lm_head`).
    ///
    /// # Errors
    /// On a missing tensor, a wrong shape, or an unsupported config option.
    pub fn load(root: &Weights, config: BartConfig) -> Result<Self> {
        if config.normalize_before || config.add_final_layer_norm {
            bail!("pre-LayerNorm (mBART-style) configs are not supported (normalize_before / add_final_layer_norm)");
        }
        for heads in [config.encoder_attention_heads, config.decoder_attention_heads] {
            if !config.d_model.is_multiple_of(heads) {
                bail!("d_model {} is not divisible by {heads} attention heads", config.d_model);
            }
        }
        let activation = config::activation(&config.activation_function)?;
        let (c, v) = (config.d_model, config.vocab_size);
        let m = root.pp("model");
        let positions = config.max_position_embeddings + POSITION_OFFSET;
        let stack = |name: &str| -> Result<BartStackEmbeddings> {
            let w = m.pp(name);
            Ok(BartStackEmbeddings {
                embed_positions: w.pp("embed_positions").embedding(positions, c)?,
                layernorm_embedding: w.pp("layernorm_embedding").layer_norm(c, LAYER_NORM_EPS)?,
            })
        };
        let mut encoder_layers = Vec::with_capacity(config.encoder_layers);
        for l in 0..config.encoder_layers {
            let w = m.pp("encoder").pp("layers").pp(l);
            encoder_layers.push(BartEncoderLayer {
                self_attn: BartAttention::load(&w.pp("self_attn"), c)?,
                self_attn_layer_norm: w.pp("self_attn_layer_norm").layer_norm(c, LAYER_NORM_EPS)?,
                fc1: w.pp("fc1").linear(c, config.encoder_ffn_dim)?,
                fc2: w.pp("fc2").linear(config.encoder_ffn_dim, c)?,
                final_layer_norm: w.pp("final_layer_norm").layer_norm(c, LAYER_NORM_EPS)?,
            });
        }
        let mut decoder_layers = Vec::with_capacity(config.decoder_layers);
        for l in 0..config.decoder_layers {
            let w = m.pp("decoder").pp("layers").pp(l);
            decoder_layers.push(BartDecoderLayer {
                self_attn: BartAttention::load(&w.pp("self_attn"), c)?,
                self_attn_layer_norm: w.pp("self_attn_layer_norm").layer_norm(c, LAYER_NORM_EPS)?,
                encoder_attn: BartAttention::load(&w.pp("encoder_attn"), c)?,
                encoder_attn_layer_norm: w.pp("encoder_attn_layer_norm").layer_norm(c, LAYER_NORM_EPS)?,
                fc1: w.pp("fc1").linear(c, config.decoder_ffn_dim)?,
                fc2: w.pp("fc2").linear(config.decoder_ffn_dim, c)?,
                final_layer_norm: w.pp("final_layer_norm").layer_norm(c, LAYER_NORM_EPS)?,
            });
        }
        // Tied embeddings: `model.shared`, or the first tied copy the file has.
        let shared_name = ["model.shared", "model.encoder.embed_tokens", "model.decoder.embed_tokens"]
            .into_iter()
            .find(|n| root.contains(&format!("{n}.weight")))
            .unwrap_or("model.shared");
        let shared = root.pp(shared_name).embedding(v, c)?;
        let final_logits_bias = root.get2("final_logits_bias", (1, v))?.index_axis_move(Axis(0), 0);
        let lm_head = if root.contains("lm_head.weight") {
            root.lm_head(root.matrix("lm_head.weight", (v, c))?, "lm_head.weight")
        } else {
            root.lm_head(shared.weight.clone(), &format!("{shared_name}.weight"))
        };
        let embed_scale = if config.scale_embedding { (c as f32).sqrt() } else { 1.0 };
        Ok(Self {
            encoder: stack("encoder")?,
            decoder: stack("decoder")?,
            encoder_layers,
            decoder_layers,
            shared,
            final_logits_bias,
            lm_head,
            embed_scale,
            activation,
            config,
        })
    }

    /// `layernorm_embedding(embed_tokens(ids) * embed_scale + embed_positions(past + t + 2))`.
    ///
    /// # Shapes
    /// ids `(B, T)` -> `(N, C)`
    ///
    /// The math: `docs/attention.md`, section "7. Each model's quirks".
    fn embed(&self, stack: &BartStackEmbeddings, ids: ArrayView2<u32>, past: usize) -> Array2<f32> {
        let (b, t) = ids.dim();
        let flat: Vec<u32> = ids.iter().copied().collect();
        let positions: Vec<u32> = (0..b).flat_map(|_| (past..past + t).map(|p| (p + POSITION_OFFSET) as u32)).collect();
        let x = self.shared.forward(&flat) * self.embed_scale + stack.embed_positions.forward(&positions);
        stack.layernorm_embedding.forward(x.view())
    }

    /// Encoder layer `layer` in the common form of the walk-through.
    pub fn encoder_block(&self, layer: usize) -> Option<Block> {
        let l = self.encoder_layers.get(layer)?;
        Some(Block {
            pre_ln: false,
            attn_ln: l.self_attn_layer_norm.clone(),
            ffn_ln: l.final_layer_norm.clone(),
            query: l.self_attn.q_proj.clone(),
            key: l.self_attn.k_proj.clone(),
            value: l.self_attn.v_proj.clone(),
            output: l.self_attn.out_proj.clone(),
            fc1: l.fc1.clone(),
            fc2: l.fc2.clone(),
            activation: self.activation,
            n_head: self.config.encoder_attention_heads,
            causal: false,
            final_ln: None,
        })
    }

    /// Runs the encoder.
    ///
    /// # Shapes
    /// ids and mask `(B, S)` -> hidden states `(B, S, C)`, attentions `(B, nh, S, S)`.
    pub fn encode(&self, ids: ArrayView2<u32>, mask: ArrayView2<u8>, keep: Keep) -> EncoderOutput {
        let (b, s) = ids.dim();
        let c = self.config.d_model;
        let unflatten =
            |x: &Array2<f32>| -> Array3<f32> { x.clone().into_shape_with_order((b, s, c)).expect("contiguous") };
        let attn_mask = AttentionMask::new(Some(mask), b, s, s, false);
        let mut x = self.embed(&self.encoder, ids, 0);
        let all = keep.all_layers();
        let (mut hidden_states, mut attentions) = (Vec::new(), Vec::new());
        keep.record(&mut hidden_states, || unflatten(&x));
        for layer in &self.encoder_layers {
            let proj = layer.self_attn.projections();
            let nh = self.config.encoder_attention_heads;
            // x = LayerNorm(x + SelfAttention(x))
            let (a, probs) = multi_head_attention(x.view(), x.view(), b, nh, &proj, Some(&attn_mask), all);
            let a = layer.self_attn_layer_norm.forward((a + &x).view());
            // x = LayerNorm(a + FFN(a))
            let f = feed_forward(&layer.fc1, &layer.fc2, self.activation, &a);
            x = layer.final_layer_norm.forward((f + &a).view());
            keep.record(&mut hidden_states, || unflatten(&x));
            attentions.extend(probs);
        }
        // (N, C) -> (B, S, C)
        let last_hidden_state = x.into_shape_with_order((b, s, c)).expect("contiguous");
        EncoderOutput { last_hidden_state, hidden_states, attentions }
    }

    /// An empty decoder cache for `B * copies` rows and up to `capacity`
    /// decoder positions, with the cross-attention keys and values of the
    /// encoder output projected once: row `i` of `encoder_hidden` serves cache
    /// rows `i * copies..(i + 1) * copies` (the beams of one source share its
    /// projection instead of each projecting a replicated copy, as
    /// transformers' `repeat_interleave` makes it do: 4 beams over 347 source
    /// tokens were 35 GFLOP of repeated projections per summary).
    ///
    /// # Shapes
    /// `encoder_hidden` `(B, S, C)`.
    ///
    /// The math: `docs/attention.md`, section "3. Cross-attention (BART decoder)".
    pub fn new_cache(&self, encoder_hidden: &Array3<f32>, copies: usize, capacity: usize) -> BartCache {
        let (b, s, c) = encoder_hidden.dim();
        let nh = self.config.decoder_attention_heads;
        let flat = encoder_hidden.view().into_shape_with_order((b * s, c)).expect("encoder output is contiguous");
        let rows: Vec<usize> = (0..b).flat_map(|i| std::iter::repeat_n(i, copies)).collect();
        let cross_attn = self
            .decoder_layers
            .iter()
            .map(|layer| {
                // (B*S, C) -> (B, S, C) -> (B, nh, S, hs) -> (B * copies, nh, S, hs)
                let heads = |lin: &Linear| {
                    let projected = lin.forward(flat).into_shape_with_order((b, s, c)).expect("contiguous");
                    split_heads(projected, nh).select(Axis(0), &rows)
                };
                (heads(&layer.encoder_attn.k_proj), heads(&layer.encoder_attn.v_proj))
            })
            .collect();
        BartCache {
            self_attn: self.decoder_layers.iter().map(|_| LayerCache::new(b * copies, nh, capacity, c / nh)).collect(),
            cross_attn,
        }
    }

    /// Runs `T` new decoder tokens per row after the `P` cached ones.
    ///
    /// # Shapes
    /// `ids` `(B, T)`; `encoder_mask` `(B, S)`; logits `(B, T, V)` with
    /// `all_logits`, else `(B, 1, V)`.
    ///
    /// The math: `docs/attention.md`, section "3. Cross-attention (BART decoder)".
    pub fn decode(
        &self,
        ids: ArrayView2<u32>,
        encoder_mask: ArrayView2<u8>,
        cache: &mut BartCache,
        all_logits: bool,
        keep: Keep,
    ) -> BartDecoderOutput {
        let (b, t) = ids.dim();
        let (c, nh) = (self.config.d_model, self.config.decoder_attention_heads);
        let past = cache.len();
        let s = encoder_mask.ncols();
        let unflatten =
            |x: &Array2<f32>| -> Array3<f32> { x.clone().into_shape_with_order((b, t, c)).expect("contiguous") };
        let to_heads = |y: Array2<f32>| split_heads(y.into_shape_with_order((b, t, c)).expect("contiguous"), nh);
        let all = keep.all_layers();
        let causal = AttentionMask::new(None, b, t, past + t, true);
        let cross_mask = AttentionMask::new(Some(encoder_mask), b, t, s, false);

        let mut x = self.embed(&self.decoder, ids, past);
        let mut out = BartDecoderOutput {
            logits: Array3::zeros((0, 0, 0)),
            hidden_states: Vec::new(),
            self_attentions: Vec::new(),
            cross_attentions: Vec::new(),
        };
        keep.record(&mut out.hidden_states, || unflatten(&x));
        for ((layer, self_cache), (cross_k, cross_v)) in
            self.decoder_layers.iter().zip(cache.self_attn.iter_mut()).zip(cache.cross_attn.iter())
        {
            // 1. causal self-attention over the cached and new positions
            let sa = &layer.self_attn;
            let q = to_heads(sa.q_proj.forward(x.view())); // (B, nh, T, hs)
            let (k, v) = self_cache
                .append(to_heads(sa.k_proj.forward(x.view())).view(), to_heads(sa.v_proj.forward(x.view())).view());
            let attn = attention(q.view(), k, v, Some(&causal), all); // context (B*T, C), heads merged
            let a = sa.out_proj.forward(attn.context.view()) + &x;
            let a = layer.self_attn_layer_norm.forward(a.view());
            // 2. cross-attention: decoder queries, encoder keys and values
            let ca = &layer.encoder_attn;
            let q = to_heads(ca.q_proj.forward(a.view()));
            // (B, nh, T, hs) x (B, nh, S, hs) -> context (B*T, C), heads merged
            let cross = attention(q.view(), cross_k.view(), cross_v.view(), Some(&cross_mask), all);
            let h = ca.out_proj.forward(cross.context.view()) + &a;
            let h = layer.encoder_attn_layer_norm.forward(h.view());
            // 3. feed-forward
            let f = feed_forward(&layer.fc1, &layer.fc2, self.activation, &h);
            x = layer.final_layer_norm.forward((f + &h).view());
            keep.record(&mut out.hidden_states, || unflatten(&x));
            out.self_attentions.extend(attn.probs);
            out.cross_attentions.extend(cross.probs);
        }
        let rows = if all_logits { x } else { x.select(Axis(0), &(0..b).map(|i| i * t + t - 1).collect::<Vec<_>>()) };
        // (rows, C) x (C, V) -> (rows, V), plus the bias
        let logits = self.lm_head.forward(rows.view()) + &self.final_logits_bias;
        let per_row = if all_logits { t } else { 1 };
        out.logits = logits.into_shape_with_order((b, per_row, self.config.vocab_size)).expect("contiguous");
        out
    }
}

/// A summary being generated: the encoder output of one source text, and the
/// decoder cache (with that output's keys and values replicated per beam).
pub struct BartSession<'a> {
    model: &'a BartForConditionalGeneration,
    /// `(1, S, C)`
    encoder_hidden: Array3<f32>,
    /// `(1, S)`
    encoder_mask: Array2<u8>,
    cache: Option<BartCache>,
    capacity: usize,
}

impl<'a> BartSession<'a> {
    /// Encodes `source` and prepares to decode up to `max_length` tokens.
    pub fn new(model: &'a BartForConditionalGeneration, source: &[u32], max_length: usize) -> Self {
        let ids = Array2::from_shape_vec((1, source.len()), source.to_vec()).expect("one row");
        let encoder_mask = Array2::ones((1, source.len()));
        let encoder_hidden = model.encode(ids.view(), encoder_mask.view(), Keep::Result).last_hidden_state;
        Self { model, encoder_hidden, encoder_mask, cache: None, capacity: max_length }
    }
}

impl Decoder for BartSession<'_> {
    fn step(&mut self, tokens: ArrayView2<u32>) -> Array2<f32> {
        let b = tokens.nrows();
        let (model, capacity) = (self.model, self.capacity);
        // Every beam attends to the same source: its keys and values are
        // projected once and replicated per beam (new_cache), and never reordered.
        let mask = self.encoder_mask.select(Axis(0), &vec![0; b]);
        let hidden = &self.encoder_hidden;
        let cache = self.cache.get_or_insert_with(|| model.new_cache(hidden, b, capacity));
        let out = model.decode(tokens, mask.view(), cache, false, Keep::Result);
        out.logits.index_axis_move(Axis(1), 0)
    }

    fn reorder(&mut self, order: &[usize]) {
        // Only the self-attention caches differ between beams; the
        // cross-attention keys and values are identical rows and stay put.
        if let Some(cache) = &mut self.cache {
            cache.self_attn.iter_mut().for_each(|l| l.reorder(order));
        }
    }
}

impl BartSession<'_> {
    /// The encoder output, `(1, S, C)` (for tests and study tools).
    pub fn encoder_hidden(&self) -> &Array3<f32> {
        &self.encoder_hidden
    }
}
