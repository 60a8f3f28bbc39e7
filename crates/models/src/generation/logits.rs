//! Logits processors: small, composable rules that rewrite next-token scores
//! before a token is chosen, one struct per transformers class, applied in the
//! order transformers' `_get_logits_processor` builds them ([`build_processors`]).
//!
//! Each sees the whole sequence so far (prompt included for decoder-only
//! models; the decoder ids for encoder-decoder models) and one row of scores.

use super::config::GenerationConfig;

/// The score of a banned token (transformers' `filter_value`).
pub const BANNED: f32 = f32::NEG_INFINITY;

/// A rule that rewrites one row of next-token scores.
pub trait LogitsProcessor: Send + Sync {
    /// `ids`: the sequence so far; `scores`: `(V)` scores for the next token.
    fn process(&self, ids: &[u32], scores: &mut [f32]);
}

/// `RepetitionPenaltyLogitsProcessor` (Keskar et al., 2019): every token
/// already in the sequence has its score divided by `penalty` if positive,
/// multiplied if negative.
pub struct RepetitionPenalty(pub f32);

impl LogitsProcessor for RepetitionPenalty {
    fn process(&self, ids: &[u32], scores: &mut [f32]) {
        // Read every original score first: a repeated id is penalised once.
        let penalised: Vec<(usize, f32)> = ids
            .iter()
            .map(|&id| {
                let s = scores[id as usize];
                (id as usize, if s < 0.0 { s * self.0 } else { s / self.0 })
            })
            .collect();
        for (i, s) in penalised {
            scores[i] = s;
        }
    }
}

/// `NoRepeatNGramLogitsProcessor`: bans any token that would complete an
/// n-gram already present in the sequence.
pub struct NoRepeatNGram(pub usize);

impl LogitsProcessor for NoRepeatNGram {
    fn process(&self, ids: &[u32], scores: &mut [f32]) {
        let n = self.0;
        // Nothing to ban until a full n-gram can be completed: cur_len + 1 >= n.
        if n == 0 || ids.len() + 1 < n {
            return;
        }
        let prefix = &ids[ids.len() + 1 - n..];
        for gram in ids.windows(n) {
            if &gram[..n - 1] == prefix {
                scores[gram[n - 1] as usize] = BANNED;
            }
        }
    }
}

/// `MinLengthLogitsProcessor`: EOS is banned while the sequence is shorter than `min_length`.
pub struct MinLength {
    pub min_length: usize,
    pub eos: Vec<u32>,
}

impl LogitsProcessor for MinLength {
    fn process(&self, ids: &[u32], scores: &mut [f32]) {
        if ids.len() < self.min_length {
            self.eos.iter().for_each(|&e| scores[e as usize] = BANNED);
        }
    }
}

/// `MinNewTokensLengthLogitsProcessor`: EOS is banned until `min_new_tokens`
/// tokens were generated after the `prompt_len` prompt tokens.
pub struct MinNewTokens {
    pub prompt_len: usize,
    pub min_new_tokens: usize,
    pub eos: Vec<u32>,
}

impl LogitsProcessor for MinNewTokens {
    fn process(&self, ids: &[u32], scores: &mut [f32]) {
        if ids.len() - self.prompt_len < self.min_new_tokens {
            self.eos.iter().for_each(|&e| scores[e as usize] = BANNED);
        }
    }
}

/// `ForcedBOSTokenLogitsProcessor`: the first generated token (sequence length 1,
/// after the decoder start token) is forced.
pub struct ForcedBos(pub u32);

impl LogitsProcessor for ForcedBos {
    fn process(&self, ids: &[u32], scores: &mut [f32]) {
        if ids.len() == 1 {
            force(scores, &[self.0]);
        }
    }
}

/// `ForcedEOSTokenLogitsProcessor`: the token at the last position (`max_length - 1`) is forced to EOS.
pub struct ForcedEos {
    pub max_length: usize,
    pub eos: Vec<u32>,
}

impl LogitsProcessor for ForcedEos {
    fn process(&self, ids: &[u32], scores: &mut [f32]) {
        if ids.len() + 1 == self.max_length {
            force(scores, &self.eos);
        }
    }
}

/// Every score becomes `-inf` except the forced ids, which become 0.
fn force(scores: &mut [f32], ids: &[u32]) {
    scores.fill(BANNED);
    ids.iter().for_each(|&i| scores[i as usize] = 0.0);
}

/// `TemperatureLogitsWarper`: `scores / T`; `T < 1` sharpens, `T > 1` flattens.
pub struct Temperature(pub f32);

impl LogitsProcessor for Temperature {
    fn process(&self, _ids: &[u32], scores: &mut [f32]) {
        scores.iter_mut().for_each(|s| *s /= self.0);
    }
}

/// `TopKLogitsWarper`: keeps the `k` highest scores (and any tied with the
/// k-th), bans the rest.
pub struct TopK(pub usize);

impl LogitsProcessor for TopK {
    fn process(&self, _ids: &[u32], scores: &mut [f32]) {
        let k = self.0.min(scores.len());
        if k == 0 {
            return;
        }
        let mut sorted = scores.to_vec();
        sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        let kth = sorted[k - 1];
        scores.iter_mut().filter(|s| **s < kth).for_each(|s| *s = BANNED);
    }
}

/// `TopPLogitsWarper` (nucleus sampling, Holtzman et al., 2019): with the
/// scores sorted ascending, drops the tokens whose cumulative probability is
/// `<= 1 - top_p`, always keeping the `min_tokens_to_keep` most likely.
pub struct TopP {
    pub top_p: f32,
    pub min_tokens_to_keep: usize,
}

impl LogitsProcessor for TopP {
    fn process(&self, _ids: &[u32], scores: &mut [f32]) {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        // ascending, ties in index order (a stable sort)
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let probs = softmax(&order.iter().map(|&i| scores[i]).collect::<Vec<_>>());
        let keep_from = scores.len().saturating_sub(self.min_tokens_to_keep);
        // PyTorch's cumsum accumulates in f64 and rounds each partial sum to f32;
        // `1 - top_p` is a Python float rounded to f32 for the comparison.
        let threshold = (1.0 - self.top_p as f64) as f32;
        let mut cumulative = 0.0f64;
        let mut remove = Vec::new();
        for (rank, &i) in order.iter().enumerate() {
            cumulative += probs[rank] as f64;
            if (cumulative as f32) <= threshold && rank < keep_from {
                remove.push(i);
            }
        }
        remove.into_iter().for_each(|i| scores[i] = BANNED);
    }
}

/// Softmax of a row in f32, max-subtracted.
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let exps: Vec<f32> = scores.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// Log-softmax of a row in f32: `x - max - log(sum(exp(x - max)))`.
pub fn log_softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let log_sum = scores.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
    scores.iter().map(|&v| v - max - log_sum).collect()
}

/// The processors a config asks for, in transformers' order: repetition
/// penalty, no-repeat-ngram, min length, min new tokens, forced BOS, forced
/// EOS; then, when sampling, temperature, top-k, top-p.
///
/// `prompt_len` is the length of the sequence before generation (for
/// encoder-decoder models, the decoder start), `max_length` the resolved limit.
///
/// The math: `docs/attention.md`, section "8. Decoding".
pub fn build_processors(
    config: &GenerationConfig,
    prompt_len: usize,
    max_length: usize,
) -> Vec<Box<dyn LogitsProcessor>> {
    let mut list: Vec<Box<dyn LogitsProcessor>> = Vec::new();
    let eos = config.eos_token_id.clone();
    if config.repetition_penalty != 1.0 {
        list.push(Box::new(RepetitionPenalty(config.repetition_penalty)));
    }
    if config.no_repeat_ngram_size > 0 {
        list.push(Box::new(NoRepeatNGram(config.no_repeat_ngram_size)));
    }
    if config.min_length > 0 && !eos.is_empty() {
        list.push(Box::new(MinLength { min_length: config.min_length, eos: eos.clone() }));
    }
    if let Some(n) = config.min_new_tokens.filter(|&n| n > 0 && !eos.is_empty()) {
        list.push(Box::new(MinNewTokens { prompt_len, min_new_tokens: n, eos: eos.clone() }));
    }
    if let Some(bos) = config.forced_bos_token_id {
        list.push(Box::new(ForcedBos(bos)));
    }
    if let Some(e) = config.forced_eos_token_id {
        list.push(Box::new(ForcedEos { max_length, eos: vec![e] }));
    }
    if config.do_sample {
        // transformers keeps 2 tokens for beam sampling, which this engine does not offer
        // (`GenerationConfig::validate` rejects it), so one token is always enough.
        let min_tokens_to_keep = 1;
        if config.temperature != 1.0 {
            list.push(Box::new(Temperature(config.temperature)));
        }
        if config.top_k != 0 {
            list.push(Box::new(TopK(config.top_k.max(min_tokens_to_keep))));
        }
        if config.top_p < 1.0 {
            list.push(Box::new(TopP { top_p: config.top_p, min_tokens_to_keep }));
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_scores() {
        let mut s = vec![2.0, -2.0, 1.0];
        RepetitionPenalty(2.0).process(&[0, 1, 1], &mut s);
        assert_eq!(s, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn no_repeat_ngram_bans_completions_of_seen_ngrams() {
        // bigrams seen: (1,2), (2,3), (3,1); the sequence ends in 1, so 2 is banned
        let mut s = vec![0.0; 5];
        NoRepeatNGram(2).process(&[1, 2, 3, 1], &mut s);
        assert_eq!(s, vec![0.0, 0.0, BANNED, 0.0, 0.0]);
        // trigram (1,2,3) seen, sequence ends in (1,2): 3 banned
        let mut s = vec![0.0; 5];
        NoRepeatNGram(3).process(&[1, 2, 3, 4, 1, 2], &mut s);
        assert_eq!(s, vec![0.0, 0.0, 0.0, BANNED, 0.0]);
    }

    #[test]
    fn min_lengths_ban_eos_until_reached() {
        let p = MinLength { min_length: 3, eos: vec![1] };
        let mut s = vec![0.0; 3];
        p.process(&[5, 5], &mut s);
        assert_eq!(s[1], BANNED);
        let mut s = vec![0.0; 3];
        p.process(&[5, 5, 5], &mut s);
        assert_eq!(s[1], 0.0);
        let p = MinNewTokens { prompt_len: 2, min_new_tokens: 1, eos: vec![2] };
        let mut s = vec![0.0; 3];
        p.process(&[0, 0], &mut s);
        assert_eq!(s[2], BANNED);
    }

    #[test]
    fn forced_tokens_take_all_the_probability() {
        let mut s = vec![1.0, 2.0, 3.0];
        ForcedBos(0).process(&[2], &mut s);
        assert_eq!(s, vec![0.0, BANNED, BANNED]);
        let mut s = vec![1.0, 2.0, 3.0];
        ForcedEos { max_length: 4, eos: vec![1] }.process(&[2, 2, 2], &mut s);
        assert_eq!(s, vec![BANNED, 0.0, BANNED]);
    }

    #[test]
    fn top_k_keeps_ties_with_the_kth() {
        let mut s = vec![1.0, 3.0, 2.0, 2.0, 0.0];
        TopK(2).process(&[], &mut s);
        assert_eq!(s, vec![BANNED, 3.0, 2.0, 2.0, BANNED]);
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // probabilities 0.5, 0.25, 0.125, 0.125 (as logs)
        let logs: Vec<f32> = [0.5f32, 0.25, 0.125, 0.125].iter().map(|p| p.ln()).collect();
        let mut s = logs.clone();
        TopP { top_p: 0.7, min_tokens_to_keep: 1 }.process(&[], &mut s);
        // ascending cumulative: 0.125, 0.25, 0.5, 1.0; removed where <= 0.3
        assert_eq!(s, vec![logs[0], logs[1], BANNED, BANNED]);
        let mut s = logs.clone();
        TopP { top_p: 0.0, min_tokens_to_keep: 1 }.process(&[], &mut s);
        assert_eq!(s.iter().filter(|v| **v > BANNED).count(), 1);
    }
}
