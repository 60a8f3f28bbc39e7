"""PyTorch vs our engine, side by side, on the same workloads and the same machine.

Each workload runs in PyTorch (in this process) and with our binary (`pipeline bench`, one
process per workload), and one Markdown table is printed:

    workload | PyTorch | ours | ratio

ratio > 1 means ours is faster (or smaller): torch_ms / ours_ms for times, ours / torch for
throughputs (GFLOP/s, tokens/s), torch_MB / ours_MB for memory.

How to run, from the repository root:

    cargo build --release
    python benches/make_checkpoints.py        # random-weight checkpoints with the real shapes
    python benches/compare_pytorch.py         # full run (R = 5 timed runs per workload)
    python benches/compare_pytorch.py --quick # fewer runs, no 2048^3 sgemm: a few minutes on 2 cores

Options: --runs R, --threads T (both sides; default 2), --binary PATH, --no-check.

Method:
  * PyTorch: float32, torch.inference_mode(), torch.set_num_threads(T), warm-up runs, then the
    median of R timed runs. Pipeline workloads time what our pipeline call does: tokenize,
    forward or generate, post-process (softmax / decode).
  * ours: `pipeline bench ... --runs R` with RAYON_NUM_THREADS=T; it reports the median of R runs
    after one load and its own warm-up (one run, then more until 200 ms have passed).
  * Small matrix products take far under a millisecond, so they get more runs on both sides
    (max(R, 50)) to make the median meaningful.
  * Synthetic inputs are built the way `pipeline bench --seq-len L` builds them: "hello hello ..."
    with exactly L tokens, special tokens included.
  * Load time: ours is `load_ms` (checkpoint + tokenizer); PyTorch is from_pretrained of model and
    tokenizer, timed on a second load (the first one pays Python's lazy imports).
    First token: ours is `first_token_ms_after_load` (the first, cold generation call); PyTorch is
    the first generate(max_new_tokens=1) on a freshly loaded model.
  * Peak RSS: ours is `peak_rss_mb` (VmHWM) of the bench process; PyTorch's is VmHWM of a fresh
    Python process (`import torch` included) that loads the model and runs the workload once.
  * Before timing, a check that both sides compute the same thing on these checkpoints
    (classification scores, greedy GPT-2 ids, beam-search BART ids); --no-check skips it.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".cache" / "bench"
GPT2 = BENCH / "gpt2"
SST2 = BENCH / "distilbert-sst2"
BART = BENCH / "distilbart-cnn-12-6"

SST2_SENTENCE_TOKENS = 9
SST2_BATCH, SST2_BATCH_TOKENS = 8, 128
GPT2_PROMPT_TOKENS, GPT2_NEW_TOKENS = 16, 64
BART_SOURCE_TOKENS, BART_NEW_TOKENS, BART_BEAMS = 347, 64, 4


# ---------------------------------------------------------------- plumbing


class Bench:
    """Settings, the rows of the table, and the problems met on the way."""

    def __init__(self, args):
        self.runs = args.runs
        self.warmup = args.warmup
        self.threads = args.threads
        self.binary = args.binary
        self.rows = []  # (workload, torch, ours, ratio) as strings
        self.problems = []  # exact error messages from our binary (or PyTorch)
        self.torch_f32 = {}  # PyTorch float32 medians (ms) by workload, for the bf16 rows

    # -- ours

    def ours(self, *args, runs=None):
        """Runs `pipeline bench ARGS --runs R`; returns its JSON object, or None after recording the error."""
        cmd = [str(self.binary), "bench", *map(str, args), "--runs", str(runs or self.runs)]
        env = {**os.environ, "RAYON_NUM_THREADS": str(self.threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            self.problems.append(f"`{' '.join(cmd[1:])}` exited {proc.returncode}: {proc.stderr.strip()}")
            return None
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError:
            self.problems.append(f"`{' '.join(cmd[1:])}` printed no JSON object: {proc.stdout.strip()[:500]!r}")
            return None

    # -- PyTorch

    def time_torch(self, fn, runs=None, warmup=None):
        """Median and minimum wall time of fn() in ms, after warm-up calls."""
        for _ in range(self.warmup if warmup is None else warmup):
            fn()
        times = []
        for _ in range(runs or self.runs):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), min(times)

    # -- table

    def row(self, workload, torch_value, ours_value, higher_is_better, fmt="{:.1f}"):
        """Adds a row; the ratio is > 1 when ours is better."""
        t = fmt.format(torch_value) if torch_value is not None else "n/a"
        o = fmt.format(ours_value) if ours_value is not None else "error"
        if torch_value and ours_value:
            ratio = ours_value / torch_value if higher_is_better else torch_value / ours_value
            r = f"{ratio:.2f}x"
        else:
            r = "n/a"
        self.rows.append((workload, t, o, r))
        print(f"  {workload}: PyTorch {t}, ours {o}, ratio {r}", file=sys.stderr, flush=True)

    def table(self):
        head = ("workload", "PyTorch", "ours", "ratio (>1: ours better)")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(4)]
        line = lambda r: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
        sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
        return "\n".join([line(head), sep, *map(line, self.rows)])


def synthetic_text(tokenizer, length, add_special_tokens=True):
    """"hello hello ..." with exactly `length` tokens, as `pipeline bench --seq-len` builds it."""
    for n in range(1, length + 5):
        text = " ".join(["hello"] * n)
        count = len(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
        if count == length:
            return text
        if count > length:
            break
    raise ValueError(f"no 'hello ...' text has exactly {length} tokens")


def peak_rss_mb():
    """VmHWM of this process, in MB (what our binary reports)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def size_mb(checkpoint):
    return (checkpoint / "model.safetensors").stat().st_size / 2**20


def machine(threads):
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    flags = Path("/proc/cpuinfo").read_text()
    simd = [f for f in ("avx2", "fma", "avx512f") if f" {f} " in flags or f" {f}\n" in flags]
    return "\n".join([
        f"- CPU: {cpu} ({os.cpu_count()} logical cores; {', '.join(simd) or 'no AVX2/FMA'})",
        f"- OS: {platform.platform()}, Python {platform.python_version()}",
        f"- torch {torch.__version__}, transformers {transformers.__version__}; "
        f"torch.get_num_threads() = {torch.get_num_threads()} (ours: RAYON_NUM_THREADS={threads})",
        f"- MKL: {torch.backends.mkl.is_available()}, oneDNN (mkldnn): {torch.backends.mkldnn.is_available()}, "
        f"CPU capability: {torch.backends.cpu.get_cpu_capability()}",
    ])


# ---------------------------------------------------------------- workloads


def sgemm(b: Bench, m, n, k, label, unit="gflops", layouts=("nk",)):
    """C = A @ W.T with W stored (N, K), as a Linear layer reads it, or C = A @ W with W
    stored (K, N) (layout "kn", GPT-2's Conv1D); GFLOP/s (or ms for decode shapes).
    Ours once per layout: "nk" and "kn" read W as stored on every call, "packed" packs
    it once before timing, as our models hold their Linear weights."""
    flops = 2.0 * m * n * k
    runs = b.runs if flops >= 1e9 else max(b.runs, 50)
    a = torch.rand(m, k)
    out = torch.empty(m, n)
    if layouts == ("kn",):
        w = torch.rand(k, n)
        med, _ = b.time_torch(lambda: torch.matmul(a, w, out=out), runs=runs, warmup=max(b.warmup, 3))
    else:
        w = torch.rand(n, k)
        med, _ = b.time_torch(lambda: torch.matmul(a, w.T, out=out), runs=runs, warmup=max(b.warmup, 3))
    for layout in layouts:
        res = b.ours("gemm", "--m", m, "--n", n, "--k", k, "--weight-layout", layout, runs=runs)
        what = label if len(layouts) == 1 else f"{label}, ours {'W packed at load' if layout == 'packed' else 'per call'}"
        if unit == "ms":
            b.row(f"{what} (ms)", med, res and res["median_ms"], higher_is_better=False, fmt="{:.3f}")
        else:
            b.row(f"{what} (GFLOP/s)", flops / med / 1e6, res and res["gflops"], higher_is_better=True)


def gemms(b: Bench, quick):
    print("sgemm", file=sys.stderr)
    sgemm(b, 1024, 1024, 1024, "sgemm 1024^3")
    if not quick:
        sgemm(b, 2048, 2048, 2048, "sgemm 2048^3")
    sgemm(b, 1, 2304, 768, "decode 1x768 @ (768x2304), gpt2 c_attn", unit="ms", layouts=("kn",))
    both = ("nk", "packed")
    sgemm(b, 9, 768, 768, "9x768 @ (768x768).T, sst2 sentence", layouts=both)
    sgemm(b, 128, 3072, 768, "128x768 @ (3072x768).T, bert FFN up", layouts=both)
    sgemm(b, 347, 4096, 1024, "347x1024 @ (4096x1024).T, bart FFN up", layouts=both)


def distilbert_sst2(b: Bench):
    """One 9-token sentence, and a batch of 8 x 128 tokens: tokenize + forward + softmax, in ms."""
    print("distilbert-sst2", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(SST2)
    model = AutoModelForSequenceClassification.from_pretrained(SST2).eval()
    res = None
    for batch, length, label in [(1, SST2_SENTENCE_TOKENS, f"distilbert-sst2, 1 sentence of {SST2_SENTENCE_TOKENS} tokens (ms)"),
                                 (SST2_BATCH, SST2_BATCH_TOKENS, f"distilbert-sst2, batch {SST2_BATCH} x {SST2_BATCH_TOKENS} tokens (ms)")]:
        texts = [synthetic_text(tok, length)] * batch
        assert tok(texts, return_tensors="pt")["input_ids"].shape == (batch, length)

        def run():
            enc = tok(texts, return_tensors="pt", padding=True)
            return model(**enc).logits.softmax(-1).tolist()

        med, _ = b.time_torch(run)
        b.torch_f32[f"sst2 {batch}"] = med
        res = b.ours("sentiment-analysis", "--model", SST2, "--seq-len", length, "--batch-size", batch)
        b.row(label, med, res and res["median_ms"], higher_is_better=False)
    return res  # the batch run: its load_ms and peak_rss_mb go in the load and memory rows


def gpt2_greedy(b: Bench):
    """Greedy decoding with the KV cache: 16-token prompt, exactly 64 new tokens; tokens/s (prefill included)."""
    print("gpt2", file=sys.stderr)
    gen_config = json.loads((GPT2 / "generation_config.json").read_text())
    if gen_config.get("do_sample") or gen_config.get("num_beams", 1) != 1:
        b.problems.append(f"{GPT2}/generation_config.json is not greedy ({gen_config}); ours would not be greedy either")
    tok = AutoTokenizer.from_pretrained(GPT2)
    model = AutoModelForCausalLM.from_pretrained(GPT2).eval()
    prompt = synthetic_text(tok, GPT2_PROMPT_TOKENS)

    def run():
        enc = tok(prompt, return_tensors="pt")
        ids = model.generate(**enc, do_sample=False, max_new_tokens=GPT2_NEW_TOKENS, min_new_tokens=GPT2_NEW_TOKENS,
                             pad_token_id=tok.eos_token_id)
        assert ids.shape[1] == GPT2_PROMPT_TOKENS + GPT2_NEW_TOKENS
        return tok.decode(ids[0, GPT2_PROMPT_TOKENS:])

    med, _ = b.time_torch(run)
    b.torch_f32["gpt2"] = med
    res = b.ours("text-generation", "--model", GPT2, "--seq-len", GPT2_PROMPT_TOKENS, "--max-new-tokens", GPT2_NEW_TOKENS)
    b.row(f"gpt2 greedy, {GPT2_PROMPT_TOKENS}-token prompt + {GPT2_NEW_TOKENS} new, KV cache (tokens/s)",
          GPT2_NEW_TOKENS / (med / 1e3), res and res["tokens_per_s"], higher_is_better=True)
    return res


def distilbart_cnn(b: Bench):
    """Beam search shaped like distilbart-cnn-12-6 on a CNN article: 347-token source, 4 beams,
    exactly 64 generated tokens (65 with the decoder start); seconds per summary."""
    print("distilbart-cnn-12-6", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(BART)
    model = AutoModelForSeq2SeqLM.from_pretrained(BART).eval()
    source = synthetic_text(tok, BART_SOURCE_TOKENS)
    length = BART_NEW_TOKENS + 1

    def run():
        enc = tok(source, return_tensors="pt")
        ids = model.generate(**enc, num_beams=BART_BEAMS, min_length=length, max_length=length)
        assert ids.shape[1] == length, ids.shape
        return tok.batch_decode(ids, skip_special_tokens=True)

    med, _ = b.time_torch(run, warmup=1)
    b.torch_f32["bart"] = med
    res = b.ours("summarization", "--model", BART, "--seq-len", BART_SOURCE_TOKENS,
                 "--max-new-tokens", BART_NEW_TOKENS, "--num-beams", BART_BEAMS)
    b.row(f"distilbart-cnn-12-6, {BART_SOURCE_TOKENS}-token source, {BART_BEAMS} beams, {BART_NEW_TOKENS} tokens (s)",
          med / 1e3, res and res["median_ms"] / 1e3, higher_is_better=False, fmt="{:.2f}")
    return res


def bf16_weights(b: Bench):
    """Ours with `--dtype bf16` (weights stored as bfloat16, arithmetic in float32) against PyTorch
    with the model in bfloat16 (`model.to(torch.bfloat16)`: weights and activations), and against
    PyTorch in float32 (the medians measured above)."""
    print("bf16", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(SST2)
    model = AutoModelForSequenceClassification.from_pretrained(SST2).eval().to(torch.bfloat16)
    texts = [synthetic_text(tok, SST2_SENTENCE_TOKENS)]
    med, _ = b.time_torch(lambda: model(**tok(texts, return_tensors="pt")).logits.float().softmax(-1).tolist())
    res = b.ours("sentiment-analysis", "--model", SST2, "--seq-len", SST2_SENTENCE_TOKENS, "--dtype", "bf16")
    what = f"distilbert-sst2, 1 sentence of {SST2_SENTENCE_TOKENS} tokens, bf16 weights (ms)"
    b.row(f"{what}: PyTorch bf16", med, res and res["median_ms"], higher_is_better=False)
    b.row(f"{what}: PyTorch float32", b.torch_f32.get("sst2 1"), res and res["median_ms"], higher_is_better=False)

    tok = AutoTokenizer.from_pretrained(GPT2)
    model = AutoModelForCausalLM.from_pretrained(GPT2).eval().to(torch.bfloat16)
    enc = tok(synthetic_text(tok, GPT2_PROMPT_TOKENS), return_tensors="pt")
    med, _ = b.time_torch(lambda: model.generate(**enc, do_sample=False, max_new_tokens=GPT2_NEW_TOKENS,
                                                 min_new_tokens=GPT2_NEW_TOKENS, pad_token_id=tok.eos_token_id))
    res = b.ours("text-generation", "--model", GPT2, "--seq-len", GPT2_PROMPT_TOKENS,
                 "--max-new-tokens", GPT2_NEW_TOKENS, "--dtype", "bf16")
    what = f"gpt2 greedy, {GPT2_PROMPT_TOKENS}+{GPT2_NEW_TOKENS} tokens, bf16 weights (tokens/s)"
    b.row(f"{what}: PyTorch bf16", GPT2_NEW_TOKENS / (med / 1e3), res and res["tokens_per_s"], higher_is_better=True)
    f32 = b.torch_f32.get("gpt2")
    b.row(f"{what}: PyTorch float32", f32 and GPT2_NEW_TOKENS / (f32 / 1e3), res and res["tokens_per_s"],
          higher_is_better=True)

    tok = AutoTokenizer.from_pretrained(BART)
    model = AutoModelForSeq2SeqLM.from_pretrained(BART).eval().to(torch.bfloat16)
    enc = tok(synthetic_text(tok, BART_SOURCE_TOKENS), return_tensors="pt")
    length = BART_NEW_TOKENS + 1
    med, _ = b.time_torch(lambda: model.generate(**enc, num_beams=BART_BEAMS, min_length=length, max_length=length),
                          warmup=1)
    res = b.ours("summarization", "--model", BART, "--seq-len", BART_SOURCE_TOKENS, "--max-new-tokens",
                 BART_NEW_TOKENS, "--num-beams", BART_BEAMS, "--dtype", "bf16")
    what = f"distilbart-cnn-12-6, {BART_BEAMS} beams, {BART_NEW_TOKENS} tokens, bf16 weights (s)"
    b.row(f"{what}: PyTorch bf16", med / 1e3, res and res["median_ms"] / 1e3, higher_is_better=False, fmt="{:.2f}")
    f32 = b.torch_f32.get("bart")
    b.row(f"{what}: PyTorch float32", f32 and f32 / 1e3, res and res["median_ms"] / 1e3, higher_is_better=False,
          fmt="{:.2f}")


def load_and_first_token(b: Bench, ours_gpt2, ours_results):
    """Checkpoint load times, GPT-2's first token after load (cold), in ms."""
    print("load / first token", file=sys.stderr)
    for name, checkpoint, cls in [("distilbert-sst2", SST2, AutoModelForSequenceClassification),
                                  ("gpt2", GPT2, AutoModelForCausalLM),
                                  ("distilbart-cnn-12-6", BART, AutoModelForSeq2SeqLM)]:
        def load():
            return AutoTokenizer.from_pretrained(checkpoint), cls.from_pretrained(checkpoint).eval()
        load()  # lazy imports, page cache
        start = time.perf_counter()
        tok, model = load()
        torch_load = (time.perf_counter() - start) * 1e3
        ours = ours_results.get(name)
        b.row(f"load {name}, {size_mb(checkpoint):.0f} MB (ms)", torch_load, ours and ours["load_ms"],
              higher_is_better=False, fmt="{:.0f}")
        if name == "gpt2":
            prompt = synthetic_text(tok, GPT2_PROMPT_TOKENS)
            start = time.perf_counter()
            enc = tok(prompt, return_tensors="pt")
            model.generate(**enc, do_sample=False, max_new_tokens=1, pad_token_id=tok.eos_token_id)
            first = (time.perf_counter() - start) * 1e3
            b.row("gpt2 first token after load, cold (ms)", first,
                  ours_gpt2 and ours_gpt2.get("first_token_ms_after_load"), higher_is_better=False)
        del model


def torch_peak_rss(name, threads):
    """Runs in a fresh process (`--_rss NAME`): load NAME, run its workload once, print VmHWM."""
    torch.set_num_threads(threads)
    with torch.inference_mode():
        if name == "distilbert-sst2":
            tok = AutoTokenizer.from_pretrained(SST2)
            model = AutoModelForSequenceClassification.from_pretrained(SST2).eval()
            texts = [synthetic_text(tok, SST2_BATCH_TOKENS)] * SST2_BATCH
            model(**tok(texts, return_tensors="pt")).logits.softmax(-1)
        elif name == "gpt2":
            tok = AutoTokenizer.from_pretrained(GPT2)
            model = AutoModelForCausalLM.from_pretrained(GPT2).eval()
            enc = tok(synthetic_text(tok, GPT2_PROMPT_TOKENS), return_tensors="pt")
            model.generate(**enc, do_sample=False, max_new_tokens=GPT2_NEW_TOKENS, min_new_tokens=GPT2_NEW_TOKENS,
                           pad_token_id=tok.eos_token_id)
        else:
            tok = AutoTokenizer.from_pretrained(BART)
            model = AutoModelForSeq2SeqLM.from_pretrained(BART).eval()
            enc = tok(synthetic_text(tok, BART_SOURCE_TOKENS), return_tensors="pt")
            model.generate(**enc, num_beams=BART_BEAMS, min_length=BART_NEW_TOKENS + 1, max_length=BART_NEW_TOKENS + 1)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def memory(b: Bench, ours_results):
    """Peak RSS of a whole run (load + the workload above once) against the checkpoint's size."""
    print("peak RSS", file=sys.stderr)
    for name, checkpoint, what in [("distilbert-sst2", SST2, f"batch {SST2_BATCH}x{SST2_BATCH_TOKENS}"),
                                   ("gpt2", GPT2, f"{GPT2_NEW_TOKENS} tokens"),
                                   ("distilbart-cnn-12-6", BART, f"{BART_BEAMS} beams")]:
        proc = subprocess.run([sys.executable, __file__, "--_rss", name, "--threads", str(b.threads)],
                              capture_output=True, text=True)
        torch_rss = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"] if proc.returncode == 0 else None
        if torch_rss is None:
            b.problems.append(f"PyTorch peak-RSS run for {name} failed: {proc.stderr.strip()[-500:]}")
        ours = ours_results.get(name)
        b.row(f"peak RSS {name}, {what} (MB; model.safetensors {size_mb(checkpoint):.0f} MB)",
              torch_rss, ours and ours["peak_rss_mb"], higher_is_better=False, fmt="{:.0f}")


# ---------------------------------------------------------------- output check


def check_outputs(b: Bench):
    """Both sides must compute the same thing on these checkpoints, or the timings compare nothing."""
    print("checking that both sides agree", file=sys.stderr)
    notes = []

    def ours_pipeline(*args):
        cmd = [str(b.binary), *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "RAYON_NUM_THREADS": str(b.threads)})
        if proc.returncode != 0:
            b.problems.append(f"`{' '.join(cmd[1:])}` exited {proc.returncode}: {proc.stderr.strip()}")
            return None
        return json.loads(proc.stdout)

    text = "The movie was surprisingly good, and the cast clearly had fun."
    tok = AutoTokenizer.from_pretrained(SST2)
    model = AutoModelForSequenceClassification.from_pretrained(SST2).eval()
    probs = model(**tok(text, return_tensors="pt")).logits.softmax(-1)[0]
    label = model.config.id2label[int(probs.argmax())]
    ours = ours_pipeline("sentiment-analysis", "--model", SST2, text)
    if ours:
        diff = abs(ours[0]["score"] - float(probs.max()))
        same = ours[0]["label"] == label and diff < 1e-4
        notes.append(f"distilbert-sst2: {'same' if same else 'DIFFERENT'} label and score "
                     f"(PyTorch {label} {float(probs.max()):.6f}, ours {ours[0]['label']} {ours[0]['score']:.6f})")

    tok = AutoTokenizer.from_pretrained(GPT2)
    model = AutoModelForCausalLM.from_pretrained(GPT2).eval()
    prompt = "The meaning of life is"
    enc = tok(prompt, return_tensors="pt")
    ref = model.generate(**enc, do_sample=False, max_new_tokens=16, pad_token_id=tok.eos_token_id)[0].tolist()
    ours = ours_pipeline("text-generation", "--model", GPT2, "--do-sample", "false", "--max-new-tokens", 16,
                         "--return-tensors", prompt)
    if ours:
        got = ours[0][0]["generated_token_ids"]
        notes.append(f"gpt2 greedy 16 tokens: {'same ids' if got == ref else f'DIFFERENT ids (PyTorch {ref}, ours {got})'}")

    tok = AutoTokenizer.from_pretrained(BART)
    model = AutoModelForSeq2SeqLM.from_pretrained(BART).eval()
    source = "The city council approved the new budget on Monday; the bridge will be repaired before winter."
    enc = tok(source, return_tensors="pt")
    ref = model.generate(**enc, num_beams=BART_BEAMS, min_length=12, max_length=12)[0].tolist()
    ours = ours_pipeline("summarization", "--model", BART, "--num-beams", BART_BEAMS, "--min-length", 12,
                         "--max-length", 12, "--return-tensors", source)
    if ours:
        got = ours[0]["summary_token_ids"] if isinstance(ours[0], dict) else ours[0][0]["summary_token_ids"]
        notes.append(f"distilbart-cnn-12-6 4-beam 12 tokens: {'same ids' if got == ref else f'DIFFERENT ids (PyTorch {ref}, ours {got})'}")
    return notes


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description="PyTorch vs our pipeline binary, as one Markdown table.")
    parser.add_argument("--runs", type=int, help="timed runs per workload (default 5, 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed PyTorch runs first (default 1)")
    parser.add_argument("--quick", action="store_true", help="fewer runs, no 2048^3 sgemm")
    parser.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "pipeline")
    parser.add_argument("--no-check", action="store_true", help="skip the check that both sides agree")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16-weights rows")
    parser.add_argument("--_rss", help=argparse.SUPPRESS)
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)

    if args._rss:
        return torch_peak_rss(args._rss, args.threads)
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    if not args.binary.exists():
        sys.exit(f"{args.binary} not found: run `cargo build --release` first")
    missing = [c for c in (GPT2, SST2, BART) if not (c / "model.safetensors").exists()]
    if missing:
        sys.exit(f"missing checkpoints {[str(m) for m in missing]}: run `python benches/make_checkpoints.py` first")

    b = Bench(args)
    start = time.perf_counter()
    with torch.inference_mode():
        notes = [] if args.no_check else check_outputs(b)
        gemms(b, args.quick)
        # ours' load_ms and peak_rss_mb (load and memory rows) come from these runs
        ours_results = {"distilbert-sst2": distilbert_sst2(b), "gpt2": gpt2_greedy(b),
                        "distilbart-cnn-12-6": distilbart_cnn(b)}
        load_and_first_token(b, ours_results["gpt2"], ours_results)
        if not args.no_bf16:
            bf16_weights(b)
    memory(b, ours_results)

    print(f"## PyTorch vs ours ({'--quick, ' if args.quick else ''}median of {args.runs} runs, "
          f"{args.threads} threads, float32 unless a row says bf16)\n")
    print(machine(args.threads) + "\n")
    print(b.table())
    if notes:
        print("\nSame outputs on these checkpoints:\n" + "\n".join(f"- {n}" for n in notes))
    if b.problems:
        print("\nProblems:\n" + "\n".join(f"- {p}" for p in b.problems))
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
