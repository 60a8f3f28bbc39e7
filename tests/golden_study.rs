//! Golden tests of the study exports: attentions and hidden states of every
//! layer equal transformers' `output_attentions=True, output_hidden_states=True`
//! within 1e-5, for all three model families, with the same names and shapes.

mod common;

use common::{assert_close, fixture, Reference};
use models::pipelines::summarization::Summarization;
use models::pipelines::text_generation::TextGeneration;
use models::pipelines::{EncodeOptions, FeatureExtraction, TextClassification};
use models::study::Study;

const TOL: f32 = 1e-5;
const DUMP_INPUTS: [&str; 2] = ["We are SI Dream Engineering Team.", "Crème brûlée, 你好!"];

/// Every `dump.*` reference tensor must be in the study, same shape, within TOL; and nothing else.
fn check(name: &str, study: &Study) {
    let reference = Reference::load(&fixture(name));
    let mut expected = 0;
    for (tensor_name, got) in &study.tensors {
        let full = format!("dump.{tensor_name}");
        assert!(reference.has(&full), "{name}: `{tensor_name}` is not among transformers' outputs");
        let want = reference.tensor(&full);
        assert_eq!(got.shape(), want.shape(), "{name}: shape of {tensor_name}");
        let got: Vec<f32> = got.iter().copied().collect();
        assert_close(&format!("{name}: {tensor_name}"), &got, want.as_slice().unwrap(), TOL);
        expected += 1;
    }
    assert_eq!(expected, reference_dump_count(&reference), "{name}: number of exported tensors");
}

fn reference_dump_count(reference: &Reference) -> usize {
    [
        "attentions",
        "hidden_states",
        "encoder_attentions",
        "encoder_hidden_states",
        "decoder_attentions",
        "decoder_hidden_states",
        "cross_attentions",
    ]
    .iter()
    .map(|field| (0..).take_while(|i| reference.has(&format!("dump.{field}.{i}"))).count())
    .sum()
}

fn inputs() -> Vec<String> {
    DUMP_INPUTS.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bert_exports_match_transformers() {
    let pipe = FeatureExtraction::load(&fixture("bert-tiny")).unwrap();
    check("bert-tiny", &pipe.study(&inputs(), &EncodeOptions::default()).unwrap());
}

#[test]
fn distilbert_exports_match_transformers() {
    let pipe = TextClassification::load(&fixture("distilbert-sst2-tiny")).unwrap();
    let study = pipe.study(&inputs(), &EncodeOptions::default()).unwrap();
    check("distilbert-sst2-tiny", &study);
    let tokens: Vec<Vec<String>> = serde_json::from_str(&study.metadata["tokens"]).unwrap();
    assert_eq!(tokens[0], ["[CLS]", "we", "are", "si", "dream", "engineering", "team", ".", "[SEP]"]);
}

#[test]
fn gpt2_exports_match_transformers_and_are_causal() {
    let pipe = TextGeneration::load(&fixture("gpt2-tiny")).unwrap();
    let study = pipe.study(DUMP_INPUTS[0]).unwrap();
    check("gpt2-tiny", &study);
    let a = study.get("attentions.0").unwrap();
    let t = a.shape()[2];
    for q in 0..t {
        for k in q + 1..t {
            assert_eq!(a[[0, 0, q, k]], 0.0, "query {q} sees future key {k}");
        }
    }
}

#[test]
fn bart_exports_match_transformers() {
    let pipe = Summarization::load(&fixture("bart-tiny")).unwrap();
    let source = "Crème brûlée and naïve façades: the museum in Ångström street reopens next month, 你好.";
    check("bart-tiny", &pipe.study(source, None).unwrap());
}

/// The walk-through's last step must be the layer output of the normal forward pass.
fn check_walkthrough(dir: &std::path::Path, layer: usize, head: usize) {
    let ex = models::explain::explain(dir, layer, head, "We are SI Dream Engineering Team.").unwrap();
    let got: Vec<f32> = ex.output.iter().copied().collect();
    let want: Vec<f32> = ex.forward_output.iter().copied().collect();
    assert_close(&format!("{}: walk-through of layer {layer} head {head}", dir.display()), &got, &want, TOL);
    assert!(ex.steps.len() >= 12, "every step is shown");
    assert!(ex.steps.iter().any(|s| s.title == "Attention probabilities"));
}

#[test]
fn walkthroughs_reproduce_the_forward_pass() {
    for name in [
        "bert-tiny",
        "bert-tiny-seqcls",
        "distilbert-sst2-tiny",
        "distilbert-sinusoidal-multilabel",
        "gpt2-tiny",
        "gpt2-legacy-tiny",
        "bart-tiny",
        "bart-legacy-tiny",
    ] {
        for layer in [0, 1] {
            check_walkthrough(&fixture(name), layer, 1);
        }
    }
}

#[test]
fn walkthrough_of_the_real_minilm_checkpoint() {
    let dir = common::repo_root().join(".cache").join("all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").is_file() {
        let fetch = common::repo_root().join("scripts").join("fetch-minilm.sh");
        assert!(
            std::process::Command::new("bash").arg(fetch).status().unwrap().success(),
            "could not fetch all-MiniLM-L6-v2"
        );
    }
    check_walkthrough(&dir, 5, 11);
}
