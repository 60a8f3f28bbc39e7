//! `pipeline("text-generation")` on a `GPT2LMHeadModel` checkpoint.

use std::path::Path;

use anyhow::{bail, Result};

use crate::auto::{load_with_tokenizer, require_model_type};
use crate::config::{parse, read_config};
use crate::generation::search::generate;
use crate::generation::GenerationConfig;
use crate::gpt2::{Gpt2Config, Gpt2LmHeadModel, Gpt2Session};
use crate::study::{token_strings, Study};
use crate::tokenizer::TextTokenizer;
use crate::weights::Packing;
use crate::Keep;
use tensor::PackedType;

/// The causal-LM `model_type`s this engine implements.
pub const CAUSAL_LM_MODEL_TYPES: &str = "gpt2";

/// A loaded text-generation pipeline.
pub struct TextGeneration {
    pub model: Gpt2LmHeadModel,
    pub tokenizer: TextTokenizer,
    /// The weights still being packed in the background, if any.
    pub packing: Packing,
    /// The checkpoint's settings: generation_config.json (or the legacy
    /// config.json fields), then `task_specific_params["text-generation"]`.
    pub defaults: GenerationConfig,
}

/// One returned sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// Prompt ids followed by the new ids, as `generate` returns them.
    pub token_ids: Vec<u32>,
    /// The new ids decoded (special tokens skipped).
    pub new_text: String,
}

impl TextGeneration {
    /// Loads a checkpoint directory.
    ///
    /// # Errors
    /// On unreadable files, a `model_type` other than GPT-2's, a missing or
    /// misshapen tensor, or a tokenizer that does not fit the model.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_as(dir, PackedType::F32)
    }

    /// Loads a checkpoint directory with the weight matrices packed as `weights`.
    ///
    /// # Errors
    /// As [`TextGeneration::load`]; bf16 on a CPU without AVX-512.
    pub fn load_as(dir: &Path, weights: PackedType) -> Result<Self> {
        let config = read_config(dir)?;
        require_model_type(&config, CAUSAL_LM_MODEL_TYPES, "text generation")?;
        let gpt2_config: Gpt2Config = parse(&config, "GPT-2")?;
        let (model, tokenizer, packing) = load_with_tokenizer(
            dir,
            weights,
            |ckpt| Gpt2LmHeadModel::load(&ckpt.root(), gpt2_config),
            |m| (m.config.n_positions, m.config.vocab_size),
        )?;
        let mut defaults = GenerationConfig::from_model_dir(dir, &config)?;
        if let Some(task) = config.get("task_specific_params").and_then(|t| t.get("text-generation")) {
            defaults.update(task)?;
        }
        Ok(Self { model, tokenizer, packing, defaults })
    }

    /// Tokenizes the prompt as the pipeline does (no special tokens are added for GPT-2).
    ///
    /// # Errors
    /// On an empty prompt.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            bail!("the prompt is empty");
        }
        Ok(self.tokenizer.encode(prompt, false)?.ids)
    }

    /// The prompt's forward pass: `attentions.{layer}` `(1, nh, T, T)` (the
    /// causal triangle) and `hidden_states.{i}` `(1, T, C)`, the last after `ln_f`.
    ///
    /// # Errors
    /// On an empty prompt or one longer than `n_positions`.
    pub fn study(&self, prompt: &str) -> Result<Study> {
        let ids = self.encode_prompt(prompt)?;
        if ids.len() > self.model.config.n_positions {
            bail!(
                "the prompt has {} tokens, more than the model's {} positions",
                ids.len(),
                self.model.config.n_positions
            );
        }
        let batch = ndarray::Array2::from_shape_vec((1, ids.len()), ids.clone()).expect("one row");
        let mut cache = self.model.new_cache(1, ids.len());
        let out = self.model.forward(batch.view(), &mut cache, false, Keep::AllLayers);
        let mut study = Study::default();
        study.push_all("attentions", &out.attentions);
        study.push_all("hidden_states", &out.hidden_states);
        study.metadata.insert("tokens".into(), serde_json::to_string(&[token_strings(&self.tokenizer, &ids)])?);
        Ok(study)
    }

    /// Generates from one prompt. `on_token` sees each new token of the first
    /// sequence as it is produced.
    ///
    /// # Errors
    /// On an empty prompt, inconsistent settings, or a length past `n_positions`.
    pub fn generate(
        &self,
        prompt: &str,
        config: &GenerationConfig,
        seed: u64,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<Vec<Generated>> {
        let ids = self.encode_prompt(prompt)?;
        let max_length = config.resolved_max_length(ids.len(), self.model.config.n_positions);
        let limit = self.model.config.n_positions;
        if max_length > limit {
            bail!(
                "generation would pass the model's {limit} positions (n_positions): the prompt has {} tokens and the length limit is {max_length}; lower --max-new-tokens",
                ids.len()
            );
        }
        let mut config = config.clone();
        // GPT-2 has no pad token; like transformers, pad finished rows with EOS.
        if config.pad_token_id.is_none() {
            config.pad_token_id = config.eos_token_id.first().copied();
        }
        let mut session = Gpt2Session::new(&self.model, max_length);
        let sequences = generate(&mut session, &ids, &config, max_length, seed, on_token)?;
        sequences
            .into_iter()
            .map(|seq| {
                let new_text = self.tokenizer.decode(&seq[ids.len()..], true)?;
                Ok(Generated { token_ids: seq, new_text })
            })
            .collect()
    }
}
