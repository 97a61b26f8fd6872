"""Penn Treebank training throughput, ours vs the PyTorch recipe, side by side.

    python benchmarks/ptb.py --compare-torch --torch-python=/path/to/venv/bin/python
    python benchmarks/ptb.py --config=small --epochs=3 --max-train-words=200000   # ours only

Both sides train Zaremba et al.'s model (`configs/ptb.py:<config>`;
`benchmarks/torch_ptb_lstm.py --config <config>`) on the first `--max-train-words`
training words for `--epochs` epochs and report training tokens/sec over the epochs after
the first (compilation / warm-up), evaluation excluded, as the PyTorch script does. With
`--compare-torch` the two alternate, A B A B, each a fresh process, for `--rounds` rounds,
and the ratio of the medians is printed. Results go to stdout and to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_only(args) -> dict:
    """Our side in this process: `train_epoch` over the slice, `args.epochs` times."""
    import jax

    from configs import ptb
    from rnnlm_jax import data, train
    from rnnlm_jax.config import checks as configuration
    from rnnlm_jax.jobs import lm as experiment

    config = ptb.get_config(args.config)
    config.max_tokens = args.max_train_words
    if args.dtype:
        config.dtype = args.dtype
    corpus = experiment.load_data(config)
    model = configuration.model_from_config(config, len(corpus.vocab))
    steps = experiment.steps_per_epoch(config, len(corpus.train))
    state = train.initial_train_state(model, config, steps)
    begin = model.begin_state(config.batch_size)
    rates = []
    for epoch in range(args.epochs):
        X, Y = data.epoch_batches(
            corpus.train, config.batch_size, config.num_steps, "sequential", 0, epoch, False
        )
        start = time.perf_counter()
        state, m = train.train_epoch(state, X, Y, begin, reset_each_batch=False)
        tokens = float(jax.device_get(m["num_tokens"]))
        rates.append(tokens / (time.perf_counter() - start))
    return {"tokens_per_sec": statistics.median(rates[1:] or rates)}


def _run(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def compare(args) -> dict:
    common = [f"--epochs={args.epochs}", f"--max-train-words={args.max_train_words}"]
    ours, theirs = [], []
    for i in range(args.rounds):
        cmd = [sys.executable, __file__, "--train-only", f"--config={args.config}", *common]
        cmd += [f"--dtype={args.dtype}"] if args.dtype else []
        ours.append(json.loads(_run(cmd).strip().splitlines()[-1])["tokens_per_sec"])
        cmd = [args.torch_python, str(args.torch_script), f"--config={args.config}", *common]
        cmd += [f"--threads={args.torch_threads}", "--no-test"]
        last = _run(cmd).strip().splitlines()[-1]
        theirs.append(float(last.split()[0].split("=")[1]))
        print(f"round {i + 1}: rnnlm_jax {ours[-1]:,.0f}  pytorch {theirs[-1]:,.0f} tokens/sec")
    ratio = statistics.median(ours) / statistics.median(theirs)
    return {
        "config": args.config,
        "dtype": args.dtype or "float32",
        "epochs": args.epochs,
        "max_train_words": args.max_train_words,
        "torch_threads": args.torch_threads,
        "rnnlm_jax": ours,
        "pytorch": theirs,
        "ratio_of_medians": ratio,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="small", choices=["small", "medium", "large"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-train-words", type=int, default=200_000)
    p.add_argument("--dtype", default="", choices=["", "float32", "bfloat16"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compare-torch", action="store_true")
    p.add_argument("--torch-python", default=sys.executable)
    p.add_argument("--torch-script", type=Path, default=ROOT / "benchmarks" / "torch_ptb_lstm.py")
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--out", default="ptb_benchmark.json")
    args = p.parse_args()
    if args.train_only:
        print(json.dumps(train_only(args)))
        return
    result = compare(args) if args.compare_torch else train_only(args)
    print(json.dumps(result, indent=1, default=str))
    Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
