"""The same training command in two checkouts, alternately (A B A B, each a fresh
process): training tokens/sec and wall seconds of each, and their ratio.

    git worktree add ../before <commit>
    python benchmarks/ab.py --a=../before --b=. --rounds=3 -- --config=configs/timemachine.py

Everything after `--` goes to each checkout's `main.py` (a fresh temporary workdir per
run). Training tokens/sec is the median over a run's epochs after the first (which
compiles), read from its `metrics.jsonl`; wall seconds is the whole command's. Prints every
run, then the medians and the ratios B / A, and whether every run printed the same results
(its stdout without the timing lines) and logged the same losses, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(checkout: Path, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="ab_") as tmp:
        cmd = [sys.executable, str(checkout / "main.py"), *args, f"--workdir={tmp}/w"]
        start = time.perf_counter()
        r = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if r.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
        records = [
            json.loads(x) for x in (Path(tmp) / "w" / "metrics.jsonl").read_text().splitlines()
        ]
    records = [x for x in records if not x.get("kind")]  # epochs, not mid-epoch evaluations
    rates = [x["tokens_per_sec"] for x in records[1:]] or [records[0]["tokens_per_sec"]]
    timing = ("tokens/sec", "trained ")
    printed = [line for line in r.stdout.splitlines() if not any(t in line for t in timing)]
    losses = [{k: v for k, v in x.items() if k.endswith(("_loss", "_perplexity"))}
              for x in records]  # fmt: skip
    return {"tokens_per_sec": statistics.median(rates), "wall_s": wall,
            "results": json.dumps([printed, losses])}  # fmt: skip


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--a", type=Path, required=True, help="checkout A (e.g. before)")
    p.add_argument("--b", type=Path, required=True, help="checkout B (e.g. after)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="")
    args, rest = p.parse_known_args()
    command = [a for a in rest if a != "--"]
    results = {"a": [], "b": []}
    for i in range(args.rounds):
        for side in ("a", "b"):
            r = run(getattr(args, side).resolve(), command)
            results[side].append(r)
            print(f"round {i + 1} {side.upper()}: {r['tokens_per_sec']:,.0f} tokens/sec, "
                  f"{r['wall_s']:.1f} s wall", flush=True)  # fmt: skip
    med = {side: {k: statistics.median(r[k] for r in runs) for k in ("tokens_per_sec", "wall_s")}
           for side, runs in results.items()}  # fmt: skip
    same = len({r.pop("results") for runs in results.values() for r in runs}) == 1
    summary = {"command": command, "runs": results, "median": med, "same_results": same,
               "tokens_per_sec_b_over_a": med["b"]["tokens_per_sec"] / med["a"]["tokens_per_sec"],
               "wall_b_over_a": med["b"]["wall_s"] / med["a"]["wall_s"]}  # fmt: skip
    print(f"median tokens/sec A {med['a']['tokens_per_sec']:,.0f}, B "
          f"{med['b']['tokens_per_sec']:,.0f}: B/A {summary['tokens_per_sec_b_over_a']:.3f}; "
          f"wall B/A {summary['wall_b_over_a']:.3f}; results "
          + ("identical in every run" if same else "DIFFER between runs"))  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
