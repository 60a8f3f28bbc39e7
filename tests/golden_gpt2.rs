//! Golden tests: GPT-2 forward passes and `generate` against transformers.
//!
//! Hidden states and logits within 1e-4; generated token ids identical; the
//! KV cache equal to full recomputation within 1e-5 at every step.

mod common;

use common::{assert_close, fixture, max_abs_diff, Reference};
use models::generation::logits::{softmax, LogitsProcessor, TopK, TopP};
use models::generation::rng::Rng;
use models::generation::{Decoder, GenerationConfig};
use models::gpt2::Gpt2Session;
use models::pipelines::text_generation::TextGeneration;
use models::Keep;
use ndarray::{Array2, Axis};

const FIXTURES: [&str; 2] = ["gpt2-tiny", "gpt2-legacy-tiny"];

#[test]
fn gpt2_forward_matches_pytorch_layer_by_layer() {
    for name in FIXTURES {
        let dir = fixture(name);
        let reference = Reference::load(&dir);
        let pipe = TextGeneration::load(&dir).unwrap();
        for (i, (text, want_ids)) in reference.inputs().iter().enumerate() {
            let ids = pipe.encode_prompt(text).unwrap();
            assert_eq!(&ids, want_ids, "{name}: token ids of {text:?}");
            let batch = Array2::from_shape_vec((1, ids.len()), ids.clone()).unwrap();
            let mut cache = pipe.model.new_cache(1, ids.len());
            let out = pipe.model.forward(batch.view(), &mut cache, true, Keep::AllLayers);
            assert_eq!(out.hidden_states.len(), pipe.model.config.n_layer + 1, "{name}: hidden states");
            for (layer, h) in out.hidden_states.iter().enumerate() {
                let want = reference.tensor(&format!("input{i}.hidden_states.{layer}"));
                let got: Vec<f32> = h.iter().copied().collect();
                assert_close(
                    &format!("{name} {text:?}: hidden state {layer} (0 = embeddings)"),
                    &got,
                    want.as_slice().unwrap(),
                    1e-4,
                );
            }
            let last = out.logits.index_axis(Axis(1), ids.len() - 1).to_owned();
            let want = reference.tensor(&format!("input{i}.last_logits"));
            assert_close(
                &format!("{name} {text:?}: last logits"),
                last.as_slice().unwrap(),
                want.as_slice().unwrap(),
                1e-4,
            );
        }
    }
}

#[test]
fn kv_cache_decoding_equals_full_recomputation_at_every_step() {
    let pipe = TextGeneration::load(&fixture("gpt2-tiny")).unwrap();
    let mut seq = pipe.encode_prompt("We are SI Dream Engineering Team.").unwrap();
    let mut session = Gpt2Session::new(&pipe.model, 40);
    let mut feed = Array2::from_shape_vec((1, seq.len()), seq.clone()).unwrap();
    for step in 0..20 {
        let cached = session.step(feed.view());
        let full_batch = Array2::from_shape_vec((1, seq.len()), seq.clone()).unwrap();
        let mut fresh = pipe.model.new_cache(1, seq.len());
        let full =
            pipe.model.forward(full_batch.view(), &mut fresh, false, Keep::Result).logits.index_axis_move(Axis(1), 0);
        let diff = max_abs_diff(cached.as_slice().unwrap(), full.as_slice().unwrap());
        assert!(diff <= 1e-5, "step {step}: cached vs recomputed logits differ by {diff:e}");
        let next = (0..cached.ncols()).fold(0, |b, j| if cached[[0, j]] > cached[[0, b]] { j } else { b }) as u32;
        seq.push(next);
        feed = Array2::from_elem((1, 1), next);
    }
}

/// Runs every generation case of a fixture and compares ids exactly.
fn check_generation_cases(name: &str) {
    let dir = fixture(name);
    let reference = Reference::load(&dir);
    let pipe = TextGeneration::load(&dir).unwrap();
    for case in reference.cases() {
        let case_name = case["name"].as_str().unwrap();
        let prompt = &reference.case_input(case, "prompt");
        let mut config = pipe.defaults.clone();
        config.update(&case["generate_kwargs"]).unwrap();
        let got: Vec<Vec<u32>> =
            pipe.generate(prompt, &config, 0, &mut |_| {}).unwrap().into_iter().map(|g| g.token_ids).collect();
        let want: Vec<Vec<u32>> = serde_json::from_value(case["output_ids"].clone()).unwrap();
        if got != want {
            let first = got[0].iter().zip(&want[0]).position(|(a, b)| a != b);
            panic!(
                "{name} case {case_name}: generated ids differ (first difference in sequence 0 at position {first:?}; reference top logits at each step: {})\n got: {got:?}\nwant: {want:?}",
                case["step_top_logits"]
            );
        }
    }
}

#[test]
fn greedy_beam_and_penalised_generation_match_transformers() {
    check_generation_cases("gpt2-tiny");
}

#[test]
fn the_original_checkpoint_layout_generates_identically() {
    check_generation_cases("gpt2-legacy-tiny");
}

#[test]
fn generation_defaults_are_resolved_as_transformers_does() {
    // generation_config.json: transformers' defaults plus its token ids
    let tiny = TextGeneration::load(&fixture("gpt2-tiny")).unwrap().defaults;
    assert_eq!((tiny.do_sample, tiny.max_length, tiny.top_k, tiny.num_beams), (false, None, 50, 1));
    // nothing set: 20 new tokens, capped at the position limit
    assert_eq!((tiny.resolved_max_length(7, 64), tiny.resolved_max_length(50, 64)), (27, 64));
    assert_eq!(tiny.eos_token_id, vec![50256]);
    // no generation_config.json: config.json, then task_specific_params["text-generation"]
    let legacy = TextGeneration::load(&fixture("gpt2-legacy-tiny")).unwrap().defaults;
    assert_eq!((legacy.do_sample, legacy.max_length, legacy.top_k), (true, Some(50), 50));
}

#[test]
fn sampling_is_reproducible_and_top_k_one_is_greedy() {
    let pipe = TextGeneration::load(&fixture("gpt2-tiny")).unwrap();
    let mut config = pipe.defaults.clone();
    config.update(&serde_json::json!({"do_sample": true, "max_new_tokens": 12})).unwrap();
    let run = |seed: u64, config: &GenerationConfig| {
        pipe.generate("The meaning of life is ", config, seed, &mut |_| {}).unwrap()
    };
    assert_eq!(run(7, &config), run(7, &config), "same seed, same output");
    assert_ne!(run(7, &config), run(8, &config), "another seed, another output");
    let mut top1 = config.clone();
    top1.top_k = 1;
    let mut greedy = config.clone();
    greedy.do_sample = false;
    assert_eq!(run(3, &top1), run(3, &greedy), "top_k = 1 is greedy decoding");
}

#[test]
fn samples_only_come_from_the_top_k_and_the_nucleus() {
    let logits: Vec<f32> = (0..200).map(|i| ((i * 37) % 101) as f32 * 0.05).collect();
    let mut rng = Rng::new(1);
    for (processor, allowed) in [
        (Box::new(TopK(5)) as Box<dyn LogitsProcessor>, 5usize),
        (Box::new(TopP { top_p: 0.3, min_tokens_to_keep: 1 }), 0),
    ] {
        let mut scores = logits.clone();
        processor.process(&[], &mut scores);
        let kept: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] > f32::NEG_INFINITY).collect();
        if allowed > 0 {
            // ties with the 5th-best score are kept too
            let fifth = {
                let mut s = logits.clone();
                s.sort_by(|a, b| b.total_cmp(a));
                s[4]
            };
            assert!(kept.iter().all(|&i| logits[i] >= fifth));
        } else {
            let probs = softmax(&logits);
            let mass: f32 = kept.iter().map(|&i| probs[i]).sum();
            assert!(mass >= 0.3, "the nucleus holds at least top_p of the mass ({mass})");
        }
        let probs = softmax(&scores);
        for _ in 0..2000 {
            let drawn = rng.categorical(&probs);
            assert!(kept.contains(&drawn), "drew token {drawn} outside the kept set");
        }
    }
}
