"""Corpora at research scale: generated texts of 10 MB, 100 MB and 1 GB (and a WikiText-103-
sized word corpus, 100M words over a 267,735-word vocabulary), each tokenized as char, byte,
word and sentencepiece tokens, with configs/shakespeare.py's model.

    python benchmarks/data_scale.py --workdir=/tmp/scale --out=docs/data_scale

For every corpus and token type, each a fresh process measured by `/usr/bin/time -v`:
  cold   the command to the first trained step with no token file: `main.py` with
         `--config.train_steps=1` (tokenizing, compiling, the one step, its checkpoint and
         the end of the run: an upper bound of the time to the first step), its wall
         seconds and peak resident memory, and the tokenizing throughput (MB/s) it logs
  warm   the same command again (the token file read, not built)
Then training tokens/sec over 60 minibatches on the 10 MB and 1 GB corpora against the same
model on tiny Shakespeare (A B C A B C, fresh processes), with the matmul peak of this
machine measured in the same run and each rate's GFLOP/s as a fraction of it.

The generated text: words of English-like letter frequencies drawn from a Zipf law over a
267,735-word vocabulary, capitalised at sentence starts, commas and full stops between
spaces, paragraph line ends (WikiText's shape); the same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
# English letter frequencies (per cent), in LETTERS' order.
FREQ = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4,
                 2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07])  # fmt: skip
VOCAB = 267_735  # WikiText-103's word vocabulary
TOKENS = ("char", "byte", "word", "sentencepiece")
MODEL = ["--config=configs/shakespeare.py", "--config.max_tokens=-1"]


def make_vocab(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.poisson(5.0, VOCAB) + 1, 1, 16)
    letters = rng.choice(np.array(list(LETTERS)), lengths.sum(), p=FREQ / FREQ.sum())
    ends = np.cumsum(lengths)
    words = np.split(letters, ends[:-1])
    return np.array(sorted({"".join(w) for w in words}, key=len))


def make_text(path: Path, size: int = 0, words: int = 0, seed: int = 0) -> Path:
    """Writes generated text of `size` bytes (or `words` words) to `path` once."""
    if path.exists():
        return path
    vocab = make_vocab()
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(vocab) + 1)
    cdf = np.cumsum(1.0 / ranks)
    cdf /= cdf[-1]
    tmp = path.with_suffix(".part")
    written = n_words = 0
    with open(tmp, "w", encoding="utf-8") as f:
        while (size and written < size) or (words and n_words < words):
            n = 1_000_000 if not words else min(1_000_000, words - n_words)
            picked = vocab[np.searchsorted(cdf, rng.random(n))]
            seps = rng.choice(np.array([" "] * 8 + [" , ", " . "], dtype="<U3"), n)
            seps[rng.random(n) < 1 / 90] = " .\n"
            out = []
            cap = True
            for w, s in zip(picked.tolist(), seps.tolist()):
                out.append(w.capitalize() if cap else w)
                out.append(s)
                cap = s not in (" ", " , ")
            block = "".join(out)
            if size and written + len(block) > size:
                block = block[: size - written]
            f.write(block)
            written += len(block)
            n_words += n
    os.replace(tmp, path)
    return path


def timed(cmd: list[str], env: dict) -> dict:
    """Runs `cmd` under /usr/bin/time -v: wall seconds, peak RSS (MB), stdout, stderr."""
    start = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=ROOT, env=env, capture_output=True,
                       text=True)  # fmt: skip
    wall = time.perf_counter() - start
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return {"wall_s": wall, "peak_rss_mb": int(rss.group(1)) / 1024, "stderr": r.stderr}


def start_command(text: Path, token: str, workdir: Path) -> list[str]:
    cmd = [sys.executable, "main.py", *MODEL, "--config.corpus=text", f"--config.text_files={text}",
           f"--config.token={token}", "--config.train_steps=1", "--config.valid_fraction=0",
           "--config.num_preds=1", f"--workdir={workdir}"]  # fmt: skip
    if token == "sentencepiece":
        cmd += ["--config.vocab_size=8000"]
    return cmd


def tokenize_only(text: Path, token: str, env: dict) -> dict:
    """A process that only tokenizes `text` (no cache) through the corpus loader: its wall
    seconds, peak RSS and the throughput it logs."""
    for suffix in (".ids", ".json"):
        Path(f"{text}.{token}{suffix}").unlink(missing_ok=True)
    code = (
        "import logging, sys; from rnnlm_jax.data import corpora; "
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr); "
        f"c = corpora.load(corpora.CorpusSpec(corpus='text', text_files={str(text)!r}, "
        f"token={token!r}, max_tokens=-1, valid_fraction=0.0, vocab_size=8000)); "
        "print(len(c.train), len(c.vocab))"
    )
    run = timed([sys.executable, "-c", code], env)
    rate = re.search(r"tokenized ([\d,.]+) MB into ([\d,]+) .* in ([\d.]+) s \(([\d,.]+) MB/s\)",
                     run["stderr"])  # fmt: skip
    return {
        "tokenize_wall_s": run["wall_s"],
        "tokenize_rss_mb": run["peak_rss_mb"],
        "tokenize_s": float(rate.group(3)),
        "tokenize_mb_per_s": float(rate.group(4).replace(",", "")),
        "num_tokens": int(rate.group(2).replace(",", "")),
    }


def cold_and_warm(text: Path, token: str, scratch: Path, env: dict) -> dict:
    """The whole command to the first trained step, with no token file and with one."""
    for suffix in (".ids", ".json"):  # no token file: cold
        Path(f"{text}.{token}{suffix}").unlink(missing_ok=True)
    cold = timed(start_command(text, token, scratch / "cold"), env)
    warm = timed(start_command(text, token, scratch / "warm"), env)
    shutil.rmtree(scratch / "cold")
    shutil.rmtree(scratch / "warm")
    return {
        "cold_s": cold["wall_s"],
        "cold_rss_mb": cold["peak_rss_mb"],
        "warm_s": warm["wall_s"],
        "warm_rss_mb": warm["peak_rss_mb"],
    }


def tokens_per_sec(args_: list[str], scratch: Path, env: dict) -> float:
    """Median tokens/sec of a 60-step run's chunks after the first (progress.jsonl)."""
    workdir = scratch / "rate"
    cmd = [sys.executable, "main.py", *MODEL, *args_, "--config.train_steps=60",
           "--config.steps_per_chunk=10", "--config.num_preds=1",
           f"--workdir={workdir}"]  # fmt: skip
    timed(cmd, env)
    chunks = [json.loads(x) for x in (workdir / "progress.jsonl").read_text().splitlines()]
    shutil.rmtree(workdir)
    return statistics.median(c["tokens_per_sec"] for c in chunks[1:])


def model_flops_per_token() -> float:
    """6 x the matrix weights of configs/shakespeare.py's model (65 characters; the head's
    vocab differs by corpus, so this is the Shakespeare model's count)."""
    sys.path.insert(0, str(ROOT))
    import jax

    from configs import shakespeare
    from rnnlm_jax.config.checks import model_from_config
    from rnnlm_jax.train import step

    config = shakespeare.get_config()
    params = step.abstract_train_state(model_from_config(config, 65), config).params
    weights = sum(x.size for p, x in jax.tree_util.tree_leaves_with_path(params)
                  if x.ndim == 2 and "embed" not in jax.tree_util.keystr(p))  # fmt: skip
    return 6.0 * weights


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True, help="corpora and runs go here")
    p.add_argument("--sizes", default="10,100,1000", help="MB of generated text")
    p.add_argument("--tokens", default=",".join(TOKENS))
    p.add_argument("--rounds", type=int, default=2, help="rounds of the tokens/sec runs")
    p.add_argument("--words", type=int, default=100_000_000,
                   help="words of the WikiText-103-sized corpus (0: none)")  # fmt: skip
    p.add_argument("--out", default="", help="writes <out>.json and <out>.md")
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    sizes = [int(s) for s in args.sizes.split(",")]
    texts = {mb: make_text(args.workdir / f"text_{mb}mb.txt", size=mb * 10**6) for mb in sizes}
    rows = []
    for mb, text in texts.items():
        for token in args.tokens.split(","):
            row = {"corpus": f"{mb} MB", "token": token, **tokenize_only(text, token, env)}
            if token in ("char", "byte"):  # configs/shakespeare.py's model: a char model
                with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
                    row.update(cold_and_warm(text, token, Path(scratch), env))
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.words:
        words = make_text(args.workdir / f"words_{args.words}.txt", words=args.words, seed=1)
        name = f"{args.words / 1e6:,.0f}M words ({words.stat().st_size / 1e6:,.0f} MB)"
        row = {"corpus": name, "token": "word", **tokenize_only(words, "word", env)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    # Training rates: tiny Shakespeare, the smallest and the largest corpus, A B C A B C.
    import jax  # noqa: F401  (the peak below runs in this process)
    from throughput import matmul_peak_gflops

    peak = matmul_peak_gflops()["float32"]
    runs = {"tiny Shakespeare": ["--config.corpus=shakespeare"]}
    for mb in (min(sizes), max(sizes)):
        runs[f"{mb} MB"] = ["--config.corpus=text", f"--config.text_files={texts[mb]}",
                            "--config.valid_fraction=0"]  # fmt: skip
    rates = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, extra in runs.items():
            with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
                rates[name].append(tokens_per_sec(extra, Path(scratch), env))
    flops = model_flops_per_token()
    rate_rows = [{"corpus": name, "tokens_per_sec": statistics.median(r), "runs": r,
                  "gflops": statistics.median(r) * flops / 1e9,
                  "of_peak": statistics.median(r) * flops / 1e9 / peak}
                 for name, r in rates.items()]  # fmt: skip
    summary = {"start": rows, "training": rate_rows, "matmul_peak_gflops": peak,
               "cpu": _cpu()}  # fmt: skip
    table = markdown(summary)
    print(table)
    if args.out:
        Path(f"{args.out}.json").write_text(json.dumps(summary, indent=1) + "\n")
        Path(f"{args.out}.md").write_text(table + "\n")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


def markdown(summary: dict) -> str:
    lines = ["| corpus | tokens | tokenizing MB/s | tokenizing s | its peak RSS (MB) | first "
             "step, cold (s) | first step, warm (s) | peak RSS cold / warm (MB) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in summary["start"]:
        start = (f"{r['cold_s']:.1f} | {r['warm_s']:.1f} | {r['cold_rss_mb']:,.0f} / "
                 f"{r['warm_rss_mb']:,.0f}" if "cold_s" in r else "- | - | -")  # fmt: skip
        tok = f"{r['tokenize_wall_s']:.1f} | {r['tokenize_rss_mb']:,.0f}"
        lines.append(f"| {r['corpus']} | {r['token']} | {r['tokenize_mb_per_s']:,.1f} | "
                     f"{tok} | {start} |")  # fmt: skip
    lines += ["", "| training on | tokens/sec | GFLOP/s | of the matmul peak |",
              "|---|---:|---:|---:|"]  # fmt: skip
    for r in summary["training"]:
        lines.append(f"| {r['corpus']} | {r['tokens_per_sec']:,.0f} | {r['gflops']:.2f} | "
                     f"{r['of_peak']:.1%} |")  # fmt: skip
    lines.append(f"\nmatmul peak (float32, 2048^3): {summary['matmul_peak_gflops']:.1f} GFLOP/s; "
                 f"{summary['cpu']}")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
