r"""The recurrences trained in parallel over time beside the LSTM: speed, quality, sampling.

    python benchmarks/recurrences.py speed          # tokens/sec, fraction of the matmul peak
    python benchmarks/recurrences.py shakespeare    # validation loss vs wall-clock, a PNG
    python benchmarks/recurrences.py generation     # 1,000 characters, compiled, per cell
    python benchmarks/recurrences.py scans          # the scans alone: time, XLA's bytes
    python benchmarks/recurrences.py matrix         # the matrix-state cells' forms, chunks
    python benchmarks/recurrences.py memory         # a train step at T 4096, each remat

`speed`: training tokens/sec of one layer of every cell (one-hot inputs, the Dense head,
clipped SGD; the classic cells by their fast layers) at the book's shapes (B 32, T 35,
H 256, V 28) and at T 256 and 1024, the linear cells both by the associative and by the
sequential scan. Every measurement runs in a fresh process, the rows in alternation
(round 1: A B C ..., round 2: A B C ...), the median of the rounds reported; the matmul peak
(a 2048^3 float32 `jnp.matmul`) is measured in the same rounds, and GFLOP/s counts XLA's
own FLOPs of the compiled step (`cost_analysis`).
`shakespeare`: runs `main.py --config=configs/shakespeare.py:<variant>` for each variant,
and with `--nanogpt=CHECKOUT` nanoGPT's CPU recipe exactly as its README prints it
(`NANOGPT_COMMAND`, in a fresh copy of the checkout whose `data/shakespeare_char` its own
`prepare.py` made from the verified tiny Shakespeare) beside them, each once per round in
turn (`--rounds`), fresh processes and fresh workdirs, the wall time of each whole command.
Then, untimed, every run's validation loss by both protocols: every non-overlapping window
of 64 characters from a fresh state (nanoGPT's `estimate_loss` over the whole split; ours by
`rnnlm_jax.infer.scoring.window_loss`, nanoGPT's saved `ckpt.pt` by
`benchmarks/nanogpt_eval.py` with the checkout's `model.py`), and the whole text in each
model's natural context (ours: one stream, the state carried; nanoGPT: a sliding window of
64, stride 8). One table of both; the median over the rounds; a PNG of the curves.
`generation`: greedy sampling of 1,000 characters after a prefix as one compiled call, per
cell, from freshly initialised 1 x 256 models (the work does not depend on the weights).
`scans`: `linear_scan` alone, forward and backward, at `[T, B, H]`, by each scan: the
time and the bytes XLA's cost analysis counts.
`matrix`: each matrix-state cell (`MATRIX`, `--cells`; deltaproduct with 2 updates a token)
at B 8, 4 heads of width 64 (H 256), T 35, 256, 1024 (`--lengths`): forward + backward
milliseconds of the recurrence alone and of the whole layer (projections, convolution, norm,
gates), in every form (the parallel one up to `--parallel_up_to`), the chunkwise one at
`--chunks`, the forms alternated within each of `--repeats` rounds in one process per
(cell, T), the median reported; the layer's GFLOP/s (XLA's count) and, in the table, its
share of the matmul peak measured before and after in the same run; the projections alone
(input and output, forward and backward) timed in the same rounds, the layer's time outside
them, and the ratio the chunk form would reach were its other work free; XLA's memory of
the compiled backward pass; and at T 1024 the chunkwise form against the recurrent one:
outputs, final state and gradients (inputs, gates, initial state), the largest relative
difference.
`memory`: one AdamW training step of the Shakespeare-sized model (two residual blocks of
width 256, MLP 512, 4 heads, vocab 66) at B 8, T 4096, each remat, each in a fresh process:
XLA's memory of the compiled step and the process's peak resident memory.
Results are printed and written as JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSIC = ("lstm", "gru")
LINEAR = ("mingru", "minlstm", "rglru", "lru")
MATRIX = ("mlstm", "gla", "mamba2", "gated_deltanet", "deltanet", "deltaproduct", "retnet",
          "hgrn2")  # fmt: skip
NANOGPT_CPU = 1.88  # nanoGPT README: shakespeare_char on a CPU, "a loss of only 1.88"


def speed_child(cell: str, T: int, scan: str, B: int, H: int, V: int, repeats: int) -> dict:
    """One measurement: tokens/sec of `repeats` calls of a compiled chunk of 4 steps."""
    import jax
    import jax.numpy as jnp

    from rnnlm_jax import train
    from rnnlm_jax.nn.models import RNNModel

    if cell == "peak":
        n = 2048
        f = jax.jit(lambda x, y: x @ y)
        a = jnp.ones((n, n), jnp.float32)
        f(a, a).block_until_ready()
        best = min(_timed(lambda: f(a, a).block_until_ready()) for _ in range(10))
        return {"gflops": 2 * n**3 / best / 1e9}
    model = RNNModel(V, cell=cell, num_hiddens=H, scan=scan)
    state = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, B, T)
    steps = 4
    X = jax.random.randint(jax.random.key(1), (steps, B, T), 0, V)
    begin = model.begin_state(B)
    step_flops = _flops(train.train_step.lower(state, begin, X[0], X[0]).compile())
    state, carry, m = train.train_chunk(state, begin, X, X, begin, False)
    jax.block_until_ready(m)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, carry, m = train.train_chunk(state, carry, X, X, begin, False)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return {"tokens_per_sec": steps * B * T / seconds, "gflops": steps * step_flops / seconds / 1e9}


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "child", *args], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(f"error: child {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(args) -> dict:
    rows = [("peak", 0, "-")]
    for T in args.lengths:
        rows += [(c, T, "-") for c in CLASSIC]
        rows += [(c, T, s) for c in LINEAR for s in ("associative", "sequential")]
    found: dict[tuple, list[dict]] = {r: [] for r in rows}
    for rnd in range(args.rounds):
        for cell, T, scan in rows:
            r = _child([cell, str(T), scan, str(args.batch), str(args.hidden), str(args.vocab),
                        str(args.repeats)])  # fmt: skip
            found[(cell, T, scan)].append(r)
            print(f"round {rnd + 1}: {cell} T={T} {scan}: {r}", file=sys.stderr, flush=True)
    peak = statistics.median(r["gflops"] for r in found[rows[0]])
    table = []
    for cell, T, scan in rows[1:]:
        rs = found[(cell, T, scan)]
        tps = statistics.median(r["tokens_per_sec"] for r in rs)
        gf = statistics.median(r["gflops"] for r in rs)
        table.append({"cell": cell, "T": T, "scan": scan, "tokens_per_sec": tps,
                      "gflops": gf, "fraction_of_peak": gf / peak})  # fmt: skip
    return {"matmul_peak_gflops": peak, "batch": args.batch, "hidden": args.hidden,
            "vocab": args.vocab, "rounds": args.rounds, "rows": table}  # fmt: skip


def speed_table(result: dict) -> str:
    lstm = {r["T"]: r["tokens_per_sec"] for r in result["rows"] if r["cell"] == "lstm"}
    lines = ["| cell | T | scan | tokens/sec | x fast LSTM | GFLOP/s | of peak |",
             "|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["rows"]:
        lines.append(
            f"| {r['cell']} | {r['T']} | {r['scan']} | {r['tokens_per_sec']:,.0f} | "
            f"{r['tokens_per_sec'] / lstm[r['T']]:.2f} | {r['gflops']:.1f} | "
            f"{r['fraction_of_peak']:.1%} |"
        )
    return "\n".join(lines)


# nanoGPT's CPU recipe, exactly as its README prints it (run in a fresh copy of the checkout
# given by --nanogpt, with its own `python`: the Python given by --nanogpt_python).
NANOGPT_COMMAND = (
    "python train.py config/train_shakespeare_char.py --device=cpu --compile=False "
    "--eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 "
    "--n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0"
)
WINDOW = 64  # nanoGPT's context in that recipe: its evaluation windows


def _timed_lines(cmd: list[str], cwd, pattern: str) -> tuple[float, list, list[str]]:
    """Runs `cmd`; returns its wall seconds, `(seconds, float)` for each stdout line that
    `pattern` matches (its last group), and the lines."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True)
    lines, curve = [], []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        m = re.match(pattern, line)
        if m:
            curve.append((time.perf_counter() - t0, float(m.groups()[-1])))
    wall = time.perf_counter() - t0
    if proc.wait():
        raise SystemExit(f"error: {cmd} failed")
    return wall, curve, lines


def _json_of(cmd: list[str], cwd=ROOT) -> dict:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"error: {cmd} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def evaluate_child(workdir: str) -> dict:
    """Our run's validation loss by both protocols: every non-overlapping window of 64
    characters from a fresh state (nanoGPT's), and the whole validation text as one stream
    with the state carried (every target sees all the text before it)."""
    import numpy as np

    from rnnlm_jax.infer import scoring
    from rnnlm_jax.infer.load import load_trained
    from rnnlm_jax.jobs.lm import load_data

    model, params, _, config = load_trained(workdir)
    valid = load_data(config).valid
    windows, count = scoring.window_loss(model, params, valid, WINDOW)
    carried = -float(np.mean(np.asarray(scoring.token_log_probs(model, params, valid)),
                             dtype=np.float64))  # fmt: skip
    return {"windows_loss": windows, "windows_targets": count, "carried_loss": carried,
            "carried_targets": len(valid) - 1}  # fmt: skip


def _ours(variant: str, workdir: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "main.py"), f"--config=configs/shakespeare.py:{variant}",
           f"--workdir={workdir}"]  # fmt: skip
    # Each chunk's own loss, on characters not seen before (one epoch) along the run.
    wall, curve, lines = _timed_lines(cmd, ROOT, r"\[\d+/\d+\] step \d+/\d+, loss ([0-9.]+)")
    last = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()][-1]
    scores = _json_of([sys.executable, __file__, "evaluate", str(workdir)])
    return {"wall_s": wall, "train_curve": curve, "own_loss": last["eval_loss"], **scores,
            "tokens_per_sec": last["tokens_per_sec"], "stdout_tail": lines[-4:]}  # fmt: skip


def prepare_nanogpt(checkout: str, python: str, data_file: Path, where: Path) -> Path:
    """A copy of the checkout with `data/shakespeare_char` prepared by its own `prepare.py`
    from `data_file` (tiny Shakespeare, verified by rnnlm_jax: nothing is downloaded)."""
    prepared = where / "nanogpt-prepared"
    if not (prepared / "data" / "shakespeare_char" / "val.bin").is_file():
        shutil.rmtree(prepared, ignore_errors=True)
        shutil.copytree(checkout, prepared, ignore=shutil.ignore_patterns(".git", "out-*"))
        shutil.copy(data_file, prepared / "data" / "shakespeare_char" / "input.txt")
        subprocess.run([python, "prepare.py"], cwd=prepared / "data" / "shakespeare_char",
                       check=True, capture_output=True)  # fmt: skip
    return prepared


def _nanogpt(prepared: Path, python: str, workdir: Path) -> dict:
    shutil.copytree(prepared, workdir)  # a fresh checkout: no out-shakespeare-char yet
    cmd = shlex.split(NANOGPT_COMMAND)
    cmd[0] = python
    pattern = r"step (\d+): train loss [0-9.]+, val loss ([0-9.]+)"
    wall, curve, lines = _timed_lines(cmd, workdir, pattern)
    evaluator = str(ROOT / "benchmarks" / "nanogpt_eval.py")
    scores = _json_of([python, evaluator, f"--checkout={workdir}"])
    return {"wall_s": wall, "val_curve": curve, "own_loss": curve[-1][1],
            "own_loss_saved": scores["best_val_loss"], **scores,
            "carried_loss": scores["sliding_loss"], "stdout_tail": lines[-2:]}  # fmt: skip


def shakespeare(args) -> dict:
    """Every variant (and nanoGPT's recipe, with --nanogpt) once per round, in turn, fresh
    processes and fresh workdirs; the median wall time over the rounds, the curve of the
    last; each run scored afterwards (not timed) by both protocols."""
    from rnnlm_jax.data.sources import find_shakespeare

    runs = {v: [] for v in (["nanogpt"] if args.nanogpt else []) + list(args.variants)}
    root = Path(args.workdir)
    if args.nanogpt:
        data_file = find_shakespeare()
        prepared = prepare_nanogpt(args.nanogpt, args.nanogpt_python, data_file, root)
    for rnd in range(args.rounds):
        for name in runs:
            workdir = root / f"{name}-{rnd}"
            shutil.rmtree(workdir, ignore_errors=True)  # never resume an earlier invocation's
            if name == "nanogpt":
                r = _nanogpt(prepared, args.nanogpt_python, workdir)
            else:
                r = _ours(name, workdir)
            runs[name].append(r)
            print(f"round {rnd + 1}: {name}: windows {r['windows_loss']:.4f}, whole text "
                  f"{r['carried_loss']:.4f}, {r['wall_s']:.1f} s", file=sys.stderr,
                  flush=True)  # fmt: skip
    results = json.loads(Path(args.merge).read_text()) if args.merge else {}
    for name, rs in runs.items():
        results[name] = {**rs[-1], "wall_s": statistics.median(r["wall_s"] for r in rs),
                         "wall_s_rounds": [r["wall_s"] for r in rs],
                         "windows_loss": statistics.median(r["windows_loss"] for r in rs),
                         "carried_loss": statistics.median(r["carried_loss"] for r in rs),
                         "windows_loss_rounds": [r["windows_loss"] for r in rs],
                         "carried_loss_rounds": [r["carried_loss"] for r in rs]}  # fmt: skip
    plot_shakespeare(results, Path(args.out).with_suffix(".png"))
    return results


def shakespeare_table(results: dict) -> str:
    """Both models, both protocols: the Markdown table the README quotes."""
    nano = results.get("nanogpt", {}).get("wall_s")
    lines = [
        "| run | windows of 64, fresh state | whole text (ours: state carried; nanoGPT: "
        "sliding window of 64) | its own estimate | wall s (whole command) | of nanoGPT's |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        label = "nanoGPT CPU recipe" if name == "nanogpt" else f"`:{name}`"
        share = f"{r['wall_s'] / nano:.2f}" if nano else "-"
        lines.append(f"| {label} | {r['windows_loss']:.3f} | {r['carried_loss']:.3f} | "
                     f"{r['own_loss']:.3f} | {r['wall_s']:.0f} | {share} |")  # fmt: skip
    return "\n".join(lines)


def plot_shakespeare(results: dict, path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        if name == "nanogpt":  # its own validation estimates (20 minibatches) as it trains
            xs, ys = np.array(r["val_curve"]).T
            (line,) = ax.plot(xs, ys, "k:", marker=".", lw=1,
                              label=f"nanoGPT CPU recipe: {r['windows_loss']:.3f}")  # fmt: skip
        else:
            xs, ys = np.array(r["train_curve"]).T
            (line,) = ax.plot(xs, ys, lw=1.2, label=f"{name}: {r['windows_loss']:.3f}")
        ax.plot([r["wall_s"]], [r["windows_loss"]], marker="o", color=line.get_color())
    ax.axhline(NANOGPT_CPU, color="k", ls="--", lw=1, label="nanoGPT's published 1.88")
    ax.set_xlabel("wall-clock seconds since the command started")
    ax.set_ylabel("loss (nats / char)")
    ax.set_title("tiny Shakespeare, 2 CPU cores; dots: validation loss on every window of 64 "
                 "characters, fresh state", fontsize=9)  # fmt: skip
    ax.set_ylim(1.2, 3.0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def generation(args) -> dict:
    import jax
    import numpy as np

    from rnnlm_jax import train
    from rnnlm_jax.infer.generation import greedy_ids
    from rnnlm_jax.nn.models import RNNModel

    out = {}
    prefix = jax.numpy.asarray(np.arange(14) % args.vocab, jax.numpy.int32)
    for cell in CLASSIC + LINEAR + MATRIX:
        for block in ("stack", "residual"):
            layers = 1 if block == "stack" else 2
            model = RNNModel(args.vocab, cell=cell, block=block, num_hiddens=args.hidden,
                             num_layers=layers, initializer="flax",
                             num_heads=4 if cell in MATRIX else 1)  # fmt: skip
            state = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, 1, 8)

            def sample(model=model, params=state.params):
                greedy_ids(model, params, prefix, args.num_preds).block_until_ready()

            sample()
            best = min(_timed(sample) for _ in range(5))
            out[f"{cell}/{block}"] = {"seconds": best, "chars_per_sec": args.num_preds / best}
            print(cell, block, f"{best * 1e3:.1f} ms", file=sys.stderr)
    return out


def scans(args) -> dict:
    """The scan alone, forward and backward, at `[T, B, H]` for each T: milliseconds (best of
    7) and the bytes XLA's cost analysis counts (for the sequential scan the arrays its loop
    reads and writes, the loop's body counted once)."""
    import jax

    from rnnlm_jax.nn.linear_scan import linear_scan

    out = {}
    for T in args.lengths:
        shape = (T, args.batch, args.hidden)
        inputs = (
            jax.random.uniform(jax.random.key(0), shape),
            jax.random.normal(jax.random.key(1), shape),
            jax.numpy.zeros(shape[1:]),
        )
        array = 4 * T * args.batch * args.hidden
        for scan in ("associative", "sequential", "chunked"):
            grad = jax.grad(lambda a, b, h0, s=scan: linear_scan(a, b, h0, s).sum(), (0, 1))
            compiled = jax.jit(grad).lower(*inputs).compile()
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost

            def run(compiled=compiled, inputs=inputs):
                jax.block_until_ready(compiled(*inputs))

            run()
            best = min(_timed(run) for _ in range(7))
            xla_bytes = float(cost.get("bytes accessed", 0))
            out[f"{scan}/{T}"] = {"ms": best * 1e3, "xla_bytes": xla_bytes, "array_bytes": array}
            print(f"T {T} {scan}: {best * 1e3:.1f} ms, XLA's bytes {xla_bytes:.3g} (one "
                  f"[T, B, H] array: {array:.3g})", file=sys.stderr)  # fmt: skip
    return out


def _recurrence_inputs(cell: str, B: int, N: int, T: int, K: int):
    """Random queries, keys, values, gates and a state for `chunkwise`'s function of `cell`,
    as the layer would give them: `(fn, args)` with `fn(*args, form, chunk) -> (o, S)`."""
    import jax
    import jax.numpy as jnp

    from rnnlm_jax.nn import chunkwise
    from rnnlm_jax.nn.matrix_cells import retention_log_decays

    ks = jax.random.split(jax.random.key(0), 6)
    q, k, v = (jax.random.normal(ks[i], (B, N, T, K)) for i in range(3))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    g = -jax.nn.softplus(jax.random.normal(ks[3], (B, N, T)) + 2.0)
    S = 0.1 * jax.random.normal(ks[4], (B, N, K, K))
    if cell in ("gla", "hgrn2"):  # HGRN2's key: 1 - its forget gate
        g = jnp.maximum(-jax.nn.softplus(jax.random.normal(ks[3], (B, N, T, K)) + 2.0), -4.0)
        k = -jnp.expm1(g) if cell == "hgrn2" else k
        return (lambda *a, f, c: chunkwise.linear_attention(*a, f, c)), (q * K**-0.5, k, v, g, S)
    if cell == "mamba2":
        return (lambda *a, f, c: chunkwise.linear_attention(*a, f, c)), (q, k, v, g, S)
    if cell == "retnet":
        g = jnp.broadcast_to(retention_log_decays(N)[:, None], (B, N, T))
        return (lambda *a, f, c: chunkwise.linear_attention(*a, f, c)), (q * K**-0.5, k, v, g, S)
    beta = jax.nn.sigmoid(jax.random.normal(ks[5], (B, N, T)))
    if cell in ("gated_deltanet", "deltanet"):
        g = g if cell == "gated_deltanet" else jnp.zeros_like(g)
        return (lambda *a, f, c: chunkwise.gated_delta(*a, f, c)), (q * K**-0.5, k, v, beta, g, S)
    if cell == "deltaproduct":  # two Householder updates per token
        k2 = jnp.stack([k, jnp.roll(k, 1, axis=2)], axis=3)
        v2 = jnp.stack([v, jnp.roll(v, 1, axis=2)], axis=3)
        beta2 = jnp.stack([beta, jnp.roll(beta, 1, axis=2)], axis=3)
        return (lambda *a, f, c: chunkwise.delta_product(*a, f, c)), (q * K**-0.5, k2, v2, beta2,
                                                                       g, S)  # fmt: skip
    log_i = jax.random.normal(ks[5], (B, N, T))
    state = (S, jnp.zeros((B, N, K)), jnp.zeros((B, N)))

    def fn(q, k, v, log_i, log_f, C, n, m, f, c):
        return chunkwise.mlstm(q, k, v, log_i, log_f, (C, n, m), f, c)

    return fn, (q, k * K**-0.5, v, log_i, jax.nn.log_sigmoid(-g), *state)


def matrix_child(cell: str, T: int, repeats: int, chunks: list[int], parallel_up_to=1024) -> dict:
    """Every form of `cell` at length T: see the module docstring (`matrix`)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rnnlm_jax.nn.matrix_cells import MatrixLayer, matrix_state

    B, N, K, H = 8, 4, 64, 256
    forms = [("recurrent", 0)] + [("chunkwise", c) for c in chunks if c < T]
    if T <= parallel_up_to:
        forms.append(("parallel", T))
    fn, args = _recurrence_inputs(cell, B, N, T, K)
    x = jax.random.normal(jax.random.key(1), (T, B, H))
    compiled = {}
    for form, chunk in forms:

        def loss(*a, form=form, chunk=chunk):
            out, final = fn(*a, f=form, c=max(chunk, 1))
            return jnp.sum(out**2) + sum(jnp.sum(s**2) for s in jax.tree.leaves(final))

        layer = MatrixLayer(cell, H, num_heads=N, form=form, chunk_size=max(chunk, 1),
                            num_householder=2)  # fmt: skip
        carry = matrix_state(cell, (B,), N, K, K, 2)
        params = layer.init(jax.random.key(2), carry, x[:8])

        def layer_loss(params, x, layer=layer, carry=carry):
            return jnp.sum(layer.apply(params, carry, x)[1] ** 2)

        argnums = tuple(range(len(args)))
        rec = jax.jit(jax.value_and_grad(loss, argnums)).lower(*args).compile()
        lay = jax.jit(jax.grad(layer_loss, (0, 1))).lower(params, x).compile()
        compiled[(form, chunk)] = (rec, lay, params)

    # The projections alone, which both forms pay: the input projection (every piece) and
    # the output one, forward and backward, at the layer's shapes.
    W_in, W_out = params["params"]["in_proj"], params["params"]["out"]

    def projections(W_in, W_out, x):
        p = x @ W_in
        return jnp.sum((p[..., : W_out.shape[0]] @ W_out) ** 2) + jnp.sum(p)

    proj = jax.jit(jax.grad(projections, (0, 1, 2))).lower(W_in, W_out, x).compile()
    times = {key: ([], []) for key in compiled}
    proj_times = []
    for _ in range(repeats):  # the forms alternated within each round
        for key, (rec, lay, params) in compiled.items():
            jax.block_until_ready(rec(*args))
            times[key][0].append(_timed(lambda rec=rec: jax.block_until_ready(rec(*args))))
            jax.block_until_ready(lay(params, x))
            times[key][1].append(
                _timed(lambda lay=lay, params=params: jax.block_until_ready(lay(params, x)))
            )
        jax.block_until_ready(proj(W_in, W_out, x))
        proj_times.append(_timed(lambda: jax.block_until_ready(proj(W_in, W_out, x))))
    proj_ms = 1e3 * statistics.median(proj_times)
    rows = []
    for (form, chunk), (rec, lay, _) in compiled.items():
        mem = rec.memory_analysis()
        layer_ms = 1e3 * statistics.median(times[(form, chunk)][1])
        rows.append({"form": form, "chunk": chunk,
                     "recurrence_ms": 1e3 * statistics.median(times[(form, chunk)][0]),
                     "layer_ms": layer_ms,
                     "layer_gflop": _flops(lay) / 1e9,
                     "layer_gflops": _flops(lay) / layer_ms / 1e6,
                     "outside_projections": 1.0 - proj_ms / layer_ms,
                     "recurrence_temp_bytes": int(getattr(mem, "temp_size_in_bytes", 0)),
                     "layer_temp_bytes": int(getattr(lay.memory_analysis(),
                                                     "temp_size_in_bytes", 0))})  # fmt: skip
    out = {"cell": cell, "T": T, "rows": rows, "projections_ms": proj_ms,
           "projections_gflop": _flops(proj) / 1e9}  # fmt: skip
    if T == 1024:  # the chunkwise form (the fastest chunk) against the recurrent one
        best = min((r for r in rows if r["form"] == "chunkwise"), key=lambda r: r["recurrence_ms"])
        ref_loss, ref = compiled[("recurrent", 0)][0](*args)
        got_loss, got = compiled[("chunkwise", best["chunk"])][0](*args)
        o_ref, S_ref = fn(*args, f="recurrent", c=1)
        o, S = fn(*args, f="chunkwise", c=best["chunk"])

        def rel(a, b):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

        out["check"] = {"chunk": best["chunk"], "outputs": rel(o, o_ref),
                        "final_state": max(rel(a, b) for a, b in zip(jax.tree.leaves(S),
                                                                     jax.tree.leaves(S_ref))),
                        "gradients": max(rel(a, b) for a, b in zip(got, ref))}  # fmt: skip
    return out


def matrix(args) -> dict:
    out = {"batch": 8, "heads": 4, "head_width": 64, "repeats": args.repeats, "cells": []}
    peaks = [_child(["peak", "0", "-", "0", "0", "0", "0"])["gflops"]]
    for T in args.lengths:
        for cell in [c for c in args.cells if c in MATRIX]:
            r = _json_of([sys.executable, __file__, "matrix-child", cell, str(T),
                          str(args.repeats), ",".join(map(str, args.chunks)),
                          str(args.parallel_up_to)])  # fmt: skip
            out["cells"].append(r)
            for row in r["rows"]:
                print(f"{cell} T={T} {row['form']} {row['chunk']}: recurrence "
                      f"{row['recurrence_ms']:.1f} ms, layer {row['layer_ms']:.1f} ms, XLA "
                      f"temp {row['recurrence_temp_bytes'] / 2**20:.0f} MiB", file=sys.stderr,
                      flush=True)  # fmt: skip
            if "check" in r:
                print(f"{cell} check: {r['check']}", file=sys.stderr, flush=True)
    peaks.append(_child(["peak", "0", "-", "0", "0", "0", "0"])["gflops"])
    out["matmul_peak_gflops"] = statistics.median(peaks)  # before and after: their median
    return out


def matrix_table(result: dict) -> str:
    """Every form; then, per cell and length, the fastest chunk's layer against the
    recurrent one and the bound the projections set on that ratio."""
    peak = result.get("matmul_peak_gflops")
    lines = ["| cell | T | form | chunk | recurrence fwd+bwd, ms | x recurrent | layer "
             "fwd+bwd, ms | x recurrent | layer GFLOP/s (of the matmul peak) | layer's time "
             "outside the projections | XLA temp of the recurrence's backward, MiB |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["cells"]:
        rec = next(x for x in r["rows"] if x["form"] == "recurrent")
        for x in r["rows"]:
            share = f" ({x['layer_gflops'] / peak:.0%})" if peak and "layer_gflops" in x else ""
            lines.append(
                f"| {r['cell']} | {r['T']} | {x['form']} | {x['chunk'] or '-'} | "
                f"{x['recurrence_ms']:.1f} | {rec['recurrence_ms'] / x['recurrence_ms']:.2f} | "
                f"{x['layer_ms']:.1f} | {rec['layer_ms'] / x['layer_ms']:.2f} | "
                f"{x.get('layer_gflops', 0):.0f}{share} | "
                f"{x.get('outside_projections', 0):.0%} | "
                f"{x['recurrence_temp_bytes'] / 2**20:.0f} |"
            )
    lines += ["", "| cell | T | layer: recurrent / fastest chunkwise (chunk), ms | x | the "
              "projections alone, ms | x if the chunk form's other work were free |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["cells"]:
        if "projections_ms" not in r:
            continue
        rec = next(x for x in r["rows"] if x["form"] == "recurrent")
        best = min((x for x in r["rows"] if x["form"] == "chunkwise"), key=lambda x: x["layer_ms"])
        lines.append(f"| {r['cell']} | {r['T']} | {rec['layer_ms']:.0f} / {best['layer_ms']:.0f} "
                     f"({best['chunk']}) | {rec['layer_ms'] / best['layer_ms']:.2f} | "
                     f"{r['projections_ms']:.0f} | "
                     f"{rec['layer_ms'] / r['projections_ms']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def memory_child(remat: str, cell: str, T: int) -> dict:
    """One training step of the Shakespeare-sized model; XLA's memory of the step."""
    import resource

    import jax

    from rnnlm_jax import train
    from rnnlm_jax.nn.models import RNNModel

    B, V = 8, 66
    model = RNNModel(V, cell=cell, block="residual", num_hiddens=256, num_layers=2,
                     mlp_expansion=2, num_heads=4, initializer="flax", remat=remat)  # fmt: skip
    state = train.create_train_state(model, jax.random.key(0), 1e-3, 1.0, B, T)
    X = jax.random.randint(jax.random.key(1), (B, T), 0, V)
    begin = model.begin_state(B)
    compiled = train.train_step.lower(state, begin, X, X).compile()
    mem = compiled.memory_analysis()
    state = jax.block_until_ready(compiled(state, begin, X, X))[0]  # the state is donated
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(state, begin, X, X))
    seconds = time.perf_counter() - t0
    peak = 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return {"remat": remat, "cell": cell, "T": T, "step_s": seconds,
            "xla_temp_bytes": int(getattr(mem, "temp_size_in_bytes", 0)),
            "peak_rss_bytes": peak}  # fmt: skip


def memory(args) -> dict:
    rows = []
    for cell in args.cells:
        for remat in ("none", "block", "chunk"):
            r = _json_of([sys.executable, __file__, "memory-child", remat, cell,
                          str(args.lengths[-1])])  # fmt: skip
            rows.append(r)
            print(f"{cell} remat={remat}: XLA temp {r['xla_temp_bytes'] / 2**30:.2f} GiB, peak "
                  f"RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB, step {r['step_s']:.1f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    return {"rows": rows}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "evaluate":
        print(json.dumps(evaluate_child(sys.argv[2])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "matrix-child":
        cell, T, repeats, chunks, parallel_up_to = sys.argv[2:]
        chunks = [int(c) for c in chunks.split(",")]
        print(json.dumps(matrix_child(cell, int(T), int(repeats), chunks, int(parallel_up_to))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "memory-child":
        remat, cell, T = sys.argv[2:]
        print(json.dumps(memory_child(remat, cell, int(T))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        cell, T, scan, B, H, V, repeats = sys.argv[2:]
        print(json.dumps(speed_child(cell, int(T), scan, int(B), int(H), int(V), int(repeats))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("speed", "shakespeare", "generation", "scans", "matrix",
                                    "memory"))  # fmt: skip
    p.add_argument("--chunks", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--cells", nargs="+", default=list(MATRIX) + ["mingru"])
    p.add_argument("--parallel_up_to", type=int, default=1024,
                   help="matrix: the longest T the parallel form is measured at")  # fmt: skip
    p.add_argument("--lengths", type=int, nargs="+", default=[35, 256, 1024])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=28)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variants", nargs="+",
                   default=["best", "lstm", "minlstm", "rglru", "lru", "long"])  # fmt: skip
    p.add_argument("--workdir", default="/tmp/rnnlm_jax_recurrences",
                   help="the runs' folders, cleared before each run")  # fmt: skip
    p.add_argument("--num_preds", type=int, default=1000)
    p.add_argument("--merge", default="", help="shakespeare: an earlier run's JSON, its "
                   "other variants kept (the ones run now replace theirs)")  # fmt: skip
    p.add_argument(
        "--nanogpt",
        default="",
        help="shakespeare: a nanoGPT checkout (karpathy/nanoGPT): its CPU recipe runs in "
        "the same rounds",
    )
    p.add_argument("--nanogpt_python", default=sys.executable,
                   help="the Python (with torch) that runs nanoGPT")  # fmt: skip
    p.add_argument("--out", default="recurrences")
    args = p.parse_args()
    jobs = {"speed": speed, "shakespeare": shakespeare, "generation": generation, "scans": scans,
            "matrix": matrix, "memory": memory}  # fmt: skip
    result = jobs[args.what](args)
    if args.what == "speed":
        print(speed_table(result))
    if args.what == "shakespeare":
        print(shakespeare_table(result))
    if args.what == "matrix":
        print(matrix_table(result))
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    os.sync()


if __name__ == "__main__":
    main()
