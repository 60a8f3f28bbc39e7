//! Golden tests: BART encoder, first decoder step and beam-search summaries
//! against transformers. Encoder hidden states and logits within 1e-4;
//! summary ids identical.

mod common;

use common::{assert_close, fixture, Reference};
use models::bart::BartSession;
use models::generation::Decoder;
use models::pipelines::summarization::Summarization;
use models::Keep;
use ndarray::Array2;

const FIXTURES: [&str; 2] = ["bart-tiny", "bart-legacy-tiny"];

#[test]
fn bart_encoder_and_first_decoder_step_match_pytorch() {
    for name in FIXTURES {
        let dir = fixture(name);
        let reference = Reference::load(&dir);
        let pipe = Summarization::load(&dir).unwrap();
        for (i, (text, want_ids)) in reference.inputs().iter().enumerate() {
            let ids = pipe.encode_source(text).unwrap();
            assert_eq!(&ids, want_ids, "{name}: source ids of {text:?} (prefix and truncation included)");
            let batch = Array2::from_shape_vec((1, ids.len()), ids.clone()).unwrap();
            let mask = Array2::ones((1, ids.len()));
            let encoded = pipe.model.encode(batch.view(), mask.view(), Keep::AllLayers);
            assert_eq!(encoded.hidden_states.len(), pipe.model.encoder_layers.len() + 1, "{name}: hidden states");
            // a pipeline's pass, which keeps nothing else, computes the same output
            let lean = pipe.model.encode(batch.view(), mask.view(), Keep::Result);
            assert_eq!(lean.last_hidden_state, encoded.last_hidden_state, "{name}: Keep::Result changed the output");
            for (layer, h) in encoded.hidden_states.iter().enumerate() {
                let want = reference.tensor(&format!("input{i}.encoder_hidden_states.{layer}"));
                let got: Vec<f32> = h.iter().copied().collect();
                assert_close(
                    &format!("{name} input {i}: encoder hidden state {layer}"),
                    &got,
                    want.as_slice().unwrap(),
                    1e-4,
                );
            }
            let start = pipe.defaults.decoder_start_token_id.unwrap();
            let mut session = BartSession::new(&pipe.model, &ids, 8);
            let logits = session.step(Array2::from_elem((1, 1), start).view());
            let want = reference.tensor(&format!("input{i}.first_step_logits"));
            assert_close(
                &format!("{name} input {i}: first-step logits"),
                logits.as_slice().unwrap(),
                want.as_slice().unwrap(),
                1e-4,
            );
        }
    }
}

#[test]
fn beam_search_summaries_match_transformers() {
    for name in FIXTURES {
        let dir = fixture(name);
        let reference = Reference::load(&dir);
        let pipe = Summarization::load(&dir).unwrap();
        for case in reference.cases() {
            let source = &reference.case_input(case, "source");
            let mut config = pipe.defaults.clone();
            config.update(&case["generate_kwargs"]).unwrap();
            let got = pipe.summarize(source, &config).unwrap();
            let got_ids: Vec<Vec<u32>> = got.iter().map(|s| s.token_ids.clone()).collect();
            let want_ids: Vec<Vec<u32>> = serde_json::from_value(case["output_ids"].clone()).unwrap();
            assert_eq!(got_ids, want_ids, "{name} case {}: summary ids", case["name"]);
            let got_text: Vec<&str> = got.iter().map(|s| s.text.as_str()).collect();
            let want_text: Vec<String> = serde_json::from_value(case["summary_text"].clone()).unwrap();
            assert_eq!(got_text, want_text, "{name} case {}: summary text", case["name"]);
        }
    }
}

#[test]
fn legacy_settings_resolve_like_distilbart_cnn() {
    // bart-legacy-tiny keeps its settings in config.json, as distilbart-cnn-12-6 does.
    let legacy = Summarization::load(&fixture("bart-legacy-tiny")).unwrap();
    let d = &legacy.defaults;
    assert_eq!(legacy.prefix, " ");
    assert_eq!(
        d.forced_bos_token_id,
        Some(0),
        "force_bos_token_to_be_generated means forced_bos_token_id = bos_token_id"
    );
    assert_eq!(d.forced_eos_token_id, Some(2));
    assert_eq!(d.decoder_start_token_id, Some(2));
    // task_specific_params["summarization"] on top of the top-level fields
    assert_eq!((d.num_beams, d.min_length, d.max_length, d.no_repeat_ngram_size), (4, 12, Some(36), 3));
    assert_eq!(d.length_penalty, 2.0);
    assert_eq!(d.early_stopping, models::generation::EarlyStopping::Always);
}
