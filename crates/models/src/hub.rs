//! Finding a checkpoint: a directory, or a model id in the local Hugging Face cache.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The files a checkpoint directory must hold.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// Resolves `--model`: an existing directory is used as it is; anything else
/// is taken as a model id (`ORG/NAME` or `NAME`) and looked up, offline, in the
/// Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`), where Python transformers keeps
/// `models--ORG--NAME/snapshots/<commit>/` with the commit in `refs/main`.
///
/// # Errors
/// If neither exists, or the directory lacks one of [`REQUIRED_FILES`].
pub fn resolve_model(model: &str) -> Result<PathBuf> {
    let direct = Path::new(model);
    let dir = if direct.is_dir() {
        direct.to_path_buf()
    } else {
        let cache = hub_cache_dir();
        let repo = cache.join(format!("models--{}", model.replace('/', "--")));
        if !repo.is_dir() {
            bail!(
                "model `{model}` is neither a directory nor in the Hugging Face cache ({}); pass a checkpoint directory, or download it once with Python transformers",
                cache.display()
            );
        }
        snapshot_dir(&repo)?
    };
    for file in REQUIRED_FILES {
        if !dir.join(file).is_file() {
            bail!("{} has no {file} (a checkpoint needs {})", dir.display(), REQUIRED_FILES.join(", "));
        }
    }
    Ok(dir)
}

fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

/// The snapshot `refs/main` points at, or the only snapshot there is.
fn snapshot_dir(repo: &Path) -> Result<PathBuf> {
    if let Ok(commit) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let dir = repo.join("snapshots").join(commit.trim());
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    let snapshots: Vec<PathBuf> = std::fs::read_dir(repo.join("snapshots"))
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    match snapshots.as_slice() {
        [only] => Ok(only.clone()),
        [] => bail!("{} has no snapshot; download the model again", repo.display()),
        _ => bail!("{} has several snapshots and no refs/main; pass the snapshot directory itself", repo.display()),
    }
}
