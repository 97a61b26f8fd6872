r"""What each recurrence can compute: every model on every synthetic task, one table.

    python benchmarks/capabilities.py                       # the whole table (resumable)
    python benchmarks/capabilities.py --models lstm mamba2 mamba2_neg --tasks parity
    python benchmarks/capabilities.py --report              # the table and plot from the JSON

Each (model, task, seed) trains `configs/synthetic.py:<task>` with the model's fields in a
fresh `main.py` process and workdir (`--workdir`, default runs/capabilities), then its
`synthetic_results.json` goes into `docs/capabilities.json`, written after every run: a
rerun skips what is there and a run cut short resumes from its workdir. MQAR runs once per
width in `--mqar_widths`. At the end (or with `--report`) it prints the table (scaled
accuracy on the test lengths, the worst length bin beside it; MQAR accuracy by width), each
published outcome beside ours, writes the table into docs/capabilities.md between its
markers and draws accuracy against test length (docs/capabilities.png).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "capabilities.json"
DOC = ROOT / "docs" / "capabilities.md"
PLOT = ROOT / "docs" / "capabilities.png"
TASKS = ("parity", "s3", "mqar", "cycle_navigation", "modular_arithmetic", "s5")  # run order
BEGIN, END = "<!-- capabilities table: benchmarks/capabilities.py writes it -->", "<!-- end -->"

# Each model: a cell variant of configs/synthetic.py and the fields it sets beside it.
MODELS = {
    "lstm": ("lstm", {}),
    "slstm_layer": ("slstm", {"block": "stack", "num_layers": 1}),  # as the LSTM: one layer
    "slstm": ("slstm", {"block": "xlstm"}),  # xLSTM's sLSTM blocks
    "xlstm_1_1": ("mlstm", {"block": "xlstm", "mixers": "mlstm,slstm"}),  # xLSTM[1:1]
    "mamba2": ("mamba2", {}),
    "mamba2_neg": ("mamba2", {"negative_eigenvalues": True}),
    "gated_deltanet": ("gated_deltanet", {}),
    "gated_deltanet_neg": ("gated_deltanet", {"negative_eigenvalues": True}),
    "deltanet": ("deltanet", {}),
    "deltanet_neg": ("deltanet", {"negative_eigenvalues": True}),
    "deltaproduct_neg": ("deltaproduct", {"negative_eigenvalues": True}),  # n_h 2
    "retnet": ("retnet", {}),
    "hgrn2": ("hgrn2", {}),
    "rwkv7": ("rwkv7", {}),
    "attention": ("attention", {}),
    "hybrid": ("gated_deltanet", {"mixers": "gated_deltanet,attention"}),  # DeltaNet + SWA
    "gla": ("gla", {}),
    "gla_neg": ("gla", {"negative_eigenvalues": True}),
    "mlstm": ("mlstm", {}),
    "mingru": ("mingru", {}),
    "mingru_neg": ("mingru", {"negative_eigenvalues": True}),
    "rglru": ("rglru", {}),
}
# What the papers report, as they word it (the table prints it beside ours).
PUBLISHED = {
    ("lstm", "parity"): "solved at every length (Deletang et al. 2023)",
    ("lstm", "modular_arithmetic"): "solved (Deletang et al. 2023)",
    ("lstm", "cycle_navigation"): "solved (Deletang et al. 2023)",
    ("slstm", "parity"): "1.000 to length 2048 (xLSTM with sLSTM; Beck et al. 2024)",
    ("slstm_layer", "parity"): "1.000 to length 2048 (xLSTM with sLSTM; Beck et al. 2024)",
    ("xlstm_1_1", "parity"): "1.000 to length 2048 (Beck et al. 2024)",
    ("xlstm_1_1", "s3"): "1.000 to length 2048 (Beck et al. 2024)",
    ("mamba2", "parity"): "<= 0.352 (arXiv 2606.12364); chance with [0, 1] (Grazzi et al.)",
    ("mamba2_neg", "parity"): "solved with [-1, 1] (Grazzi et al. 2025)",
    ("gla", "parity"): "chance: eigenvalues in [0, 1] (Grazzi et al. 2025)",
    ("mlstm", "parity"): "chance: eigenvalues in [0, 1] (Grazzi et al. 2025)",
    ("mingru", "parity"): "chance: eigenvalues in [0, 1] (Grazzi et al. 2025)",
    ("mingru_neg", "parity"): "[-1, 1] makes parity solvable by a linear recurrence (Grazzi)",
    ("gated_deltanet", "parity"): "chance with b in [0, 1] (Grazzi et al. 2025)",
    ("gated_deltanet_neg", "parity"): "solved with b in [0, 2] (Grazzi et al. 2025)",
    ("deltanet", "parity"): "chance with b in [0, 1] (Grazzi et al. 2025)",
    ("deltanet_neg", "parity"): "solved with b in [0, 2] (Grazzi et al. 2025)",
    ("deltaproduct_neg", "parity"): "solved; n_h >= 2 reaches S3 as well (Siems et al. 2025)",
    ("retnet", "parity"): "chance: fixed decays in [0, 1] (Grazzi et al. 2025)",
    ("hgrn2", "parity"): "chance: eigenvalues in [0, 1] (Grazzi et al. 2025)",
    ("rwkv7", "parity"): "state tracking reported for its generalised delta rule (Peng et al.)",
    ("attention", "parity"): "no generalisation past training lengths (Deletang et al.)",
    ("attention", "mqar"): "solved at every width (Arora et al. 2023)",
}


def key(model: str, task: str, seed: int, width: int | None = None) -> str:
    return f"{model}/{task}/seed{seed}" + (f"/width{width}" if width else "")


def command(model: str, task: str, seed: int, width: int | None, workdir: Path, steps: int):
    cell, fields = MODELS[model]
    args = [sys.executable, str(ROOT / "main.py"), f"--config=configs/synthetic.py:{task},{cell}",
            f"--workdir={workdir}", f"--config.seed={seed}"]  # fmt: skip
    if steps:
        args.append(f"--config.train_steps={steps}")
    if width:
        args.append(f"--config.num_hiddens={width}")
    args += [f"--config.{k}={v}" for k, v in fields.items()]
    return args


def default_steps() -> int:
    """The minibatches `configs/synthetic.py` trains."""
    sys.path.insert(0, str(ROOT))
    from configs.synthetic import get_config

    return get_config().train_steps


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": {}}


def save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def run_all(args) -> dict:
    data = load(Path(args.out))
    jobs = []
    for task in args.tasks:
        for model in args.models:
            for seed in args.seeds:
                widths = args.mqar_widths if task == "mqar" else [None]
                jobs += [(model, task, seed, w) for w in widths]
    steps = args.steps or default_steps()
    todo = [j for j in jobs if data["runs"].get(key(*j), {}).get("steps") != steps]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs done; {len(todo)} to run", flush=True)
    for i, (model, task, seed, width) in enumerate(todo):
        workdir = Path(args.workdir) / key(model, task, seed, width).replace("/", "-")
        began = time.perf_counter()
        r = subprocess.run(command(model, task, seed, width, workdir, args.steps), cwd=ROOT,
                           capture_output=True, text=True)  # fmt: skip
        seconds = time.perf_counter() - began
        if r.returncode != 0:
            print(f"[{i + 1}/{len(todo)}] {key(model, task, seed, width)} failed:\n{r.stderr}")
            continue
        result = json.loads((workdir / "synthetic_results.json").read_text())
        result["wall_seconds"] = seconds
        data["runs"][key(model, task, seed, width)] = result
        save(Path(args.out), data)
        score = result["test"]["scaled"] if "test" in result else result["iid"]["accuracy"]
        print(f"[{i + 1}/{len(todo)}] {key(model, task, seed, width)}: {score:.3f} "
              f"({seconds:.0f} s)", flush=True)  # fmt: skip
    return data


def summary(data: dict, model: str, task: str) -> dict | None:
    """Medians over seeds: scaled test accuracy and its worst bin (state tasks), or MQAR
    accuracy by width."""
    runs = [r for k, r in data["runs"].items() if k.startswith(f"{model}/{task}/")]
    if not runs:
        return None
    if task == "mqar":
        by_width = {}
        for k, r in data["runs"].items():
            if k.startswith(f"{model}/mqar/"):
                by_width.setdefault(int(k.rsplit("width", 1)[1]), []).append(r["iid"]["accuracy"])
        return {"widths": {w: statistics.median(v) for w, v in sorted(by_width.items())},
                "steps": min(r["steps"] for r in runs)}  # fmt: skip
    return {
        "scaled": statistics.median(r["test"]["scaled"] for r in runs),
        "worst": statistics.median(min(b["scaled"] for b in r["test"]["bins"]) for r in runs),
        "iid": statistics.median(r["iid"]["accuracy"] for r in runs),
        "seeds": len(runs),
        "seconds": statistics.median(r["wall_seconds"] for r in runs),
        "steps": min(r["steps"] for r in runs),
    }


def table(data: dict, models, tasks) -> str:
    state = [t for t in tasks if t != "mqar"]
    lines = ["| model | " + " | ".join(state) + (" | mqar (by width)" if "mqar" in tasks else "")
             + " |", "|---" * (1 + len(state) + ("mqar" in tasks)) + "|"]  # fmt: skip
    for model in models:
        cells = []
        for task in state:
            s = summary(data, model, task)
            cells.append("" if s is None else f"{s['scaled']:.2f} ({s['worst']:.2f})" + budget(s))
        if "mqar" in tasks:
            s = summary(data, model, "mqar")
            cells.append("" if s is None else ", ".join(
                f"{w}: {a:.2f}" for w, a in s["widths"].items()) + budget(s))  # fmt: skip
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    published = [f"- {m} on {t}: ours {_ours(data, m, t)}; published: {text}"
                 for (m, t), text in PUBLISHED.items() if m in models and t in tasks]  # fmt: skip
    return "\n".join(lines) + "\n\nBeside the papers:\n\n" + "\n".join(published) + "\n"


def budget(s: dict) -> str:
    """A note where a result trained for fewer minibatches than the config's."""
    return "" if s["steps"] >= default_steps() else f" [{s['steps']} steps]"


def _ours(data, model, task) -> str:
    s = summary(data, model, task)
    if s is None:
        return "not run"
    if task == "mqar":
        return ", ".join(f"width {w} {a:.3f}" for w, a in s["widths"].items())
    return f"{s['scaled']:.3f} scaled (worst bin {s['worst']:.3f}, training lengths {s['iid']:.3f})"


def plot(data: dict, models, tasks, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = {k.split("/")[1] for k in data["runs"]}
    state = [t for t in tasks if t != "mqar" and t in ran]  # the tasks run so far
    if not state:
        return
    fig, axes = plt.subplots(1, len(state), figsize=(3.2 * len(state) + 1.8, 3.2), dpi=110,
                             squeeze=False)  # fmt: skip
    colors = plt.get_cmap("tab20").colors
    for ax, task in zip(axes[0], state):
        for i, model in enumerate(models):
            runs = [r for k, r in data["runs"].items() if k.startswith(f"{model}/{task}/")]
            if runs:
                bins = runs[0]["test"]["bins"]
                xs = [sum(b["lengths"]) / 2 for b in bins]
                ys = [statistics.median(r["test"]["bins"][i]["scaled"] for r in runs)
                      for i in range(len(bins))]  # fmt: skip
                ax.plot(xs, ys, marker=".", lw=1, label=model, color=colors[i % len(colors)])
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("test length", fontsize=8)
        ax.set_ylim(-0.3, 1.05)
    axes[0][0].set_ylabel("scaled accuracy", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, loc="center right")
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    fig.savefig(path)
    plt.close(fig)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        DOC.write_text(head + BEGIN + "\n\n" + text + "\n" + END + rest.split(END, 1)[1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--mqar_widths", nargs="+", type=int, default=[64, 128, 256])
    parser.add_argument("--steps", type=int, default=0, help="train_steps (0: the config's)")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "capabilities"))
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--report", action="store_true", help="only the table and plot")
    args = parser.parse_args(argv)
    data = load(Path(args.out)) if args.report else run_all(args)
    print(table(data, args.models, args.tasks))
    if args.out == str(OUT):  # the page's table and plot: every model and task, whatever ran
        write_doc(table(data, list(MODELS), list(TASKS)))
        plot(data, list(MODELS), list(TASKS), PLOT)


if __name__ == "__main__":
    main()
