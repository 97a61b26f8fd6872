r"""Reproduces the README's exercise results: its tables, and the plots in docs/.

    python benchmarks/exercises.py            # about 25 minutes on a 2-core CPU
    python benchmarks/exercises.py --quick    # 20 epochs each, to check the script runs

Runs, each with `configs/timemachine.py` (or `configs/sine.py`) and the seed budget of 500
epochs unless said otherwise:
  * rnn / gru / lstm x 1 and 2 layers, with 10,000 held-out characters (`:val`);
  * the vanilla RNN with 3 layers (exercise 2; layers 1 and 2 come from the runs above);
  * `:overfit` (exercise 1), `:random` (random partitioning), `:word` (word level);
  * `configs/sine.py` (exercise 3).
Writes the tables between the `<!-- exercises:... -->` markers of README.md, the plots to
docs/, and every number to docs/exercises.json. Workdirs go under --workdir (default
runs/exercises); each run resumes if its workdir already holds it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import sine as sine_config  # noqa: E402
from configs import timemachine  # noqa: E402
from rnnlm_jax.jobs import lm as experiment  # noqa: E402
from rnnlm_jax.jobs import sine  # noqa: E402
from rnnlm_jax.train.metrics import markdown_table  # noqa: E402

DOCS = ROOT / "docs"


def run_lm(name: str, variant: str, workdir: Path, epochs: int | None, **overrides) -> dict:
    config = timemachine.get_config(variant)
    if epochs:
        config.num_epochs = epochs
        config.log_every_epochs = max(1, epochs // 5)
    for key, value in overrides.items():
        config[key] = value
    print(f"-- {name}: {variant or 'seed'} {overrides or ''}", flush=True)
    r = experiment.train_and_evaluate(config, str(workdir / name))  # silent: library logging
    out = {
        "variant": variant,
        "overrides": overrides,
        "epochs": config.num_epochs,
        "perplexity": r["perplexity"],
        "val_perplexity": r["val_perplexity"],
        "tokens_per_sec": r["tokens_per_sec"],
        "sample": r["continuations"][0],
    }
    print(f"   {json.dumps(out)}", flush=True)
    return out


def fmt(x, digits=2):
    return "-" if x is None else f"{x:,.{digits}f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", default=str(ROOT / "runs" / "exercises"))
    p.add_argument("--quick", action="store_true", help="20 epochs per run; README unchanged")
    p.add_argument(
        "--tables-only",
        action="store_true",
        help="rewrite the README tables from docs/exercises.json",
    )
    args = p.parse_args()
    if args.tables_only:
        results = json.loads((DOCS / "exercises.json").read_text())
        update_readme(render(results))
        return
    workdir = Path(args.workdir) / ("quick" if args.quick else "")
    epochs = 20 if args.quick else None
    results = {"lm": {}, "sine": None}

    for cell in ("rnn", "gru", "lstm"):
        for layers in (1, 2):
            name = f"{cell}_{layers}l"
            results["lm"][name] = run_lm(name, "val", workdir, epochs, cell=cell, num_layers=layers)
    results["lm"]["rnn_3l"] = run_lm("rnn_3l", "val", workdir, epochs, num_layers=3)
    results["lm"]["random"] = run_lm("random", "val,random", workdir, epochs)
    results["lm"]["overfit"] = run_lm("overfit", "overfit", workdir, epochs)
    results["lm"]["word"] = run_lm("word", "word", workdir, epochs)
    print("-- sine", flush=True)
    results["sine"] = sine.train_and_evaluate(sine_config.get_config(), str(workdir / "sine"))
    tables = render(results)
    if args.quick:
        print("\n\n".join(tables.values()))
        return
    DOCS.mkdir(exist_ok=True)
    shutil.copy(workdir / "overfit" / "perplexity.png", DOCS / "overfit.png")
    shutil.copy(workdir / "rnn_1l" / "perplexity.png", DOCS / "seed_val.png")
    shutil.copy(workdir / "sine" / "sine_predictions.png", DOCS / "sine_predictions.png")
    shutil.copy(workdir / "sine" / "sine_k_step.png", DOCS / "sine_k_step.png")
    (DOCS / "exercises.json").write_text(json.dumps(results, indent=2) + "\n")
    update_readme(tables)


def render(results: dict) -> dict[str, str]:
    """The README's four markdown tables from the results."""
    lm, s = results["lm"], results["sine"]
    cells = [
        [cell, layers, fmt(r["perplexity"]), fmt(r["val_perplexity"]),
         fmt(r["tokens_per_sec"], 0), f"`{r['sample']}`"]
        for cell in ("rnn", "gru", "lstm")
        for layers in (1, 2)
        for r in [lm[f"{cell}_{layers}l"]]
    ]  # fmt: skip
    deep = [
        [layers, fmt(lm[key]["perplexity"]), fmt(lm[key]["val_perplexity"]),
         fmt(lm[key]["tokens_per_sec"], 0)]
        for layers, key in ((1, "rnn_1l"), (2, "rnn_2l"), (3, "rnn_3l"))
    ]  # fmt: skip
    runs = (("rnn_1l", "sequential (the book)"), ("random", "random partitioning"),
            ("overfit", "overfit (exercise 1)"), ("word", "word level"))  # fmt: skip
    other = [
        [label, f"`:{lm[key]['variant']}`", fmt(lm[key]["perplexity"]),
         fmt(lm[key]["val_perplexity"]), f"`{lm[key]['sample']}`"]
        for key, label in runs
    ]  # fmt: skip
    ks = list(s["mlp"]["k_step_mse"])
    sine_rows = [
        [label, f"{r['onestep_mse']:.4f}", f"{r['onestep_test_mse']:.4f}",
         f"{r['multistep_mse']:.4f}", *(f"{r['k_step_mse'][k]:.4f}" for k in ks)]
        for name, label in (("mlp", "MLP (the book)"), ("rnn", "RNN"))
        for r in [s[name]]
    ]  # fmt: skip
    tables = {
        "cells": (["cell", "layers", "train perplexity", "val perplexity", "tokens/sec",
                   "sample"], cells),
        "deep": (["layers", "train perplexity", "val perplexity", "tokens/sec"], deep),
        "other": (["run", "config", "train perplexity", "val perplexity", "sample"], other),
        "sine": (["model", "1-step (all)", "1-step (test)", "free-running",
                  *(f"{k}-step" for k in ks)], sine_rows),
    }  # fmt: skip
    return {key: markdown_table(*table).rstrip("\n") for key, table in tables.items()}


def update_readme(tables: dict[str, str]) -> None:
    readme = (ROOT / "README.md").read_text()
    for key, table in tables.items():
        pattern = re.compile(rf"(<!-- exercises:{key} -->\n).*?(<!-- /exercises:{key} -->)", re.S)
        if not pattern.search(readme):
            sys.exit(f"error: README.md has no <!-- exercises:{key} --> markers")
        readme = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), readme)
    (ROOT / "README.md").write_text(readme)
    print("wrote the README.md tables (docs/*.png and docs/exercises.json beside them)")


if __name__ == "__main__":
    main()
