//! `pipeline("summarization")` on a `BartForConditionalGeneration` checkpoint.
//!
//! transformers 5 removed this pipeline; this follows what 4.x's
//! `SummarizationPipeline` did: prepend `config.prefix`, truncate the source
//! to the model maximum, take the checkpoint's generation settings with
//! `task_specific_params["summarization"]` on top, run `generate` (beam
//! search for distilbart), and decode with special tokens skipped.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::auto::{load_with_tokenizer, require_model_type};
use crate::bart::{BartConfig, BartForConditionalGeneration, BartSession};
use crate::config::{parse, read_config};
use crate::generation::search::generate;
use crate::generation::GenerationConfig;
use crate::study::{token_strings, Study};
use crate::tokenizer::TextTokenizer;
use crate::weights::Packing;
use crate::Keep;
use tensor::PackedType;

/// The encoder-decoder `model_type`s this engine implements.
pub const SEQ2SEQ_MODEL_TYPES: &str = "bart";

/// A loaded summarization pipeline.
pub struct Summarization {
    pub model: BartForConditionalGeneration,
    pub tokenizer: TextTokenizer,
    /// The weights still being packed in the background, if any.
    pub packing: Packing,
    /// generation_config.json (or config.json's legacy fields), then `task_specific_params["summarization"]`.
    pub defaults: GenerationConfig,
    /// `config.prefix`, prepended to every source text (distilbart-cnn-12-6: `" "`).
    pub prefix: String,
}

/// One returned summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Decoder ids as `generate` returns them: decoder start and forced tokens included.
    pub token_ids: Vec<u32>,
    /// The ids decoded with special tokens skipped.
    pub text: String,
}

impl Summarization {
    /// Loads a checkpoint directory.
    ///
    /// # Errors
    /// On unreadable files, a `model_type` other than BART's, a missing or
    /// misshapen tensor, or a tokenizer that does not fit the model.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_as(dir, PackedType::F32)
    }

    /// Loads a checkpoint directory with the weight matrices packed as `weights`.
    ///
    /// # Errors
    /// As [`Summarization::load`]; bf16 on a CPU without AVX-512.
    pub fn load_as(dir: &Path, weights: PackedType) -> Result<Self> {
        let config = read_config(dir)?;
        require_model_type(&config, SEQ2SEQ_MODEL_TYPES, "summarization")?;
        let bart_config: BartConfig = parse(&config, "BART")?;
        let (model, tokenizer, packing) = load_with_tokenizer(
            dir,
            weights,
            |ckpt| BartForConditionalGeneration::load(&ckpt.root(), bart_config),
            |m| (m.config.max_position_embeddings, m.config.vocab_size),
        )?;
        let mut defaults = GenerationConfig::from_model_dir(dir, &config)?;
        if let Some(task) = config.get("task_specific_params").and_then(|t| t.get("summarization")) {
            defaults.update(task)?;
        }
        let prefix = config.get("prefix").and_then(Value::as_str).unwrap_or("").to_string();
        Ok(Self { model, tokenizer, packing, defaults, prefix })
    }

    /// The source ids: prefix + text, with special tokens, truncated to the model maximum.
    ///
    /// # Errors
    /// On an empty text, or a source that does not fit the position table even truncated.
    pub fn encode_source(&self, text: &str) -> Result<Vec<u32>> {
        if text.trim().is_empty() {
            bail!("the text to summarize is empty");
        }
        let ids = self.tokenizer.encode(&format!("{}{text}", self.prefix), true)?.ids;
        let limit = self.model.config.max_position_embeddings;
        if ids.len() > limit {
            bail!("the source has {} tokens after truncation, more than the model's {limit} positions", ids.len());
        }
        Ok(ids)
    }

    /// The encoder pass over the source and a teacher-forced decoder pass
    /// over `decoder_ids` (by default just the decoder start token, as
    /// `model(input_ids, decoder_input_ids=[[start]])`): `encoder_attentions.*`,
    /// `encoder_hidden_states.*`, `decoder_attentions.*`, `cross_attentions.*`
    /// `(1, nh, T, S)`, `decoder_hidden_states.*`.
    ///
    /// # Errors
    /// On an empty text or a missing decoder start token.
    pub fn study(&self, text: &str, decoder_ids: Option<&[u32]>) -> Result<Study> {
        let source = self.encode_source(text)?;
        let start =
            self.defaults.decoder_start_token_id.context("no decoder_start_token_id in the checkpoint's settings")?;
        let decoder_ids = decoder_ids.map_or_else(|| vec![start], <[u32]>::to_vec);
        let src = ndarray::Array2::from_shape_vec((1, source.len()), source.clone()).expect("one row");
        let mask = ndarray::Array2::<u8>::ones((1, source.len()));
        let encoded = self.model.encode(src.view(), mask.view(), Keep::AllLayers);
        let mut cache = self.model.new_cache(&encoded.last_hidden_state, 1, decoder_ids.len());
        let dec = ndarray::Array2::from_shape_vec((1, decoder_ids.len()), decoder_ids.clone()).expect("one row");
        let out = self.model.decode(dec.view(), mask.view(), &mut cache, false, Keep::AllLayers);
        let mut study = Study::default();
        study.push_all("encoder_attentions", &encoded.attentions);
        study.push_all("encoder_hidden_states", &encoded.hidden_states);
        study.push_all("decoder_attentions", &out.self_attentions);
        study.push_all("cross_attentions", &out.cross_attentions);
        study.push_all("decoder_hidden_states", &out.hidden_states);
        study.metadata.insert("tokens".into(), serde_json::to_string(&[token_strings(&self.tokenizer, &source)])?);
        study
            .metadata
            .insert("decoder_tokens".into(), serde_json::to_string(&[token_strings(&self.tokenizer, &decoder_ids)])?);
        Ok(study)
    }

    /// Summarizes one text.
    ///
    /// # Errors
    /// On an empty text, inconsistent settings, or a missing decoder start token.
    pub fn summarize(&self, text: &str, config: &GenerationConfig) -> Result<Vec<Summary>> {
        let source = self.encode_source(text)?;
        let start = config
            .decoder_start_token_id
            .context("no decoder_start_token_id in generation_config.json or config.json")?;
        let max_length = config.resolved_max_length(1, self.model.config.max_position_embeddings);
        let limit = self.model.config.max_position_embeddings;
        if max_length > limit {
            bail!("max_length {max_length} exceeds the model's {limit} decoder positions; lower --max-length");
        }
        let mut session = BartSession::new(&self.model, &source, max_length);
        let sequences = generate(&mut session, &[start], config, max_length, 0, &mut |_| {})?;
        sequences
            .into_iter()
            .map(|ids| Ok(Summary { text: self.tokenizer.decode(&ids, true)?, token_ids: ids }))
            .collect()
    }
}
