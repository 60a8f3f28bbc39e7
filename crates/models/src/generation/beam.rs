//! Beam search, step for step as transformers' (vectorised, v4.50+) `_beam_search`.
//!
//! Per step, with `num_beams` running beams and `K = max(2, 1 + n_eos) * num_beams`:
//! 1. `log p = log_softmax(logits)`, then the logits processors, then add each
//!    beam's running score;
//! 2. take the top `K` of all `num_beams * V` continuations;
//! 3. a continuation *hits a stopping criterion* if its token is EOS or it
//!    reaches `max_length`;
//! 4. running beams: the best `num_beams` continuations, those that hit a
//!    criterion pushed down by `-1e9`;
//! 5. finished hypotheses: the top `num_beams` continuations that hit a
//!    criterion are scored `sum log p / generated_len ^ length_penalty` and
//!    merged with the finished list, keeping the best `num_beams`;
//! 6. stop when no running beam can improve on the finished list (the
//!    `early_stopping` rule), when `early_stopping = true` and the list is
//!    full, or when every continuation hit a criterion.
//!
//! The `-1e9` sentinels and f32 arithmetic are kept exactly, because they
//! decide ties the same way transformers does.

use anyhow::Result;
use ndarray::Array2;

use super::config::{EarlyStopping, GenerationConfig};
use super::logits::{log_softmax, LogitsProcessor};
use super::Decoder;

/// transformers' "very unlikely" score.
const NEG: f32 = -1.0e9;

/// One entry of the finished-hypotheses list.
#[derive(Clone, Debug)]
struct Hypothesis {
    tokens: Vec<u32>,
    score: f32,
    finished: bool,
    /// Tokens generated after the prompt (0 for an empty slot).
    generated: usize,
}

/// The indices of the `k` largest scores, largest first, ties by lower index
/// (a stable descending sort, as `torch.topk` orders equal values on CPU).
pub fn top_k_indices(scores: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(scores.len());
    let desc = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, desc);
        idx.truncate(k);
    }
    idx.sort_by(desc);
    idx
}

/// `x / len^length_penalty`, the power taken in f64 as Python does, the division in f32.
fn length_normalised(x: f32, len: usize, length_penalty: f32) -> f32 {
    x / (len as f64).powf(length_penalty as f64) as f32
}

/// Runs beam search from one prompt and returns the best
/// `num_return_sequences` hypotheses, best first, each the prompt plus its
/// tokens, padded to a common length as `generate` pads them.
///
/// # Errors
/// Never for consistent settings (validated by the caller); kept fallible for symmetry.
///
/// The math: `docs/attention.md`, section "8. Decoding".
pub fn beam_search(
    decoder: &mut dyn Decoder,
    prompt: &[u32],
    config: &GenerationConfig,
    max_length: usize,
    processors: &[Box<dyn LogitsProcessor>],
) -> Result<Vec<Vec<u32>>> {
    let num_beams = config.num_beams;
    let prompt_len = prompt.len();
    let eos = &config.eos_token_id;
    let beams_to_keep = 2.max(1 + eos.len()) * num_beams;
    let lp = config.length_penalty;

    let mut running: Vec<Vec<u32>> = vec![prompt.to_vec(); num_beams];
    let mut running_scores = vec![NEG; num_beams];
    running_scores[0] = 0.0;
    let mut finished: Vec<Hypothesis> =
        vec![Hypothesis { tokens: Vec::new(), score: NEG, finished: false, generated: 0 }; num_beams];
    let mut improvable = true;
    let mut cur_len = prompt_len;
    // every beam starts from the whole prompt
    let mut feed = Array2::from_shape_fn((num_beams, prompt_len), |(_, j)| prompt[j]);

    while cur_len < max_length {
        let logits = decoder.step(feed.view()); // (num_beams, V)
        let vocab = logits.ncols();
        // 1. accumulated log-probabilities of every continuation, (num_beams * V)
        let mut accumulated = Vec::with_capacity(num_beams * vocab);
        for (b, row) in logits.rows().into_iter().enumerate() {
            let mut lp_row = log_softmax(row.as_slice().expect("logits rows are contiguous"));
            processors.iter().for_each(|p| p.process(&running[b], &mut lp_row));
            accumulated.extend(lp_row.iter().map(|&v| v + running_scores[b]));
        }
        // 2. the top K continuations
        let top = top_k_indices(&accumulated, beams_to_keep);
        let candidates: Vec<(Vec<u32>, f32, bool)> = top
            .iter()
            .map(|&i| {
                let (beam, token) = (i / vocab, (i % vocab) as u32);
                let mut tokens = running[beam].clone();
                tokens.push(token);
                // 3. stopping criteria: length limit or EOS
                let hits = tokens.len() >= max_length || eos.contains(&token);
                (tokens, accumulated[i], hits)
            })
            .collect();

        // 4. the next running beams
        let running_candidate_scores: Vec<f32> =
            candidates.iter().map(|(_, s, hits)| s + if *hits { NEG } else { 0.0 }).collect();
        let keep = top_k_indices(&running_candidate_scores, num_beams);
        let order: Vec<usize> = keep.iter().map(|&k| top[k] / vocab).collect();
        running = keep.iter().map(|&k| candidates[k].0.clone()).collect();
        running_scores = keep.iter().map(|&k| running_candidate_scores[k]).collect();

        // 5. the finished hypotheses
        let all_full = finished.iter().all(|h| h.finished) && config.early_stopping == EarlyStopping::Always;
        let generated = cur_len + 1 - prompt_len;
        let mut merged = finished.clone();
        for (k, (tokens, score, hits)) in candidates.iter().enumerate() {
            let just_finished = *hits && k < num_beams;
            let mut s = length_normalised(*score, generated, lp);
            s += if all_full { NEG } else { 0.0 };
            s += if improvable { 0.0 } else { NEG };
            s += if just_finished { 0.0 } else { NEG };
            merged.push(Hypothesis { tokens: tokens.clone(), score: s, finished: just_finished, generated });
        }
        let merged_scores: Vec<f32> = merged.iter().map(|h| h.score).collect();
        finished = top_k_indices(&merged_scores, num_beams).into_iter().map(|i| merged[i].clone()).collect();

        decoder.reorder(&order);
        cur_len += 1;

        // 6. can a running beam still improve on the finished list?
        let hypothetical_len = if config.early_stopping == EarlyStopping::Never && lp > 0.0 {
            max_length - prompt_len
        } else {
            cur_len - prompt_len
        };
        let best_running = length_normalised(running_scores[0], hypothetical_len, lp);
        let worst_finished = finished.iter().map(|h| h.score).fold(f32::INFINITY, f32::min);
        improvable =
            improvable && finished.iter().any(|h| best_running > if h.finished { worst_finished } else { NEG });
        let list_full = finished.iter().all(|h| h.finished) && config.early_stopping == EarlyStopping::Always;
        let all_hit = candidates.iter().all(|(_, _, hits)| *hits);
        if !improvable || list_full || all_hit {
            break;
        }
        feed = Array2::from_shape_fn((num_beams, 1), |(b, _)| *running[b].last().expect("non-empty"));
    }

    // Pad to the longest returned hypothesis with `pad_token_id or eos[0]`
    // (Python's `or`: a pad id of 0 falls through to EOS).
    let fill = match (config.pad_token_id.filter(|&p| p != 0), eos.first()) {
        (Some(p), _) => p,
        (None, Some(&e)) => e,
        (None, None) => config.pad_token_id.unwrap_or(0),
    };
    let returned = &finished[..config.num_return_sequences.min(num_beams)];
    let out_len = prompt_len + returned.iter().map(|h| h.generated).max().unwrap_or(0);
    Ok(returned
        .iter()
        .map(|h| {
            let mut tokens = if h.tokens.is_empty() { prompt.to_vec() } else { h.tokens.clone() };
            tokens.resize(out_len, fill);
            tokens
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_score_then_index() {
        assert_eq!(top_k_indices(&[1.0, 3.0, 3.0, 2.0, 5.0], 3), vec![4, 1, 2]);
        assert_eq!(top_k_indices(&[0.0, 0.0, 0.0], 2), vec![0, 1]);
        assert_eq!(top_k_indices(&[1.0, 2.0], 5), vec![1, 0]);
    }

    #[test]
    fn length_penalty_ranks_long_and_short_hypotheses() {
        // sum log p = -6 over 3 tokens vs -4 over 2 tokens
        assert!(length_normalised(-6.0, 3, 1.0) == length_normalised(-4.0, 2, 1.0));
        // a positive penalty favours the longer one, a negative the shorter one
        assert!(length_normalised(-6.0, 3, 2.0) > length_normalised(-4.0, 2, 2.0));
        assert!(length_normalised(-6.0, 3, 0.0) < length_normalised(-4.0, 2, 0.0));
    }

    /// A toy model: every step, from any history, p(EOS) = 0.5, p(a) = 0.3, p(b) = 0.2.
    struct Toy {
        steps: usize,
    }

    const EOS: u32 = 0;

    impl Decoder for Toy {
        fn step(&mut self, tokens: ndarray::ArrayView2<u32>) -> Array2<f32> {
            self.steps += 1;
            let row = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
            Array2::from_shape_fn((tokens.nrows(), 3), |(_, j)| row[j])
        }

        fn reorder(&mut self, _order: &[usize]) {}
    }

    fn run(
        early_stopping: EarlyStopping,
        length_penalty: f32,
        processors: &[Box<dyn LogitsProcessor>],
    ) -> (Vec<Vec<u32>>, usize) {
        let config = GenerationConfig {
            num_beams: 2,
            num_return_sequences: 2,
            eos_token_id: vec![EOS],
            pad_token_id: Some(9),
            early_stopping,
            length_penalty,
            ..GenerationConfig::default()
        };
        let mut toy = Toy { steps: 0 };
        let out = beam_search(&mut toy, &[7], &config, 10, processors).unwrap();
        (out, toy.steps)
    }

    #[test]
    fn early_stopping_true_stops_once_num_beams_hypotheses_are_finished() {
        // step 1 finishes [EOS] (-0.69); step 2 finishes [a EOS] (-1.90 / 2) and [b EOS]:
        // two finished hypotheses for two beams, so the search stops after 2 steps.
        let (out, steps) = run(EarlyStopping::Always, 1.0, &[]);
        assert_eq!(steps, 2);
        assert_eq!(out, vec![vec![7, EOS, 9], vec![7, 1, EOS]]);
    }

    #[test]
    fn early_stopping_false_stops_when_the_current_length_cannot_improve() {
        // after step 2 the best running beam, [a a] at -2.41 / 2, cannot beat -0.95
        let (out, steps) = run(EarlyStopping::Heuristic, 1.0, &[]);
        assert_eq!((out, steps), run(EarlyStopping::Always, 1.0, &[]));
    }

    #[test]
    fn early_stopping_never_looks_ahead_to_max_length() {
        // "never" with a positive length penalty divides the best running score
        // by the longest possible length, so it keeps searching much longer,
        // without finding a better hypothesis here.
        let (out, steps) = run(EarlyStopping::Never, 1.0, &[]);
        assert!(steps > 4, "ran {steps} steps");
        assert_eq!(out, run(EarlyStopping::Always, 1.0, &[]).0);
    }

    #[test]
    fn length_penalty_decides_between_short_and_long_hypotheses() {
        // with no length normalisation the one-token [EOS] wins; with a strong
        // penalty exponent longer hypotheses win
        let (short, _) = run(EarlyStopping::Never, 0.0, &[]);
        assert_eq!(short[0], vec![7, EOS, 9]);
        let (long, _) = run(EarlyStopping::Never, 3.0, &[]);
        let generated = |seq: &Vec<u32>| seq.iter().skip(1).take_while(|&&t| t != 9).count();
        assert!(generated(&long[0]) > 3, "{long:?}");
    }

    #[test]
    fn ngram_blocking_applies_to_each_beams_own_history() {
        use crate::generation::logits::NoRepeatNGram;
        // no bigram may repeat: a beam that has said "a a" may not say "a" after "a" again
        let processors: Vec<Box<dyn LogitsProcessor>> = vec![Box::new(NoRepeatNGram(2))];
        let (out, _) = run(EarlyStopping::Never, 3.0, &processors);
        for seq in &out {
            let mut seen = std::collections::HashSet::new();
            for pair in seq.windows(2).filter(|p| !p.contains(&9)) {
                assert!(seen.insert(pair.to_vec()), "bigram {pair:?} repeated in {seq:?}");
            }
        }
    }
}
