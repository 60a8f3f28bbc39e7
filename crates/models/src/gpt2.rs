//! GPT-2 (Radford et al., 2019): `GPT2LMHeadModel`, with a KV cache.
//!
//! Shape legend: `B` batch (prompts x beams), `T` new tokens this call, `P`
//! cached (past) positions, `S = P + T`, `C` = `n_embd`, `nh` = `n_head`,
//! `hs = C / nh`, `V` vocabulary, `N = B * T`.
//!
//! A pre-LayerNorm decoder: `a = x + attn(ln_1(x))`, `y = a + mlp(ln_2(a))`,
//! with causal self-attention and learned absolute positions; the output
//! projection is tied to the token embedding `wte`.
//!
//! Checkpoint quirks, all handled here:
//! - `save_pretrained` writes keys under `transformer.` (`transformer.h.0.ln_1.weight`);
//!   the original openai-community/gpt2 file has them bare (`h.0.ln_1.weight`);
//! - the bare layout also carries `h.N.attn.bias` / `h.N.attn.masked_bias`, the
//!   old causal-mask buffers, which are ignored (the mask is built in code);
//! - `lm_head.weight` is usually absent: it is tied to `wte.weight`;
//! - the four `Conv1D` layers ([`CONV1D_LAYERS`]) store weights `(in, out)`, the
//!   transpose of `nn.Linear`; each [`Linear`] views those bytes transposed
//!   (no copy), and the products read them in their stored order.

use anyhow::{bail, Result};
use ndarray::{s, Array2, Array3, Array4, ArrayView2, Axis};
use serde::Deserialize;

use transformer::{attention, split_heads, Activation, AttentionMask, Embedding, LayerCache, LayerNorm, Linear};

use crate::config;
use crate::explain::Block;
use crate::generation::Decoder;
use crate::weights::{InFloat32, Weights};
use crate::Keep;

/// The layers stored as `Conv1D` (weight `(in, out)`), relative to `h.{i}`.
pub const CONV1D_LAYERS: [&str; 4] = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"];

/// `GPT2Config` (openai-community/gpt2 values in comments).
#[derive(Clone, Debug, Deserialize)]
pub struct Gpt2Config {
    /// 50257
    pub vocab_size: usize,
    /// 1024, the position limit
    pub n_positions: usize,
    /// 768
    pub n_embd: usize,
    /// 12
    pub n_layer: usize,
    /// 12
    pub n_head: usize,
    /// null, meaning 4 * n_embd
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// "gelu_new"
    #[serde(default = "default_gelu_new")]
    pub activation_function: String,
    /// 1e-5
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
    /// true: scores divided by sqrt(hs)
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    /// false (true divides scores by the layer number too; not implemented)
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
}

fn default_gelu_new() -> String {
    "gelu_new".into()
}
fn default_eps() -> f32 {
    1e-5
}
fn default_true() -> bool {
    true
}

/// Reads a `Conv1D` in this scope (`weight` `(in, out)`) as a [`Linear`] `(out, in)`:
/// the same bytes, viewed transposed.
///
/// In float32 not packed ([`InFloat32::Never`]), unlike `nn.Linear` weights:
/// decoding reads the `(in, out)` rows in place as fast as packed panels (47
/// tokens/s either way on the benchmark, measured), and packing GPT-2's 340 MB
/// of layers took loading from about 105 to 260 ms. With bf16 weights they
/// are packed, for half the bytes per step.
///
/// The math: `docs/attention.md`, section "7. Each model's quirks".
fn conv1d(w: &Weights, in_features: usize, out_features: usize) -> Result<Linear> {
    let weight = w.matrix("weight", (in_features, out_features))?;
    let linear = Linear::new(weight.transposed(), Some(w.get1("bias", out_features)?));
    Ok(w.packed(linear, "weight", InFloat32::Never))
}

/// `h.{i}.attn`: fused query/key/value projection and output projection.
pub struct Gpt2Attention {
    /// `(3C, C)` after the Conv1D transpose: rows `0..C` are queries, `C..2C` keys, `2C..3C` values.
    pub c_attn: Linear,
    /// `(C, C)`
    pub c_proj: Linear,
}

/// `h.{i}.mlp`
pub struct Gpt2Mlp {
    /// `(I, C)`
    pub c_fc: Linear,
    /// `(C, I)`
    pub c_proj: Linear,
}

/// `h.{i}`
pub struct Gpt2Block {
    pub ln_1: LayerNorm,
    pub attn: Gpt2Attention,
    pub ln_2: LayerNorm,
    pub mlp: Gpt2Mlp,
}

/// What a forward pass returns.
pub struct Gpt2Output {
    /// `(B, T, V)` with all positions, or `(B, 1, V)` for the last one only.
    pub logits: Array3<f32>,
    /// With [`Keep::AllLayers`], `n_layer + 1` tensors `(B, T, C)`: the embedding
    /// output, then each block's output, the last one after `ln_f` (as
    /// transformers reports them); else empty.
    pub hidden_states: Vec<Array3<f32>>,
    /// With [`Keep::AllLayers`], `n_layer` tensors `(B, nh, T, S)`; else empty.
    pub attentions: Vec<Array4<f32>>,
}

/// The per-layer KV caches of one generation.
pub struct Gpt2Cache {
    layers: Vec<LayerCache>,
}

impl Gpt2Cache {
    /// Cached positions.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::len)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batch row `i` becomes old row `order[i]` in every layer.
    pub fn reorder(&mut self, order: &[usize]) {
        self.layers.iter_mut().for_each(|l| l.reorder(order));
    }
}

/// `GPT2LMHeadModel`.
pub struct Gpt2LmHeadModel {
    pub config: Gpt2Config,
    activation: Activation,
    /// `(V, C)`, also the output projection
    pub wte: Embedding,
    /// `(n_positions, C)`
    pub wpe: Embedding,
    pub h: Vec<Gpt2Block>,
    pub ln_f: LayerNorm,
    /// `(V, C)`: the checkpoint's own `lm_head.weight`, or `wte`'s matrix when tied.
    pub lm_head: Linear,
}

impl Gpt2LmHeadModel {
    /// Loads either layout (see the module doc), reporting which it found on error.
    ///
    /// # Errors
    /// On a missing tensor, a wrong shape, or an unsupported config option.
    pub fn load(root: &Weights, config: Gpt2Config) -> Result<Self> {
        if config.scale_attn_by_inverse_layer_idx {
            bail!("scale_attn_by_inverse_layer_idx is not supported");
        }
        if !config.scale_attn_weights {
            bail!("scale_attn_weights = false is not supported");
        }
        if !config.n_embd.is_multiple_of(config.n_head) {
            bail!("n_embd {} is not divisible by n_head {}", config.n_embd, config.n_head);
        }
        let activation = config::activation(&config.activation_function)?;
        let w = if root.contains("transformer.wte.weight") { root.pp("transformer") } else { root.clone() };
        let (c, eps) = (config.n_embd, config.layer_norm_epsilon);
        let inner = config.n_inner.unwrap_or(4 * c);
        let mut h = Vec::with_capacity(config.n_layer);
        for l in 0..config.n_layer {
            let b = w.pp("h").pp(l);
            h.push(Gpt2Block {
                ln_1: b.pp("ln_1").layer_norm(c, eps)?,
                attn: Gpt2Attention {
                    c_attn: conv1d(&b.pp("attn.c_attn"), c, 3 * c)?,
                    c_proj: conv1d(&b.pp("attn.c_proj"), c, c)?,
                },
                ln_2: b.pp("ln_2").layer_norm(c, eps)?,
                mlp: Gpt2Mlp {
                    c_fc: conv1d(&b.pp("mlp.c_fc"), c, inner)?,
                    c_proj: conv1d(&b.pp("mlp.c_proj"), inner, c)?,
                },
            });
        }
        let wte = w.pp("wte").embedding(config.vocab_size, c)?;
        let lm_head = if root.contains("lm_head.weight") {
            root.lm_head(root.matrix("lm_head.weight", (config.vocab_size, c))?, "lm_head.weight")
        } else {
            w.lm_head(wte.weight.clone(), "wte.weight")
        };
        Ok(Self {
            wte,
            wpe: w.pp("wpe").embedding(config.n_positions, c)?,
            ln_f: w.pp("ln_f").layer_norm(c, eps)?,
            h,
            lm_head,
            activation,
            config,
        })
    }

    /// Block `layer` in the common form of the walk-through, with the fused
    /// `c_attn` split into its query, key and value rows.
    pub fn block(&self, layer: usize) -> Option<Block> {
        let b = self.h.get(layer)?;
        let c = self.config.n_embd;
        let part = |i: usize| {
            Linear::new(
                // (3C, C) -> (C, C): rows i*C..(i+1)*C
                b.attn.c_attn.weight.view().slice(s![i * c..(i + 1) * c, ..]).to_owned().into(),
                b.attn.c_attn.bias.as_ref().map(|bias| bias.slice(s![i * c..(i + 1) * c]).to_owned()),
            )
        };
        Some(Block {
            pre_ln: true,
            attn_ln: b.ln_1.clone(),
            ffn_ln: b.ln_2.clone(),
            query: part(0),
            key: part(1),
            value: part(2),
            output: b.attn.c_proj.clone(),
            fc1: b.mlp.c_fc.clone(),
            fc2: b.mlp.c_proj.clone(),
            activation: self.activation,
            n_head: self.config.n_head,
            causal: true,
            final_ln: (layer + 1 == self.h.len()).then(|| self.ln_f.clone()),
        })
    }

    /// An empty cache for `batch` rows and up to `capacity` positions.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Gpt2Cache {
        let (nh, c) = (self.config.n_head, self.config.n_embd);
        Gpt2Cache { layers: (0..self.config.n_layer).map(|_| LayerCache::new(batch, nh, capacity, c / nh)).collect() }
    }

    /// Runs `T` new tokens per row after the `P` positions already in `cache`,
    /// appending their keys and values to it.
    ///
    /// # Shapes
    /// `ids` `(B, T)`; logits `(B, T, V)` with `all_logits`, else `(B, 1, V)`.
    ///
    /// # Panics
    /// If `P + T` exceeds `n_positions` or the cache's capacity (callers check).
    ///
    /// The math: `docs/attention.md`, section "7. Each model's quirks".
    pub fn forward(&self, ids: ArrayView2<u32>, cache: &mut Gpt2Cache, all_logits: bool, keep: Keep) -> Gpt2Output {
        let (b, t) = ids.dim();
        let (c, nh) = (self.config.n_embd, self.config.n_head);
        let past = cache.len();
        assert!(
            past + t <= self.config.n_positions,
            "{} positions exceed n_positions {}",
            past + t,
            self.config.n_positions
        );
        let flat: Vec<u32> = ids.iter().copied().collect();
        let positions: Vec<u32> = (0..b).flat_map(|_| (past..past + t).map(|p| p as u32)).collect();
        // (N, C)
        let mut x = self.wte.forward(&flat) + self.wpe.forward(&positions);
        let unflatten =
            |x: &Array2<f32>| -> Array3<f32> { x.clone().into_shape_with_order((b, t, c)).expect("contiguous") };
        let mask = AttentionMask::new(None, b, t, past + t, true);
        let all = keep.all_layers();
        let (mut hidden_states, mut attentions) = (Vec::new(), Vec::new());
        keep.record(&mut hidden_states, || unflatten(&x));
        for (block, layer_cache) in self.h.iter().zip(cache.layers.iter_mut()) {
            // a = x + attn(ln_1(x))
            let qkv = block.attn.c_attn.forward(block.ln_1.forward(x.view()).view()); // (N, C) -> (N, 3C)
            let heads = |part: usize| {
                // (N, C) slice -> (B, T, C) -> (B, nh, T, hs)
                let y = qkv.slice(s![.., part * c..(part + 1) * c]).to_owned();
                split_heads(y.into_shape_with_order((b, t, c)).expect("contiguous"), nh)
            };
            let (q, k_new, v_new) = (heads(0), heads(1), heads(2));
            // (B, nh, P + T, hs) each, the cache included
            let (k, v) = layer_cache.append(k_new.view(), v_new.view());
            // context (N, C), heads merged
            let out = attention(q.view(), k, v, Some(&mask), all);
            let a = block.attn.c_proj.forward(out.context.view()) + &x;
            // y = a + mlp(ln_2(a)); (N, C) -> (N, I) -> (N, C)
            let mut hidden = block.mlp.c_fc.forward(block.ln_2.forward(a.view()).view());
            self.activation.apply(&mut hidden);
            x = block.mlp.c_proj.forward(hidden.view()) + &a;
            keep.record(&mut hidden_states, || unflatten(&x));
            attentions.extend(out.probs);
        }
        x = self.ln_f.forward(x.view());
        if let Some(last) = hidden_states.last_mut() {
            *last = unflatten(&x);
        }
        // logits for every position, or just each row's last
        let rows = if all_logits { x } else { x.select(Axis(0), &(0..b).map(|i| i * t + t - 1).collect::<Vec<_>>()) };
        // (rows, C) x (C, V) -> (rows, V)
        let logits = self.lm_head.forward(rows.view());
        let per_row = if all_logits { t } else { 1 };
        let logits = logits.into_shape_with_order((b, per_row, self.config.vocab_size)).expect("contiguous");
        Gpt2Output { logits, hidden_states, attentions }
    }
}

/// A generation in progress: the model and its growing cache.
pub struct Gpt2Session<'a> {
    model: &'a Gpt2LmHeadModel,
    cache: Option<Gpt2Cache>,
    capacity: usize,
}

impl<'a> Gpt2Session<'a> {
    /// A session whose sequences will not exceed `max_length` positions.
    pub fn new(model: &'a Gpt2LmHeadModel, max_length: usize) -> Self {
        Self { model, cache: None, capacity: max_length.min(model.config.n_positions) }
    }
}

impl Decoder for Gpt2Session<'_> {
    fn step(&mut self, tokens: ArrayView2<u32>) -> Array2<f32> {
        let (b, _) = tokens.dim();
        let (model, capacity) = (self.model, self.capacity);
        let cache = self.cache.get_or_insert_with(|| model.new_cache(b, capacity));
        let out = model.forward(tokens, cache, false, Keep::Result);
        // (B, 1, V) -> (B, V)
        out.logits.index_axis_move(Axis(1), 0)
    }

    fn reorder(&mut self, order: &[usize]) {
        if let Some(cache) = &mut self.cache {
            cache.reorder(order);
        }
    }
}
