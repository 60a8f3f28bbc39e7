//! `tokenizer.json` through the `tokenizers` crate, configured as Python
//! transformers uses it, and padded batches.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ndarray::Array2;
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

/// The parts of a `tokenizer.json` with a BPE model that [`parse_bpe`] reads itself.
#[derive(serde::Deserialize)]
struct BpeTokenizerFile {
    model: BpeModelFile,
    #[serde(default)]
    added_tokens: Vec<tokenizers::AddedToken>,
    version: Option<serde_json::Value>,
    truncation: Option<serde_json::Value>,
    padding: Option<serde_json::Value>,
    normalizer: Option<serde_json::Value>,
    pre_tokenizer: Option<serde_json::Value>,
    post_processor: Option<serde_json::Value>,
    decoder: Option<serde_json::Value>,
}

/// `model` of a BPE `tokenizer.json`, field for field as `tokenizers` reads it.
#[derive(serde::Deserialize)]
struct BpeModelFile {
    #[serde(rename = "type")]
    kind: String,
    dropout: Option<f32>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    end_of_word_suffix: Option<String>,
    fuse_unk: Option<bool>,
    byte_fallback: Option<bool>,
    ignore_merges: Option<bool>,
    vocab: tokenizers::models::bpe::Vocab,
    merges: Vec<Merge>,
}

/// One merge: `["a", "b"]`, or the legacy `"a b"` (split at its one space, as
/// `tokenizers` does; a `#version` line is kept as `None` and skipped).
struct Merge(Option<(String, String)>);

impl<'de> serde::Deserialize<'de> for Merge {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct MergeVisitor;
        impl<'de> serde::de::Visitor<'de> for MergeVisitor {
            type Value = Merge;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a merge: \"a b\" or [\"a\", \"b\"]")
            }
            fn visit_str<E: serde::de::Error>(self, line: &str) -> std::result::Result<Merge, E> {
                if line.starts_with("#version") {
                    return Ok(Merge(None));
                }
                let mut parts = line.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => Ok(Merge(Some((a.to_string(), b.to_string())))),
                    _ => Err(E::custom(format!("merge {line:?} is not two tokens"))),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Merge, A::Error> {
                let a: String = seq.next_element()?.ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                let b: String = seq.next_element()?.ok_or_else(|| serde::de::Error::invalid_length(1, &self))?;
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(3, &self));
                }
                Ok(Merge(Some((a, b))))
            }
        }
        deserializer.deserialize_any(MergeVisitor)
    }
}

/// A `tokenizers::Tokenizer` from a `tokenizer.json` whose model is BPE, or
/// `None` for anything else (see [`TextTokenizer::parse`]). Built as
/// `tokenizers` builds it: the model from the same options, the rest of the
/// file deserialized by `tokenizers` around a placeholder model that is then
/// replaced, and the added tokens added last, against the real vocabulary.
fn parse_bpe(text: &str) -> Option<tokenizers::Tokenizer> {
    let file: BpeTokenizerFile = serde_json::from_str(text).ok()?;
    let m = file.model;
    if m.kind != "BPE" {
        return None;
    }
    let merges = m.merges.into_iter().filter_map(|merge| merge.0).collect();
    use tokenizers::models::bpe::{BpeBuilder, BPE};
    // each option the file gives goes to the builder; an absent one keeps the builder's default
    fn given<T>(bpe: BpeBuilder, value: Option<T>, set: fn(BpeBuilder, T) -> BpeBuilder) -> BpeBuilder {
        match value {
            Some(v) => set(bpe, v),
            None => bpe,
        }
    }
    let mut bpe = BPE::builder().vocab_and_merges(m.vocab, merges);
    bpe = given(bpe, m.dropout, BpeBuilder::dropout);
    bpe = given(bpe, m.unk_token, BpeBuilder::unk_token);
    bpe = given(bpe, m.continuing_subword_prefix, BpeBuilder::continuing_subword_prefix);
    bpe = given(bpe, m.end_of_word_suffix, BpeBuilder::end_of_word_suffix);
    bpe = given(bpe, m.fuse_unk, BpeBuilder::fuse_unk);
    bpe = given(bpe, m.byte_fallback, BpeBuilder::byte_fallback);
    bpe = given(bpe, m.ignore_merges, BpeBuilder::ignore_merges);
    let bpe = bpe.build().ok()?;
    // the file without its model and added tokens; absent and null fields left out alike
    let mut rest = serde_json::Map::new();
    for (key, value) in [
        ("version", file.version),
        ("truncation", file.truncation),
        ("padding", file.padding),
        ("normalizer", file.normalizer),
        ("pre_tokenizer", file.pre_tokenizer),
        ("post_processor", file.post_processor),
        ("decoder", file.decoder),
    ] {
        if let Some(value) = value {
            rest.insert(key.to_string(), value);
        }
    }
    rest.insert("model".to_string(), serde_json::json!({"type": "BPE", "vocab": {}, "merges": []}));
    let mut tokenizer: tokenizers::Tokenizer = serde_json::Value::Object(rest).to_string().parse().ok()?;
    tokenizer.with_model(bpe);
    tokenizer.add_tokens(&file.added_tokens);
    Some(tokenizer)
}

/// transformers' placeholder for "no limit" (`VERY_LARGE_INTEGER = int(1e30)`).
const UNSET_MAX_LENGTH: f64 = 1e29;

/// One tokenized input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Segment ids (BERT's `token_type_ids`).
    pub type_ids: Vec<u32>,
}

/// A tokenizer that behaves like transformers' `PreTrainedTokenizerFast`.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// The length `truncation=True` cuts to: `model_max_length` from
    /// tokenizer_config.json, or the model's position limit.
    pub model_max_length: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (and `model_max_length` from `tokenizer_config.json`, if present).
    ///
    /// # Errors
    /// If a file cannot be read or parsed.
    pub fn from_dir(dir: &Path, max_positions: usize) -> Result<Self> {
        Self::from_parsed(Self::parse(dir)?, dir, max_positions)
    }

    /// Parses `tokenizer.json`: the slow part of loading a tokenizer, so that
    /// it can run on its own thread while the model loads.
    ///
    /// A BPE model's vocabulary and merges (GPT-2's: 50,257 and 50,000) are
    /// read here with typed deserializers and handed to `tokenizers`' own
    /// BPE builder (`parse_bpe`); everything else in the file goes through
    /// `tokenizers`. Why: `tokenizers` deserializes its model through untagged
    /// enums, which buffer the whole vocabulary and merges and then read them
    /// again: 105 ms for GPT-2's file, two thirds of the time to its first
    /// token; this way 25 ms. Any other model type (WordPiece, Unigram) or
    /// an unusual file takes `tokenizers`' path unchanged.
    ///
    /// # Errors
    /// If the file cannot be read or parsed.
    pub fn parse(dir: &Path) -> Result<tokenizers::Tokenizer> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if let Some(tokenizer) = parse_bpe(&text) {
            return Ok(tokenizer);
        }
        text.parse::<tokenizers::Tokenizer>().map_err(|e| anyhow!("cannot load {}: {e}", path.display()))
    }

    /// Completes a tokenizer [`parse`](Self::parse)d from `dir`.
    ///
    /// The padding and truncation settings stored in tokenizer.json are
    /// switched off: Python transformers ignores them and pads or truncates
    /// only when asked, per call. (all-MiniLM-L6-v2's file, for one, asks to
    /// pad every input to 128 tokens.)
    ///
    /// # Errors
    /// If tokenizer_config.json cannot be read.
    pub fn from_parsed(mut inner: tokenizers::Tokenizer, dir: &Path, max_positions: usize) -> Result<Self> {
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| anyhow!("cannot reset truncation of {}: {e}", dir.display()))?;
        let model_max_length = read_model_max_length(dir)?.unwrap_or(max_positions);
        Ok(Self { inner, model_max_length })
    }

    /// Size of the vocabulary, added tokens included (the largest id plus one).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The string of a token id, as the vocabulary spells it (`Ġthe`, `##ing`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Tokenizes one text with special tokens; with `truncation`, cuts it to
    /// `model_max_length` as `truncation=True` (longest-first, from the right) does.
    ///
    /// # Errors
    /// If the tokenizer fails on the text.
    pub fn encode(&self, text: &str, truncation: bool) -> Result<Encoded> {
        let encoding = if truncation {
            let mut truncating = self.inner.clone();
            truncating
                .with_truncation(Some(TruncationParams {
                    max_length: self.model_max_length,
                    strategy: TruncationStrategy::LongestFirst,
                    stride: 0,
                    direction: TruncationDirection::Right,
                }))
                .map_err(|e| anyhow!("cannot truncate to {}: {e}", self.model_max_length))?;
            truncating.encode(text, true)
        } else {
            self.inner.encode(text, true)
        }
        .map_err(|e| anyhow!("cannot tokenize input: {e}"))?;
        Ok(Encoded { ids: encoding.get_ids().to_vec(), type_ids: encoding.get_type_ids().to_vec() })
    }

    /// Turns ids back into text.
    ///
    /// # Errors
    /// If the tokenizer's decoder fails.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| anyhow!("cannot decode ids: {e}"))
    }
}

fn read_model_max_length(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(value
        .get("model_max_length")
        .and_then(serde_json::Value::as_f64)
        .filter(|&n| n > 0.0 && n < UNSET_MAX_LENGTH)
        .map(|n| n as usize))
}

/// Several encoded inputs, right-padded to the longest.
///
/// # Shapes
/// `input_ids`, `token_type_ids`, `attention_mask`: `(B, T)`.
#[derive(Clone, Debug)]
pub struct Batch {
    pub input_ids: Array2<u32>,
    pub token_type_ids: Array2<u32>,
    /// 1 for a real token, 0 for padding.
    pub attention_mask: Array2<u8>,
    /// The unpadded length of each input.
    pub lengths: Vec<usize>,
}

impl Batch {
    /// Pads `inputs` on the right with `pad_id` (segment 0, mask 0).
    ///
    /// # Errors
    /// If `inputs` is empty.
    pub fn pad(inputs: &[Encoded], pad_id: u32) -> Result<Self> {
        if inputs.is_empty() {
            bail!("cannot build a batch of zero inputs");
        }
        let t = inputs.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let b = inputs.len();
        let mut input_ids = Array2::from_elem((b, t), pad_id);
        let mut token_type_ids = Array2::zeros((b, t));
        let mut attention_mask = Array2::zeros((b, t));
        for (i, e) in inputs.iter().enumerate() {
            for (j, (&id, &ty)) in e.ids.iter().zip(&e.type_ids).enumerate() {
                input_ids[[i, j]] = id;
                token_type_ids[[i, j]] = ty;
                attention_mask[[i, j]] = 1;
            }
        }
        Ok(Self { input_ids, token_type_ids, attention_mask, lengths: inputs.iter().map(|e| e.ids.len()).collect() })
    }

    /// `(B, T)`
    pub fn dim(&self) -> (usize, usize) {
        self.input_ids.dim()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`parse_bpe`] builds the tokenizer `tokenizers`' own parser builds:
    /// the same ids, tokens and offsets (special tokens and added tokens
    /// included), vocabulary size and decoding, on every BPE fixture.
    #[test]
    fn bpe_fast_path_equals_tokenizers_own_parser() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        let inputs = [
            "We are SI Dream Engineering Team.",
            "Héllo Wörld! Ça va? Crème BRÛLÉE, naïve façade",
            "你好，世界！東京は晴れです。",
            "  leading and trailing spaces  ",
            "The end.<|endoftext|><s>a</s><mask> <pad>x",
            "",
        ];
        for name in ["gpt2-tiny", "gpt2-legacy-tiny", "bart-tiny", "bart-legacy-tiny"] {
            let text = std::fs::read_to_string(fixtures.join(name).join("tokenizer.json")).unwrap();
            let fast = parse_bpe(&text).unwrap_or_else(|| panic!("{name}: not taken by the BPE path"));
            let slow: tokenizers::Tokenizer = text.parse().unwrap();
            assert_eq!(fast.get_vocab_size(true), slow.get_vocab_size(true), "{name}: vocabulary size");
            for input in inputs {
                for special in [false, true] {
                    let (a, b) = (fast.encode(input, special).unwrap(), slow.encode(input, special).unwrap());
                    assert_eq!(a.get_ids(), b.get_ids(), "{name} {input:?}: ids");
                    assert_eq!(a.get_tokens(), b.get_tokens(), "{name} {input:?}: tokens");
                    assert_eq!(a.get_offsets(), b.get_offsets(), "{name} {input:?}: offsets");
                    assert_eq!(
                        fast.decode(a.get_ids(), true).unwrap(),
                        slow.decode(b.get_ids(), true).unwrap(),
                        "{name} {input:?}: decoding"
                    );
                }
            }
        }
        let wordpiece = std::fs::read_to_string(fixtures.join("bert-tiny").join("tokenizer.json")).unwrap();
        assert!(parse_bpe(&wordpiece).is_none(), "WordPiece must take tokenizers' own path");
    }
}
