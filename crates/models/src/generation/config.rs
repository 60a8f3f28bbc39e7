//! Generation settings, resolved as transformers resolves them.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// When beam search may stop before `max_length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyStopping {
    /// `true`: as soon as `num_beams` hypotheses are finished.
    Always,
    /// `false`: when no running beam can still beat the worst finished
    /// hypothesis, judged at the current length (a heuristic).
    Heuristic,
    /// `"never"`: only when no running beam can beat it at any future length.
    Never,
}

/// The settings of one `generate` call (transformers' `GenerationConfig`),
/// with transformers' defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationConfig {
    /// Total length, prompt included (decoder-only) or decoder start included
    /// (encoder-decoder). `None` (nothing set anywhere) means 20 new tokens,
    /// capped at the model's position limit, as transformers resolves it.
    pub max_length: Option<usize>,
    /// overrides `max_length` as prompt length + this
    pub max_new_tokens: Option<usize>,
    /// 0; EOS is suppressed while the sequence is shorter
    pub min_length: usize,
    /// EOS is suppressed until this many tokens were generated
    pub min_new_tokens: Option<usize>,
    /// false: greedy or beam search; true: sampling
    pub do_sample: bool,
    /// 1.0
    pub temperature: f32,
    /// 50 (0 disables)
    pub top_k: usize,
    /// 1.0 (disabled)
    pub top_p: f32,
    /// 1
    pub num_beams: usize,
    /// 1
    pub num_return_sequences: usize,
    /// 1.0 (disabled)
    pub repetition_penalty: f32,
    /// 0 (disabled)
    pub no_repeat_ngram_size: usize,
    /// 1.0; beam scores are `sum log p / length^length_penalty`
    pub length_penalty: f32,
    /// `false`
    pub early_stopping: EarlyStopping,
    pub bos_token_id: Option<u32>,
    /// Any of these ends a sequence.
    pub eos_token_id: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// Encoder-decoder models: the first decoder token.
    pub decoder_start_token_id: Option<u32>,
    /// Forced as the first generated token.
    pub forced_bos_token_id: Option<u32>,
    /// Forced as the last token when `max_length` is reached.
    pub forced_eos_token_id: Option<u32>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_length: None,
            max_new_tokens: None,
            min_length: 0,
            min_new_tokens: None,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            num_beams: 1,
            num_return_sequences: 1,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            bos_token_id: None,
            eos_token_id: Vec::new(),
            pad_token_id: None,
            decoder_start_token_id: None,
            forced_bos_token_id: None,
            forced_eos_token_id: None,
        }
    }
}

fn as_usize(key: &str, v: &Value) -> Result<usize> {
    v.as_u64()
        .map(|n| n as usize)
        .with_context(|| format!("generation setting `{key}` must be a non-negative integer, got {v}"))
}

fn as_f32(key: &str, v: &Value) -> Result<f32> {
    v.as_f64().map(|n| n as f32).with_context(|| format!("generation setting `{key}` must be a number, got {v}"))
}

fn as_id(key: &str, v: &Value) -> Result<Option<u32>> {
    if v.is_null() {
        return Ok(None);
    }
    Ok(Some(as_usize(key, v)? as u32))
}

impl GenerationConfig {
    /// Applies every known key of a JSON object (generation_config.json, the
    /// legacy fields of config.json, `task_specific_params[task]`, or a
    /// test's `generate` kwargs); unknown keys are ignored, `null` unsets.
    ///
    /// # Errors
    /// If a known key has a value of the wrong type.
    pub fn update(&mut self, settings: &Value) -> Result<()> {
        let Some(map) = settings.as_object() else { bail!("generation settings must be a JSON object") };
        for (key, v) in map {
            let k = key.as_str();
            match k {
                "max_length" => self.max_length = if v.is_null() { None } else { Some(as_usize(k, v)?) },
                "max_new_tokens" => self.max_new_tokens = if v.is_null() { None } else { Some(as_usize(k, v)?) },
                "min_length" => self.min_length = as_usize(k, v)?,
                "min_new_tokens" => self.min_new_tokens = if v.is_null() { None } else { Some(as_usize(k, v)?) },
                "do_sample" => {
                    self.do_sample =
                        v.as_bool().with_context(|| format!("`do_sample` must be true or false, got {v}"))?
                }
                "temperature" => self.temperature = as_f32(k, v)?,
                "top_k" => self.top_k = if v.is_null() { 0 } else { as_usize(k, v)? },
                "top_p" => self.top_p = if v.is_null() { 1.0 } else { as_f32(k, v)? },
                "num_beams" => self.num_beams = as_usize(k, v)?,
                "num_return_sequences" => self.num_return_sequences = as_usize(k, v)?,
                "repetition_penalty" => self.repetition_penalty = as_f32(k, v)?,
                "no_repeat_ngram_size" => self.no_repeat_ngram_size = as_usize(k, v)?,
                "length_penalty" => self.length_penalty = as_f32(k, v)?,
                "early_stopping" => {
                    self.early_stopping = match v {
                        Value::Bool(true) => EarlyStopping::Always,
                        Value::Bool(false) => EarlyStopping::Heuristic,
                        Value::String(s) if s == "never" => EarlyStopping::Never,
                        _ => bail!("`early_stopping` must be true, false or \"never\", got {v}"),
                    }
                }
                "bos_token_id" => self.bos_token_id = as_id(k, v)?,
                "eos_token_id" => {
                    self.eos_token_id = match v {
                        Value::Null => Vec::new(),
                        Value::Array(ids) => ids.iter().map(|id| Ok(as_usize(k, id)? as u32)).collect::<Result<_>>()?,
                        _ => vec![as_usize(k, v)? as u32],
                    }
                }
                "pad_token_id" => self.pad_token_id = as_id(k, v)?,
                "decoder_start_token_id" => self.decoder_start_token_id = as_id(k, v)?,
                "forced_bos_token_id" => self.forced_bos_token_id = as_id(k, v)?,
                "forced_eos_token_id" => self.forced_eos_token_id = as_id(k, v)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// The settings a checkpoint directory carries, as `generate` sees them:
    /// `generation_config.json` when present; otherwise the generation fields
    /// of `config.json` (the legacy place, e.g. distilbart-cnn-12-6 keeps
    /// `num_beams`, `min_length`, ... there), including the legacy flag
    /// `force_bos_token_to_be_generated: true`, which means
    /// `forced_bos_token_id = bos_token_id`.
    ///
    /// # Errors
    /// On unreadable files or mistyped values.
    pub fn from_model_dir(dir: &Path, config: &Value) -> Result<Self> {
        let mut gen = Self::default();
        let path = dir.join("generation_config.json");
        if path.is_file() {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let value: Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
            gen.update(&value)?;
        } else {
            gen.update(config)?;
            if config.get("force_bos_token_to_be_generated").and_then(Value::as_bool) == Some(true) {
                gen.forced_bos_token_id = gen.bos_token_id;
            }
        }
        Ok(gen)
    }

    /// The absolute length limit for a prompt of `prompt_len` tokens (for
    /// encoder-decoder models, the decoder start): `prompt_len + max_new_tokens`
    /// if set; else `max_length` if set; else `prompt_len + 20`, capped at
    /// `max_positions` (transformers' model-agnostic default).
    pub fn resolved_max_length(&self, prompt_len: usize, max_positions: usize) -> usize {
        match (self.max_new_tokens, self.max_length) {
            (Some(n), _) => prompt_len + n,
            (None, Some(m)) => m,
            (None, None) => (prompt_len + 20).min(max_positions),
        }
    }

    /// Checks the settings make sense together.
    ///
    /// # Errors
    /// On a zero beam count, more return sequences than beams, and the like.
    pub fn validate(&self) -> Result<()> {
        if self.num_beams == 0 {
            bail!("num_beams must be at least 1");
        }
        if self.num_return_sequences == 0 {
            bail!("num_return_sequences must be at least 1");
        }
        if !self.do_sample && self.num_return_sequences > self.num_beams {
            bail!(
                "num_return_sequences ({}) cannot exceed num_beams ({}) without sampling",
                self.num_return_sequences,
                self.num_beams
            );
        }
        if self.do_sample && self.num_beams > 1 {
            bail!("beam sampling (do_sample with num_beams > 1) is not supported");
        }
        if self.temperature <= 0.0 && self.do_sample {
            bail!("temperature must be positive when sampling, got {}", self.temperature);
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            bail!("top_p must be between 0 and 1, got {}", self.top_p);
        }
        if self.repetition_penalty <= 0.0 {
            bail!("repetition_penalty must be positive, got {}", self.repetition_penalty);
        }
        Ok(())
    }
}
