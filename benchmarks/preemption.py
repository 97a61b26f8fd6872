"""Seconds from SIGTERM to exit, at random moments of a training epoch (what a SLURM
preemption leaves: SIGKILL follows SIGTERM after `KillWait`, 30 s by default).

    python benchmarks/preemption.py --config=configs/ptb.py:medium --trials=5

Each trial starts `main.py` in a fresh workdir, waits until training has begun (the first
chunk's progress record) plus a random 5-60 s, sends SIGTERM and times the exit (the
checkpoint saved at the next chunk boundary, its write and checksums included), then checks
that the run says where it stopped. Prints each trial and the median and worst; `--out`
writes them as JSON. Extra arguments go to main.py (e.g. `--config.data_dir=...`).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trial(config: str, extra: list[str], wait: float, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="preemption_") as tmp:
        workdir = Path(tmp) / "w"
        cmd = [sys.executable, str(ROOT / "main.py"), f"--config={config}",
               f"--workdir={workdir}", *extra]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        progress = workdir / "progress.jsonl"
        started = time.monotonic()
        while proc.poll() is None and not (progress.is_file() and progress.stat().st_size):
            if time.monotonic() - started > timeout:
                proc.kill()
                raise SystemExit("training did not start in time")
            time.sleep(0.05)
        if proc.poll() is not None:
            raise SystemExit(f"the run ended early:\n{proc.stderr.read()[-2000:]}")
        time.sleep(wait)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=timeout)
        seconds = time.monotonic() - sent
        stopped = [line for line in out.splitlines() if line.startswith("stopped by SIGTERM")]
        if proc.returncode != 0 or not stopped:
            raise SystemExit(f"no clean stop (status {proc.returncode}):\n{err[-2000:]}")
        return {"wait_s": wait, "exit_s": seconds, "line": stopped[0]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="configs/ptb.py:medium")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--min-wait", type=float, default=5.0)
    p.add_argument("--max-wait", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", default="")
    args, extra = p.parse_known_args()
    rng = random.Random(args.seed)
    results = []
    for i in range(args.trials):
        r = trial(args.config, extra, rng.uniform(args.min_wait, args.max_wait), args.timeout)
        results.append(r)
        print(f"trial {i + 1}: SIGTERM {r['wait_s']:.1f} s into training, exit after "
              f"{r['exit_s']:.2f} s ({r['line']})", flush=True)  # fmt: skip
    exits = [r["exit_s"] for r in results]
    summary = {"config": args.config, "trials": results,
               "median_s": statistics.median(exits), "worst_s": max(exits)}  # fmt: skip
    print(f"median {summary['median_s']:.2f} s, worst {summary['worst_s']:.2f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
