//! The `pipeline` command's contract: golden outputs against the Python
//! pipelines, batching, stdin, model resolution, and one-line errors with a
//! non-zero exit for every kind of bad input.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_close, fixture, Reference};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use serde_json::Value;

const SCORE_TOL: f32 = 1e-5;
const HIDDEN_TOL: f32 = 1e-4;
const CLASSIFIERS: [&str; 3] = ["bert-tiny-seqcls", "distilbert-sst2-tiny", "distilbert-sinusoidal-multilabel"];

fn pipeline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipeline")).args(args).output().expect("pipeline runs")
}

fn stdout_json(out: &Output) -> Value {
    assert!(out.status.success(), "pipeline failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

/// Runs a reference case through the CLI.
fn run_case(task: &str, dir: &Path, case: &Value, extra: &[&str]) -> Value {
    let mut args = vec![task, "--model", dir.to_str().unwrap()];
    let cli_args: Vec<&str> = case["cli_args"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    args.extend(cli_args);
    args.extend(extra);
    args.push("--");
    let inputs: Vec<&str> = case["inputs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    args.extend(inputs);
    stdout_json(&pipeline(&args))
}

/// Same structure and labels; numbers within `tol`.
fn assert_json_close(what: &str, got: &Value, want: &Value, tol: f32) {
    match (got, want) {
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{what}: array length\n got: {got}\nwant: {want}");
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                assert_json_close(&format!("{what}[{i}]"), a, b, tol);
            }
        }
        (Value::Object(g), Value::Object(w)) => {
            assert_eq!(g.keys().collect::<Vec<_>>(), w.keys().collect::<Vec<_>>(), "{what}: keys");
            for (k, b) in w {
                assert_json_close(&format!("{what}.{k}"), &g[k], b, tol);
            }
        }
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() <= tol as f64, "{what}: {g} vs {w} (diff {:e} > {tol:e})", (g - w).abs());
        }
        _ => assert_eq!(got, want, "{what}"),
    }
}

#[test]
fn sentiment_analysis_matches_the_python_pipeline() {
    for name in CLASSIFIERS {
        let dir = fixture(name);
        let reference = Reference::load(&dir);
        for case in reference.cases() {
            let got = run_case("sentiment-analysis", &dir, case, &[]);
            assert_json_close(&format!("{name} case {}", case["name"]), &got, &case["output"], SCORE_TOL);
        }
    }
}

#[test]
fn the_seed_sentence_prints_exactly_as_python_does() {
    let dir = fixture("distilbert-sst2-tiny");
    let reference = Reference::load(&dir);
    let case = &reference.cases()[0];
    assert_eq!(case["name"], "seed");
    let out = pipeline(&["sentiment-analysis", "--model", dir.to_str().unwrap(), "We are SI Dream Engineering Team."]);
    assert!(out.status.success());
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_json_close("seed", &got, &case["output"], SCORE_TOL);
    // The text itself has Python's separators: `[{"label": "...", "score": 0.7...}]`.
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("[{\"label\": \"") && text.contains("\", \"score\": 0."), "{text}");
}

#[test]
fn text_classification_is_an_alias() {
    let dir = fixture("distilbert-sst2-tiny");
    let a = stdout_json(&pipeline(&["text-classification", "--model", dir.to_str().unwrap(), "Hi"]));
    let b = stdout_json(&pipeline(&["sentiment-analysis", "--model", dir.to_str().unwrap(), "Hi"]));
    assert_eq!(a, b);
}

#[test]
fn feature_extraction_matches_the_python_pipeline() {
    let dir = fixture("bert-tiny");
    let reference = Reference::load(&dir);
    for (c, case) in reference.cases().iter().enumerate() {
        let got = run_case("feature-extraction", &dir, case, &[]);
        let got = got.as_array().unwrap();
        assert_eq!(got.len() as u64, case["output_tensors"].as_u64().unwrap());
        for (j, out) in got.iter().enumerate() {
            let want = reference.tensor(&format!("case{c}.output{j}"));
            let rows = out[0].as_array().unwrap();
            assert_eq!(want.shape(), &[1, rows.len(), rows[0].as_array().unwrap().len()], "case {c} output {j} shape");
            let values: Vec<f32> =
                rows.iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32)).collect();
            assert_close(
                &format!("bert-tiny case {} output {j}", case["name"]),
                &values,
                want.as_slice().unwrap(),
                HIDDEN_TOL,
            );
        }
    }
}

#[test]
fn batched_runs_equal_unbatched_runs() {
    for (task, name) in [("sentiment-analysis", "distilbert-sst2-tiny"), ("feature-extraction", "bert-tiny")] {
        let dir = fixture(name);
        let reference = Reference::load(&dir);
        let case = reference.cases().iter().find(|c| c["name"] == "batch").expect("a batch case");
        let batched = run_case(task, &dir, case, &["--batch-size", "8"]);
        let single = run_case(task, &dir, case, &["--batch-size", "1"]);
        assert_json_close(&format!("{name}: batch of 8 vs one at a time"), &batched, &single, 1e-5);
    }
}

#[test]
fn inputs_can_come_from_stdin_one_per_line() {
    use std::io::Write;
    let dir = fixture("distilbert-sst2-tiny");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["sentiment-analysis", "--model", dir.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all("Hi\nWe are SI Dream Engineering Team.\n".as_bytes()).unwrap();
    let from_stdin = stdout_json(&child.wait_with_output().unwrap());
    let from_args = stdout_json(&pipeline(&[
        "sentiment-analysis",
        "--model",
        dir.to_str().unwrap(),
        "Hi",
        "We are SI Dream Engineering Team.",
    ]));
    assert_eq!(from_stdin, from_args);
}

/// A scratch directory holding a copy of a fixture's checkpoint files.
fn scratch_copy(fixture_name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pipeline-cli-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture(fixture_name).join(f), dir.join(f)).unwrap();
    }
    dir
}

/// Rewrites model.safetensors through `edit`, which may drop or reshape tensors.
fn rewrite_checkpoint(dir: &Path, edit: impl Fn(&str, Vec<usize>) -> Option<Vec<usize>>) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut views = Vec::new();
    for (name, t) in st.tensors() {
        if let Some(shape) = edit(&name, t.shape().to_vec()) {
            views.push((name.clone(), TensorView::new(t.dtype(), shape, t.data()).unwrap()));
        }
    }
    safetensors::serialize_to_file(views, &None, &dir.join("model.safetensors")).unwrap();
}

/// Runs a command that must fail: non-zero exit, one line on stderr that
/// contains every `needle`, no panic or backtrace.
fn assert_fails(args: &[&str], needles: &[&str]) {
    let out = pipeline(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure for {args:?}, got success");
    assert_eq!(out.status.code(), Some(1), "exit code for {args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "stderr is not one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("internal error"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
    assert!(out.stdout.is_empty(), "nothing may be printed on stdout on failure");
}

#[test]
fn missing_model_is_a_clear_error() {
    assert_fails(
        &["sentiment-analysis", "--model", "no/such-model-anywhere", "hi"],
        &["`no/such-model-anywhere` is neither a directory nor in the Hugging Face cache"],
    );
}

#[test]
fn missing_files_are_named() {
    let dir = scratch_copy("distilbert-sst2-tiny", "nofile");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert_fails(&["sentiment-analysis", "--model", dir.to_str().unwrap(), "hi"], &["has no model.safetensors"]);
}

#[test]
fn truncated_and_corrupt_checkpoints_are_rejected() {
    let dir = scratch_copy("distilbert-sst2-tiny", "truncated");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    assert_fails(&["sentiment-analysis", "--model", dir.to_str().unwrap(), "hi"], &["is truncated", "re-download"]);

    std::fs::write(dir.join("model.safetensors"), b"this is not a safetensors file at all").unwrap();
    assert_fails(&["sentiment-analysis", "--model", dir.to_str().unwrap(), "hi"], &["is not a valid safetensors file"]);
}

#[test]
fn a_missing_tensor_is_named_in_full() {
    let dir = scratch_copy("distilbert-sst2-tiny", "missing-tensor");
    rewrite_checkpoint(&dir, |name, shape| (name != "distilbert.transformer.layer.1.ffn.lin2.weight").then_some(shape));
    assert_fails(
        &["sentiment-analysis", "--model", dir.to_str().unwrap(), "hi"],
        &["tensor `distilbert.transformer.layer.1.ffn.lin2.weight` not found"],
    );
}

#[test]
fn a_wrong_shape_is_named_with_both_shapes() {
    let dir = scratch_copy("bert-tiny-seqcls", "wrong-shape");
    rewrite_checkpoint(&dir, |name, shape| {
        Some(if name == "bert.encoder.layer.0.intermediate.dense.weight" { vec![shape[1], shape[0]] } else { shape })
    });
    assert_fails(
        &["sentiment-analysis", "--model", dir.to_str().unwrap(), "hi"],
        &["tensor `bert.encoder.layer.0.intermediate.dense.weight` has shape [32, 64], expected [64, 32]"],
    );
}

#[test]
fn an_unsupported_architecture_lists_the_supported_ones() {
    let dir = scratch_copy("bert-tiny", "model-type");
    let config = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"model_type\": \"bert\"", "\"model_type\": \"gpt_neox\"");
    std::fs::write(dir.join("config.json"), config).unwrap();
    assert_fails(
        &["feature-extraction", "--model", dir.to_str().unwrap(), "hi"],
        &["model_type `gpt_neox` is not supported", "supported: bert, distilbert"],
    );
}

#[test]
fn classification_needs_a_classification_head() {
    let dir = fixture("bert-tiny");
    assert_fails(&["sentiment-analysis", "--model", dir.to_str().unwrap(), "hi"], &["has no classification head"]);
}

#[test]
fn too_long_inputs_fail_unless_truncated() {
    let dir = fixture("distilbert-sst2-tiny");
    let long = ["word"; 100].join(" ");
    assert_fails(
        &["sentiment-analysis", "--model", dir.to_str().unwrap(), "short", &long],
        &["input 2 has 102 tokens, more than the model's limit of 64", "--truncation"],
    );
    let out = pipeline(&["sentiment-analysis", "--model", dir.to_str().unwrap(), "--truncation", &long]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn empty_inputs_are_rejected() {
    let dir = fixture("distilbert-sst2-tiny");
    assert_fails(&["sentiment-analysis", "--model", dir.to_str().unwrap(), "fine", ""], &["input 2 is empty"]);
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["feature-extraction", "--model", fixture("bert-tiny").to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no input given"));
}

#[test]
fn model_ids_resolve_in_the_hugging_face_cache() {
    let home = std::env::temp_dir().join(format!("pipeline-cli-test-{}-hfhome", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let repo = home.join("hub").join("models--org--tiny-sst2");
    let snapshot = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture("distilbert-sst2-tiny").join(f), snapshot.join(f)).unwrap();
    }
    let by_id = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["sentiment-analysis", "--model", "org/tiny-sst2", "Hi"])
        .env("HF_HOME", &home)
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap();
    let by_dir = pipeline(&["sentiment-analysis", "--model", fixture("distilbert-sst2-tiny").to_str().unwrap(), "Hi"]);
    assert_eq!(stdout_json(&by_id), stdout_json(&by_dir));
}

/// Every gpt2 reference case that has CLI flags: text as the Python pipeline
/// prints it, and ids with --return-tensors.
#[test]
fn text_generation_matches_the_python_pipeline() {
    for name in ["gpt2-tiny", "gpt2-legacy-tiny"] {
        let dir = fixture(name);
        let reference = Reference::load(&dir);
        for case in reference.cases().iter().filter(|c| c.get("cli_args").is_some()) {
            let prompt = &reference.case_input(case, "prompt");
            let mut args = vec!["text-generation", "--model", dir.to_str().unwrap()];
            let flags: Vec<&str> = case["cli_args"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            args.extend(&flags);
            args.extend(["--", prompt.as_str()]);
            let text = stdout_json(&pipeline(&args));
            assert_eq!(text, Value::Array(vec![case["pipeline_output"].clone()]), "{name} case {}", case["name"]);

            let mut args_ids = args.clone();
            args_ids.insert(3, "--return-tensors");
            let ids = stdout_json(&pipeline(&args_ids));
            let want: Vec<Value> = case["output_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|seq| serde_json::json!({"generated_token_ids": seq}))
                .collect();
            assert_eq!(ids, Value::Array(vec![Value::Array(want)]), "{name} case {} ids", case["name"]);
        }
    }
}

#[test]
fn streaming_prints_the_same_text_as_the_json() {
    let dir = fixture("gpt2-tiny");
    let base = ["text-generation", "--model", dir.to_str().unwrap(), "--do-sample", "false", "--max-new-tokens", "12"];
    let prompt = "你好，世界！東京は";
    let json = stdout_json(&pipeline(&[&base[..], &[prompt]].concat()));
    let streamed = pipeline(&[&base[..], &["--stream", prompt]].concat());
    assert!(streamed.status.success());
    let text = String::from_utf8(streamed.stdout).unwrap();
    assert_eq!(text.trim_end_matches('\n'), json[0][0]["generated_text"].as_str().unwrap());
}

#[test]
fn sampling_with_a_seed_is_reproducible_from_the_command_line() {
    let dir = fixture("gpt2-legacy-tiny");
    let args = ["text-generation", "--model", dir.to_str().unwrap(), "--seed", "11", "--max-new-tokens", "8", "Hello"];
    assert_eq!(stdout_json(&pipeline(&args)), stdout_json(&pipeline(&args)));
}

#[test]
fn generation_errors_are_one_line() {
    let gpt2 = fixture("gpt2-tiny");
    assert_fails(
        &["text-generation", "--model", gpt2.to_str().unwrap(), "--max-new-tokens", "100", "Hello"],
        &["prompt 1", "would pass the model's 64 positions (n_positions)", "lower --max-new-tokens"],
    );
    assert_fails(&["text-generation", "--model", gpt2.to_str().unwrap(), ""], &["the prompt is empty"]);
    assert_fails(
        &["text-generation", "--model", fixture("bert-tiny").to_str().unwrap(), "Hello"],
        &["model_type `bert` is not supported for text generation (supported: gpt2)"],
    );
    assert_fails(
        &[
            "text-generation",
            "--model",
            gpt2.to_str().unwrap(),
            "--num-beams",
            "2",
            "--num-return-sequences",
            "3",
            "Hi",
        ],
        &["num_return_sequences (3) cannot exceed num_beams (2)"],
    );
}

#[test]
fn summarization_matches_transformers() {
    for name in ["bart-tiny", "bart-legacy-tiny"] {
        let dir = fixture(name);
        let reference = Reference::load(&dir);
        for case in reference.cases() {
            let source = &reference.case_input(case, "source");
            let mut args = vec!["summarization", "--model", dir.to_str().unwrap()];
            args.extend(case["cli_args"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()));
            args.extend(["--", source.as_str()]);
            let text = stdout_json(&pipeline(&args));
            let want_text: Vec<Value> = case["summary_text"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| serde_json::json!({"summary_text": t}))
                .collect();
            assert_eq!(text, Value::Array(vec![Value::Array(want_text)]), "{name} case {}", case["name"]);

            args.insert(3, "--return-tensors");
            let ids = stdout_json(&pipeline(&args));
            let want_ids: Vec<Value> = case["output_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|seq| serde_json::json!({"summary_token_ids": seq}))
                .collect();
            assert_eq!(ids, Value::Array(vec![Value::Array(want_ids)]), "{name} case {} ids", case["name"]);
        }
    }
}

#[test]
fn summarization_errors_are_one_line() {
    let bart = fixture("bart-tiny");
    assert_fails(
        &["summarization", "--model", fixture("gpt2-tiny").to_str().unwrap(), "Hello"],
        &["model_type `gpt2` is not supported for summarization (supported: bart)"],
    );
    assert_fails(
        &["summarization", "--model", bart.to_str().unwrap(), "--early-stopping", "sometimes", "Hello"],
        &["--early-stopping takes true, false or never"],
    );
    assert_fails(
        &["summarization", "--model", bart.to_str().unwrap(), " "],
        &["input 1", "the text to summarize is empty"],
    );
    assert_fails(
        &["summarization", "--model", bart.to_str().unwrap(), "--max-length", "500", "Hello"],
        &["max_length 500 exceeds the model's 64 decoder positions"],
    );
}

fn scratch_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pipeline-cli-test-{}-{name}", std::process::id()))
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u64, u64) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64;
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn attention_heatmaps_are_drawn_for_every_family() {
    let seed = "We are SI Dream Engineering Team.";
    let minilm = common::repo_root().join(".cache").join("all-MiniLM-L6-v2");
    if !minilm.join("model.safetensors").is_file() {
        let fetch = common::repo_root().join("scripts").join("fetch-minilm.sh");
        assert!(Command::new("bash").arg(fetch).status().unwrap().success(), "could not fetch all-MiniLM-L6-v2");
    }
    for (name, kind, layers, heads) in [
        ("bert-tiny", "self", 2, 4),
        ("bert-tiny-seqcls", "self", 2, 4),
        ("distilbert-sst2-tiny", "self", 2, 4),
        ("distilbert-sinusoidal-multilabel", "self", 2, 4),
        ("gpt2-tiny", "self", 2, 4),
        ("gpt2-legacy-tiny", "self", 2, 2),
        ("bart-tiny", "self", 3, 4),
        ("bart-tiny", "cross", 2, 4),
        ("bart-legacy-tiny", "self", 3, 4),
        ("bart-legacy-tiny", "cross", 2, 4),
        ("all-MiniLM-L6-v2", "self", 6, 12),
    ] {
        let model = if name == "all-MiniLM-L6-v2" { minilm.clone() } else { fixture(name) };
        // every layer and head, as PNG: the JSON reports what was drawn and the picture's size
        let png = scratch_file(&format!("{name}-{kind}.png"));
        let out = stdout_json(&pipeline(&[
            "attention",
            "--model",
            model.to_str().unwrap(),
            "--kind",
            kind,
            "--out",
            png.to_str().unwrap(),
            seed,
        ]));
        assert_eq!(out["layers"].as_array().unwrap().len(), layers, "{name} {kind}");
        assert_eq!(out["heads"].as_array().unwrap().len(), heads, "{name} {kind}");
        assert_eq!(png_size(&png), (out["width"].as_u64().unwrap(), out["height"].as_u64().unwrap()));

        // one head as SVG: one cell per (query, key) pair, the title names model, layer and head
        let svg = scratch_file(&format!("{name}-{kind}.svg"));
        let head = (heads - 1).min(2);
        let out = stdout_json(&pipeline(&[
            "attention",
            "--model",
            model.to_str().unwrap(),
            "--kind",
            kind,
            "--layer",
            "1",
            "--head",
            &head.to_string(),
            "--out",
            svg.to_str().unwrap(),
            seed,
        ]));
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"), "{name}: not an SVG");
        let shown = model.file_name().unwrap().to_string_lossy().into_owned();
        assert!(text.contains(&format!("{shown}: {kind} attention, layer 1, head {head}")), "{name}: title");
        let cells = text.matches("width=\"16\" height=\"16\"").count();
        assert!(cells > 0 && out["layers"] == serde_json::json!([1]) && out["heads"] == serde_json::json!([head]));
        if kind == "self" {
            let tokens = (cells as f64).sqrt() as usize;
            assert_eq!(tokens * tokens, cells, "{name}: a self-attention map is square");
        }
    }
}

#[test]
fn attention_arguments_are_checked() {
    let out = scratch_file("bad.png");
    let bert = fixture("bert-tiny");
    assert_fails(
        &["attention", "--model", bert.to_str().unwrap(), "--layer", "5", "--out", out.to_str().unwrap(), "hi"],
        &["--layer 5 is out of range: the model has 2 layers"],
    );
    assert_fails(
        &["attention", "--model", bert.to_str().unwrap(), "--kind", "cross", "--out", out.to_str().unwrap(), "hi"],
        &["--kind cross needs an encoder-decoder model"],
    );
    assert_fails(
        &["attention", "--model", bert.to_str().unwrap(), "--out", "/tmp/x.jpg", "hi"],
        &["--out must end in .svg or .png"],
    );
}

#[test]
fn dump_writes_named_tensors_and_tokens() {
    let path = scratch_file("dump.safetensors");
    let out = pipeline(&[
        "text-generation",
        "--model",
        fixture("gpt2-tiny").to_str().unwrap(),
        "--do-sample",
        "false",
        "--max-new-tokens",
        "2",
        "--output-attentions",
        "--dump",
        path.to_str().unwrap(),
        "Hello world",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut names: Vec<String> = meta.tensors().keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["attentions.0", "attentions.1"], "only attentions were asked for");
    let tokens = meta.metadata().as_ref().unwrap()["tokens"].clone();
    assert_eq!(tokens, r#"[["Hello","Ġworld"]]"#);
    assert_fails(
        &["feature-extraction", "--model", fixture("bert-tiny").to_str().unwrap(), "--output-attentions", "hi"],
        &["need --dump FILE.safetensors"],
    );
}

#[test]
fn explain_walks_through_one_head_with_real_numbers() {
    let out = pipeline(&[
        "explain",
        "--model",
        fixture("gpt2-tiny").to_str().unwrap(),
        "--layer",
        "1",
        "--head",
        "2",
        "Hello world",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for needed in [
        "1. Input X   shape (2, 32)",
        "Pre-attention LayerNorm",
        "S = Q K^T / sqrt(hs), hs = 8",
        "-inf",
        "P = softmax(S + M)",
        "Final LayerNorm (ln_f)",
        "Ġworld",
    ] {
        assert!(text.contains(needed), "walk-through lacks {needed:?}:\n{text}");
    }
    let last = text.trim_end().lines().last().unwrap();
    let diff: f64 = last.rsplit("= ").next().unwrap().trim_end_matches(").").parse().unwrap();
    assert!(diff <= 1e-5, "{last}");
    assert_fails(
        &["explain", "--model", fixture("bert-tiny").to_str().unwrap(), "--layer", "0", "--head", "9", "hi"],
        &["--head 9 is out of range: the model has 4 heads"],
    );
    assert_fails(
        &["explain", "--model", fixture("bert-tiny").to_str().unwrap(), "--layer", "7", "--head", "0", "hi"],
        &["--layer 7 is out of range: the model has 2 layers"],
    );
}
