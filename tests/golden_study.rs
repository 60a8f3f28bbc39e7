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
