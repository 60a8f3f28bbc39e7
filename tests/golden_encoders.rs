//! Golden tests: BERT and DistilBERT forward passes against PyTorch.
//!
//! For every fixture input, the token ids must equal transformers', and every
//! layer's hidden state must match within 1e-4 (the first diverging layer is
//! named); classification logits within 1e-4.

mod common;

use common::{assert_close, fixture, max_abs_diff, Reference};
use models::auto::{load_classifier, load_encoder};
use models::encoder::EncoderOutput;
use models::tokenizer::Batch;
use models::Keep;
use tensor::PackedType;

const HIDDEN_TOL: f32 = 1e-4;
const LOGITS_TOL: f32 = 1e-4;

/// Compares every layer, reporting the first one that diverges.
fn check_hidden_states(fixture_name: &str, input: usize, out: &EncoderOutput, reference: &Reference) {
    for (layer, h) in out.hidden_states.iter().enumerate() {
        let name = format!("input{input}.hidden_states.{layer}");
        let want = reference.tensor(&name);
        let got: Vec<f32> = h.iter().copied().collect();
        let diff = max_abs_diff(&got, want.as_slice().unwrap());
        if diff > HIDDEN_TOL {
            let what = format!("{fixture_name}: first divergence at layer {layer} (0 = embeddings), {name}");
            assert_close(&what, &got, want.as_slice().unwrap(), HIDDEN_TOL);
        }
    }
}

fn check_encoder_fixture(name: &str) {
    let dir = fixture(name);
    let reference = Reference::load(&dir);
    let (model, tokenizer, _) = load_encoder(&dir, PackedType::F32).unwrap();
    for (i, (text, want_ids)) in reference.inputs().iter().enumerate() {
        let enc = tokenizer.encode(text, true).unwrap();
        assert_eq!(&enc.ids, want_ids, "{name}: token ids of {text:?}");
        let batch = Batch::pad(&[enc], model.pad_token_id()).unwrap();
        let out = model.forward(&batch, Keep::AllLayers);
        assert_eq!(out.hidden_states.len(), count_layers(&reference, i), "{name}: number of hidden states");
        // a pipeline's pass, which keeps nothing else, computes the same output
        let lean = model.forward(&batch, Keep::Result);
        assert!(lean.hidden_states.is_empty() && lean.attentions.is_empty(), "{name}: Keep::Result kept layers");
        assert_eq!(lean.last_hidden_state, out.last_hidden_state, "{name}: Keep::Result changed the output");
        check_hidden_states(name, i, &out, &reference);
    }
}

fn count_layers(reference: &Reference, input: usize) -> usize {
    (0..).take_while(|l| reference.has(&format!("input{input}.hidden_states.{l}"))).count()
}

fn check_classifier_fixture(name: &str) {
    check_encoder_fixture(name);
    let dir = fixture(name);
    let reference = Reference::load(&dir);
    let (model, _, tokenizer, _) = load_classifier(&dir, PackedType::F32).unwrap();
    for (i, (text, _)) in reference.inputs().iter().enumerate() {
        let enc = tokenizer.encode(text, true).unwrap();
        let (logits, out) =
            model.classify(&Batch::pad(&[enc], model.encoder().pad_token_id()).unwrap(), Keep::AllLayers);
        check_hidden_states(name, i, &out, &reference);
        let want = reference.tensor(&format!("input{i}.logits"));
        assert_close(
            &format!("{name}: logits of {text:?}"),
            logits.as_slice().unwrap(),
            want.as_slice().unwrap(),
            LOGITS_TOL,
        );
    }
}

#[test]
fn bert_model_matches_pytorch_layer_by_layer() {
    check_encoder_fixture("bert-tiny");
}

#[test]
fn bert_for_sequence_classification_matches_pytorch() {
    check_classifier_fixture("bert-tiny-seqcls");
}

#[test]
fn distilbert_for_sequence_classification_matches_pytorch() {
    check_classifier_fixture("distilbert-sst2-tiny");
}

#[test]
fn distilbert_with_sinusoidal_positions_matches_pytorch() {
    check_classifier_fixture("distilbert-sinusoidal-multilabel");
}

#[test]
fn padded_batch_equals_unbatched_runs() {
    let dir = fixture("distilbert-sst2-tiny");
    let reference = Reference::load(&dir);
    let (model, _, tokenizer, _) = load_classifier(&dir, PackedType::F32).unwrap();
    let encoded: Vec<_> = reference.inputs().iter().map(|(t, _)| tokenizer.encode(t, true).unwrap()).collect();
    let pad = model.encoder().pad_token_id();
    let (batched, _) = model.classify(&Batch::pad(&encoded, pad).unwrap(), Keep::Result);
    for (i, enc) in encoded.iter().enumerate() {
        let (single, _) = model.classify(&Batch::pad(std::slice::from_ref(enc), pad).unwrap(), Keep::Result);
        assert_close(
            &format!("input {i} batched vs alone"),
            batched.row(i).to_vec().as_slice(),
            single.as_slice().unwrap(),
            1e-5,
        );
    }
}
