//! A worked example of one attention head inside one layer: every
//! intermediate of the real forward pass, with its formula and shape, from
//! the layer's input to its output. The final values equal the layer output
//! of the normal forward pass (a test checks it), so the walk-through is the
//! computation, not an illustration of it.
//!
//! Shape legend: `T` tokens, `C` channels, `nh` heads, `hs = C / nh`, `F` feed-forward size.

use anyhow::{bail, Result};
use ndarray::{s, Array2, Axis};

use transformer::{Activation, AttentionMask, LayerNorm, Linear};

/// One transformer block in a common form, borrowed from a model's own layer.
pub struct Block {
    /// GPT-2's pre-LayerNorm order (`x + f(LN(x))`) rather than BERT's and BART's post-LN (`LN(x + f(x))`).
    pub pre_ln: bool,
    /// LayerNorm around attention (`ln_1`, `attention.output.LayerNorm`, `sa_layer_norm`, `self_attn_layer_norm`).
    pub attn_ln: LayerNorm,
    /// LayerNorm around the feed-forward (`ln_2`, `output.LayerNorm`, `output_layer_norm`, `final_layer_norm`).
    pub ffn_ln: LayerNorm,
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub output: Linear,
    pub fc1: Linear,
    pub fc2: Linear,
    pub activation: Activation,
    pub n_head: usize,
    pub causal: bool,
    /// GPT-2's `ln_f`, applied after its last block (transformers reports the last hidden state after it).
    pub final_ln: Option<LayerNorm>,
}

/// One step of the walk-through.
pub struct Step {
    pub title: String,
    pub formula: String,
    /// `(T, cols)`: one row per token.
    pub values: Array2<f32>,
}

/// The whole walk-through of one layer and head.
pub struct Explanation {
    pub tokens: Vec<String>,
    pub steps: Vec<Step>,
    /// The layer's output computed step by step, `(T, C)`.
    pub output: Array2<f32>,
    /// The same layer output from the normal forward pass, `(T, C)`.
    pub forward_output: Array2<f32>,
}

fn step(steps: &mut Vec<Step>, title: &str, formula: &str, values: &Array2<f32>) {
    steps.push(Step { title: title.into(), formula: formula.into(), values: values.clone() });
}

/// Walks `block` on its input `x` `(T, C)` for head `head`; `forward_output`
/// is the layer output the model's own forward pass produced.
///
/// # Errors
/// If `head` is out of range.
pub fn explain_block(
    block: &Block,
    x: Array2<f32>,
    head: usize,
    tokens: Vec<String>,
    forward_output: Array2<f32>,
) -> Result<Explanation> {
    let (t, c) = x.dim();
    let nh = block.n_head;
    if head >= nh {
        bail!("--head {head} is out of range: the model has {nh} heads (0..{})", nh - 1);
    }
    let hs = c / nh;
    let cols = s![.., head * hs..(head + 1) * hs];
    let mut steps = Vec::new();
    step(
        &mut steps,
        "Input X",
        "X = the layer's input (token embeddings + positions, or the previous layer's output)",
        &x,
    );

    // pre-LN models normalise before attention
    let x_in = if block.pre_ln {
        let xn = block.attn_ln.forward(x.view());
        step(
            &mut steps,
            "Pre-attention LayerNorm",
            "X' = (X - mean) / sqrt(var + eps) * gamma + beta   (per row)",
            &xn,
        );
        xn
    } else {
        x.clone()
    };
    // projections for every head; the walk-through shows head `head`
    let q = block.query.forward(x_in.view()); // (T, C)
    let k = block.key.forward(x_in.view());
    let v = block.value.forward(x_in.view());
    let (qh, kh, vh) = (q.slice(cols).to_owned(), k.slice(cols).to_owned(), v.slice(cols).to_owned());
    step(
        &mut steps,
        &format!("Queries of head {head}"),
        &format!("Q = X W_q^T + b_q, columns {}..{} of (T, C)", head * hs, (head + 1) * hs),
        &qh,
    );
    step(&mut steps, &format!("Keys of head {head}"), "K = X W_k^T + b_k (same columns)", &kh);
    step(&mut steps, &format!("Values of head {head}"), "V = X W_v^T + b_v (same columns)", &vh);

    // scores, mask, softmax, context for every head (the output projection mixes them all)
    let mask = AttentionMask::new(None, 1, t, t, block.causal);
    let bias = mask.bias().index_axis(Axis(0), 0).to_owned();
    let mut context = Array2::<f32>::zeros((t, c));
    for h in 0..nh {
        let hcols = s![.., h * hs..(h + 1) * hs];
        // (T, hs) x (hs, T) -> (T, T)
        let scores = tensor::matmul(q.slice(hcols), k.slice(hcols).t()) / (hs as f32).sqrt();
        let mut probs = &scores + &bias;
        tensor::softmax_last_dim(probs.view_mut().into_dyn());
        // (T, T) x (T, hs) -> (T, hs)
        let ctx = tensor::matmul(probs.view(), v.slice(hcols));
        context.slice_mut(hcols).assign(&ctx);
        if h == head {
            step(
                &mut steps,
                "Scores",
                &format!("S = Q K^T / sqrt(hs), hs = {hs}   (query rows, key columns)"),
                &scores,
            );
            let shown = bias.mapv(|b| if b == 0.0 { 0.0 } else { f32::NEG_INFINITY });
            let rule = if block.causal {
                "M[i][j] = -inf where key j is after query i (causal), else 0"
            } else {
                "M = 0 (one unpadded input: every key is visible)"
            };
            step(&mut steps, "Mask", rule, &shown);
            step(&mut steps, "Attention probabilities", "P = softmax(S + M) along each row (rows sum to 1)", &probs);
            step(&mut steps, &format!("Context of head {head}"), "Z = P V", &ctx);
        }
    }
    step(&mut steps, "All heads concatenated", &format!("Z = [Z_0 | Z_1 | ... | Z_{}], (T, C)", nh - 1), &context);
    let o = block.output.forward(context.view());
    step(&mut steps, "Output projection", "O = Z W_o^T + b_o", &o);

    let out = if block.pre_ln {
        let a = &x + &o;
        step(&mut steps, "Residual", "A = X + O", &a);
        let an = block.ffn_ln.forward(a.view());
        step(&mut steps, "Pre-feed-forward LayerNorm", "A' = LayerNorm(A)", &an);
        let mut h = block.fc1.forward(an.view());
        block.activation.apply(&mut h);
        step(
            &mut steps,
            "Feed-forward, hidden",
            &format!("H = act(A' W_1^T + b_1), act = {:?}, (T, F)", block.activation),
            &h,
        );
        let y = &a + &block.fc2.forward(h.view());
        step(&mut steps, "Residual", "Y = A + H W_2^T + b_2", &y);
        y
    } else {
        let a = block.attn_ln.forward((&x + &o).view());
        step(&mut steps, "Residual and LayerNorm", "A = LayerNorm(X + O)", &a);
        let mut h = block.fc1.forward(a.view());
        block.activation.apply(&mut h);
        step(
            &mut steps,
            "Feed-forward, hidden",
            &format!("H = act(A W_1^T + b_1), act = {:?}, (T, F)", block.activation),
            &h,
        );
        let y = block.ffn_ln.forward((&a + &block.fc2.forward(h.view())).view());
        step(&mut steps, "Residual and LayerNorm", "Y = LayerNorm(A + H W_2^T + b_2)", &y);
        y
    };
    let output = match &block.final_ln {
        Some(ln) => {
            let y = ln.forward(out.view());
            step(&mut steps, "Final LayerNorm (ln_f)", "the last block's output goes through ln_f", &y);
            y
        }
        None => out,
    };
    Ok(Explanation { tokens, steps, output, forward_output })
}

/// Explains layer `layer`, head `head` of any supported checkpoint on `text`
/// (BART: an encoder layer).
///
/// # Errors
/// On loading failures, an unsupported `model_type`, or out-of-range indices.
pub fn explain(dir: &std::path::Path, layer: usize, head: usize, text: &str) -> Result<Explanation> {
    use crate::pipelines::summarization::Summarization;
    use crate::pipelines::text_generation::TextGeneration;
    use crate::pipelines::{EncodeOptions, FeatureExtraction};

    let config = crate::config::read_config(dir)?;
    let model_type = config.get("model_type").and_then(serde_json::Value::as_str).unwrap_or("");
    let (block, study, field) = match model_type {
        "gpt2" => {
            let pipe = TextGeneration::load(dir)?;
            (pipe.model.block(layer), pipe.study(text)?, "hidden_states")
        }
        "bart" => {
            let pipe = Summarization::load(dir)?;
            (pipe.model.encoder_block(layer), pipe.study(text, None)?, "encoder_hidden_states")
        }
        _ => {
            let pipe = FeatureExtraction::load(dir)?;
            (pipe.model.block(layer), pipe.study(&[text.to_string()], &EncodeOptions::default())?, "hidden_states")
        }
    };
    let n_layers = (0..).take_while(|l| study.get(&format!("{field}.{}", l + 1)).is_some()).count();
    let Some(block) = block else {
        bail!("--layer {layer} is out of range: the model has {n_layers} layers (0..{})", n_layers.saturating_sub(1));
    };
    // (1, T, C) -> (T, C)
    let row = |i: usize| -> Array2<f32> {
        let h = study.get(&format!("{field}.{i}")).expect("hidden states of every layer");
        h.index_axis(Axis(0), 0).to_owned().into_dimensionality().expect("rank 2")
    };
    let tokens: Vec<Vec<String>> = serde_json::from_str(&study.metadata["tokens"])?;
    explain_block(&block, row(layer), head, tokens.into_iter().next().unwrap_or_default(), row(layer + 1))
}
