//! Greedy search and sampling (transformers' `_sample`).

use anyhow::{bail, Result};
use ndarray::Array2;

use super::beam::beam_search;
use super::config::GenerationConfig;
use super::logits::{build_processors, softmax, LogitsProcessor};
use super::rng::Rng;
use super::Decoder;

/// Generates continuations of one prompt.
///
/// Returns `num_return_sequences` sequences, each the prompt followed by the
/// new tokens (rows that stopped early are padded with the pad id, as
/// transformers pads them). `on_token` sees each new token of row 0 as it is
/// chosen (for streaming; beam search, which cannot know row 0's fate in
/// advance, calls it at the end).
///
/// `max_length` is the resolved length limit
/// ([`GenerationConfig::resolved_max_length`]).
///
/// # Errors
/// If the settings are inconsistent, the prompt is empty, or the prompt
/// already reaches `max_length` (transformers refuses that too).
pub fn generate(
    decoder: &mut dyn Decoder,
    prompt: &[u32],
    config: &GenerationConfig,
    max_length: usize,
    seed: u64,
    on_token: &mut dyn FnMut(u32),
) -> Result<Vec<Vec<u32>>> {
    config.validate()?;
    if prompt.is_empty() {
        bail!("the prompt is empty: generation needs at least one token to start from");
    }
    if prompt.len() >= max_length {
        bail!(
            "the input is {} tokens long but the length limit is {max_length}; raise max_length or use max_new_tokens",
            prompt.len()
        );
    }
    let processors = build_processors(config, prompt.len(), max_length);
    if config.num_beams > 1 {
        let out = beam_search(decoder, prompt, config, max_length, &processors)?;
        out[0][prompt.len()..].iter().for_each(|&t| on_token(t));
        return Ok(out);
    }
    Ok(sample(decoder, prompt, config, max_length, &processors, seed, on_token))
}

/// Greedy decoding (`do_sample = false`) or multinomial sampling, one row per
/// returned sequence.
///
/// Each step: scores = processors(logits); next token = argmax (first of
/// equal maxima, as `torch.argmax`) or a draw from softmax(scores); rows that
/// already produced EOS get the pad token; stop when every row has finished
/// or the length limit is reached.
///
/// The math: `docs/attention.md`, section "8. Decoding".
fn sample(
    decoder: &mut dyn Decoder,
    prompt: &[u32],
    config: &GenerationConfig,
    max_length: usize,
    processors: &[Box<dyn LogitsProcessor>],
    seed: u64,
    on_token: &mut dyn FnMut(u32),
) -> Vec<Vec<u32>> {
    let rows = config.num_return_sequences;
    let pad = config.pad_token_id.or_else(|| config.eos_token_id.first().copied()).unwrap_or(0);
    let mut rng = Rng::new(seed);
    let mut sequences: Vec<Vec<u32>> = vec![prompt.to_vec(); rows];
    let mut unfinished = vec![true; rows];
    // (rows, T): every row starts from the whole prompt
    let mut feed = Array2::from_shape_fn((rows, prompt.len()), |(_, j)| prompt[j]);
    while sequences[0].len() < max_length {
        let logits = decoder.step(feed.view()); // (rows, V)
        let mut next = vec![0u32; rows];
        for (r, row) in logits.rows().into_iter().enumerate() {
            let mut scores = row.to_vec();
            processors.iter().for_each(|p| p.process(&sequences[r], &mut scores));
            let token = if config.do_sample {
                rng.categorical(&softmax(&scores))
            } else {
                (0..scores.len()).fold(0, |best, i| if scores[i] > scores[best] { i } else { best })
            } as u32;
            next[r] = if unfinished[r] { token } else { pad };
        }
        for r in 0..rows {
            sequences[r].push(next[r]);
            if config.eos_token_id.contains(&next[r]) {
                unfinished[r] = false;
            }
        }
        on_token(next[0]);
        if unfinished.iter().all(|u| !u) {
            break;
        }
        feed = Array2::from_shape_fn((rows, 1), |(r, _)| next[r]);
    }
    sequences
}
