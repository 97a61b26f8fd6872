r"""Writes the field's own values for every matrix-state recurrence, for the tests to compare
each form against (needs torch, `fla-core` from the package index and copies of NX-AI/xlstm
and state-spaces/mamba, not JAX; `tests/test_matrix_parity.py` reads the file with no torch).

    pip install torch fla-core
    python benchmarks/matrix_parity.py --xlstm=PATH/TO/xlstm --mamba=PATH/TO/mamba

The references, loaded by path, not copied (the `fla.ops` package itself imports triton,
which a CPU lacks; these files import only torch and einops):
  gla, hgrn2      fla/ops/gla/naive.py                naive_recurrent_gla (HGRN2: its key
                                                      1 - the forget gate, as fla's layer)
  mamba2          fla/ops/simple_gla/naive.py         naive_recurrent_simple_gla (scale 1:
                                                      Mamba-2's SSD with one decay per head),
                  and mamba_ssm/modules/ssd_minimal.py  ssd_minimal_discrete, the paper's
                                                      Listing 1, on the same inputs (its unused
                                                      import of the triton kernel answered by
                                                      an empty module)
  gated_deltanet  fla/ops/gated_delta_rule/naive.py   naive_recurrent_gated_delta_rule
  deltanet        fla/ops/delta_rule/naive.py         delta_rule_recurrence
  deltaproduct    fla/ops/gated_delta_product/naive.py  naive_recurrent_gated_delta_product
                                                      (2 Householder updates per token)
  retnet          fla/ops/retention/naive.py          naive_retention (from a zero state; its
                  and simple_gla's naive_recurrent_simple_gla with RetNet's decays, for the
                  final state and a carried one)
  rwkv7           fla/ops/generalized_delta_rule/dplr/naive.py  dplr_recurrence (alpha = -kk,
                                                      beta = kk a, RWKV-7's decays)
  mlstm           xlstm/blocks/mlstm/backends.py      recurrent_step_stabilized_simple, step by
                                                      step from a given (C, n, m), and
                                                      parallel_stabilized_simple from zeros
Each runs from seed 0 in float64 (fla's naive functions cast with `.float()` and
`torch.float32`; the script runs the same code with those meaning float64; the tests
compare our float32 and float64 with it). For each cell the file holds the inputs in our
layout (`[B, N, T, ...]`, the gates as the recurrence takes them), the initial state, the
outputs, the final state, and the gradients of `sum(o * coef(o)) + sum(S_T * coef(S_T))`
(`coef`: `sin(1 + index)` over the array's entries) with respect to every input (q, k, v,
each gate, the initial state), at T 45 (chunks of 8 and 16 leave a padded last one).
Written with torch 2.13.0, fla-core 0.6.0, xlstm commit 032a6fb and mamba commit e9594ce.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "matrix_parity.npz"
B, N, T, K, V = 1, 2, 45, 6, 5
HOUSEHOLDER = 2


def load(path: Path, name: str):
    """The module at `path`, its `torch.float32` and `torch.float` meaning float64 (a proxy
    of torch in its namespace)."""
    import torch

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    proxy = types.ModuleType("torch64")
    proxy.__getattr__ = lambda attr: getattr(torch, attr)
    proxy.float32 = proxy.float = torch.float64
    module.torch = proxy
    return module


@contextlib.contextmanager
def float_means(dtype):
    """`Tensor.float()` casts to `dtype` inside."""
    import torch

    original = torch.Tensor.float
    torch.Tensor.float = lambda self, *a, **k: self.to(dtype)
    try:
        yield
    finally:
        torch.Tensor.float = original


def fla_file(relative: str) -> Path:
    spec = importlib.util.find_spec("fla")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: fla-core is not installed (pip install fla-core)")
    return Path(list(spec.submodule_search_locations)[0]) / relative


def cases(torch, g, xlstm: Path):
    """Each cell: `(inputs {name: tensor [B, N, T, ...]}, run(inputs) -> (o, S_T))`."""
    mods = {name: load(fla_file(f"ops/{name}/naive.py"), f"fla_{name.replace('/', '_')}")
            for name in ("gla", "simple_gla", "gated_delta_rule", "delta_rule",
                         "gated_delta_product", "retention",
                         "generalized_delta_rule/dplr")}  # fmt: skip
    backends = load(xlstm / "xlstm" / "blocks" / "mlstm" / "backends.py", "xlstm_mlstm")

    def randn(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=torch.float64)

    def unit(x):
        return x / x.norm(dim=-1, keepdim=True)

    def logsigmoid(x):
        return torch.nn.functional.logsigmoid(x)

    bt = lambda x: x.transpose(1, 2)  # noqa: E731  [B, N, T, ...] <-> [B, T, N, ...]
    retention = torch.log1p(-(2.0 ** (-5.0 - torch.arange(N, dtype=torch.float64))))
    out = {}
    base = lambda: {"q": randn(B, N, T, K), "k": randn(B, N, T, K), "v": randn(B, N, T, V),  # noqa: E731
                    "S0": randn(B, N, K, V, scale=0.5)}  # fmt: skip

    x = base() | {"g": logsigmoid(randn(B, N, T, K, scale=2.0)).clamp(min=-4.0)}
    out["gla"] = (
        x,
        lambda a: mods["gla"].naive_recurrent_gla(
            bt(a["q"]), bt(a["k"]), bt(a["v"]), bt(a["g"]), a["S0"], output_final_state=True
        ),
    )

    # RWKV-7: fla's generalised delta rule (DPLR), alpha = -kk, beta = kk a
    kk = unit(randn(B, N, T, K))
    x = base() | {"alpha": -kk, "beta": kk * torch.sigmoid(randn(B, N, T, K)),
                  "g": -0.6065 * torch.sigmoid(randn(B, N, T, K))}  # fmt: skip
    out["rwkv7"] = (
        x,
        lambda a: mods["generalized_delta_rule/dplr"].dplr_recurrence(
            a["q"], a["k"], a["v"], a["alpha"], a["beta"], a["g"], a["S0"], True
        ),
    )

    # HGRN2: GLA whose key is 1 - its forget gate (fla's HGRN2 layer calls GLA so)
    x = base() | {"g": logsigmoid(randn(B, N, T, K, scale=2.0)).clamp(min=-4.0)}
    x["k"] = -torch.expm1(x["g"])
    out["hgrn2"] = (
        x,
        lambda a: mods["gla"].naive_recurrent_gla(
            bt(a["q"]), bt(a["k"]), bt(a["v"]), bt(a["g"]), a["S0"], output_final_state=True
        ),
    )

    x = base() | {"g": logsigmoid(randn(B, N, T))}
    out["mamba2"] = (
        x,
        lambda a: mods["simple_gla"].naive_recurrent_simple_gla(
            bt(a["q"]), bt(a["k"]), bt(a["v"]), bt(a["g"]), 1.0, a["S0"], True
        ),
    )

    x = base() | {"beta": torch.sigmoid(randn(B, N, T)), "g": logsigmoid(randn(B, N, T) + 2)}
    x["k"] = unit(x["k"])
    out["gated_deltanet"] = (
        x,
        lambda a: mods["gated_delta_rule"].naive_recurrent_gated_delta_rule(
            bt(a["q"]), bt(a["k"]), bt(a["v"]), bt(a["beta"]), bt(a["g"]), K**-0.5, a["S0"], True
        ),
    )

    x = base() | {"beta": torch.sigmoid(randn(B, N, T))}
    x["k"] = unit(x["k"])
    out["deltanet"] = (
        x,
        lambda a: mods["delta_rule"].delta_rule_recurrence(
            a["q"], a["k"], a["v"], a["beta"], a["S0"], True
        ),
    )

    n = HOUSEHOLDER
    x = base() | {"k": unit(randn(B, N, T, n, K)), "v": randn(B, N, T, n, V),
                  "beta": torch.sigmoid(randn(B, N, T, n)),
                  "g": logsigmoid(randn(B, N, T) + 2)}  # fmt: skip
    interleaved = lambda a: a.reshape((B, N, T * n) + a.shape[4:]).transpose(1, 2)  # noqa: E731
    product = mods["gated_delta_product"].naive_recurrent_gated_delta_product
    out["deltaproduct"] = (
        x,
        lambda a: product(
            bt(a["q"]),
            interleaved(a["k"]),
            interleaved(a["v"]),
            bt(a["g"]),
            interleaved(a["beta"]),
            K**-0.5,
            initial_state=a["S0"],
            output_final_state=True,
            num_householder=n,
        ),
    )

    x = base() | {"g": retention[:, None].expand(B, N, T).clone()}
    out["retnet"] = (
        x,
        lambda a: mods["simple_gla"].naive_recurrent_simple_gla(
            bt(a["q"]), bt(a["k"]), bt(a["v"]), bt(a["g"]), K**-0.5, a["S0"], True
        ),
    )

    # xLSTM's mLSTM: K = V = DH; the state (C, n, m) given; the gates' pre-activations.
    x = {"q": randn(B, N, T, K), "k": randn(B, N, T, K), "v": randn(B, N, T, K),
         "igate": randn(B, N, T, scale=2.0), "fgate": randn(B, N, T) + 3.0,
         "S0": randn(B, N, K, K, scale=0.5), "n0": randn(B, N, K, scale=0.3).abs() + 0.1,
         "m0": randn(B, N, scale=0.5)}  # fmt: skip

    def mlstm(a):
        C, nn_, m = a["S0"], a["n0"][..., None], a["m0"][..., None, None]
        hs = []
        for t in range(T):
            q, k, v = (a[n][:, :, t : t + 1].clone() for n in ("q", "k", "v"))
            h, (C, nn_, m) = backends.recurrent_step_stabilized_simple(
                C, nn_, m, q, k, v,
                a["igate"][:, :, t, None, None], a["fgate"][:, :, t, None, None])  # fmt: skip
            hs.append(h[:, :, 0])
        return torch.stack(hs, 2), (C, nn_[..., 0], m[..., 0, 0])

    out["mlstm"] = (x, mlstm)
    return out, mods["retention"], backends


def ssd_minimal(mamba: Path, inputs: dict, coef) -> dict:
    """`mamba2/ssd_minimal/...`: mamba's `ssd_minimal_discrete` (X = v, A = the log decays,
    B = k, C = q; chunks of 15) from the same initial state, its output, final state (in our
    `[K, V]` layout) and gradients."""
    for name in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton"):
        sys.modules.setdefault(name, types.ModuleType(name))
    kernel = types.ModuleType("mamba_ssm.ops.triton.ssd_combined")
    kernel.mamba_chunk_scan_combined = None  # imported there, not used by the minimal SSD
    sys.modules["mamba_ssm.ops.triton.ssd_combined"] = kernel
    module = load(mamba / "mamba_ssm" / "modules" / "ssd_minimal.py", "mamba_ssd_minimal")
    a = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    bt = lambda x: x.transpose(1, 2)  # noqa: E731  [B, N, T, ...] -> [B, T, N, ...]
    Y, final = module.ssd_minimal_discrete(bt(a["v"]), bt(a["g"]), bt(a["k"]), bt(a["q"]), 15,
                                           a["S0"].transpose(-1, -2)[:, None])  # fmt: skip
    o, S = bt(Y), final.transpose(-1, -2)
    ((o * coef(o)).sum() + (S * coef(S)).sum()).backward()
    out = {"mamba2/ssd_minimal/o": o, "mamba2/ssd_minimal/S0": S}
    out |= {f"mamba2/ssd_minimal/grad/{k}": v.grad for k, v in a.items()}
    return {k: v.detach().numpy() for k, v in out.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--xlstm", required=True, help="a copy of NX-AI/xlstm")
    parser.add_argument("--mamba", required=True, help="a copy of state-spaces/mamba")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    import torch

    arrays = {}
    g = torch.Generator().manual_seed(0)
    with float_means(torch.float64):
        all_cases, retention, backends = cases(torch, g, Path(args.xlstm))
        for cell, (inputs, run) in all_cases.items():
            inputs = {k: v.requires_grad_() for k, v in inputs.items()}
            o, S = run(inputs)
            if cell not in ("deltanet", "rwkv7", "mlstm"):  # [B, T, N, V]; these [B, N, T, V]
                o = o.transpose(1, 2)
            states = S if isinstance(S, tuple) else (S,)
            coef = lambda a: torch.sin(1.0 + torch.arange(a.numel(), dtype=a.dtype)).reshape(  # noqa: E731
                a.shape)  # fmt: skip
            ((o * coef(o)).sum() + (states[0] * coef(states[0])).sum()).backward()
            record = {"o": o} | {f"S{i}": s for i, s in enumerate(states)}
            record |= {f"in/{k}": v for k, v in inputs.items()}
            record |= {f"grad/{k}": v.grad for k, v in inputs.items()}
            for name, value in record.items():
                arrays[f"{cell}/{name}"] = value.detach().numpy()
            if cell == "retnet":  # retention's own function, from a zero state
                q, k, v = (inputs[n].detach() for n in ("q", "k", "v"))
                arrays["retnet/naive_retention"] = retention.naive_retention(q, k, v).numpy()
            if cell == "mamba2":  # mamba's own SSD (Listing 1) on the same inputs
                arrays |= ssd_minimal(Path(args.mamba), inputs, coef)
            if cell == "mlstm":  # the parallel form from zeros
                q, k, v, i, f = (inputs[n].detach() for n in ("q", "k", "v", "igate", "fgate"))
                arrays["mlstm/parallel_from_zeros"] = backends.parallel_stabilized_simple(
                    q, k, v, i[..., None], f[..., None]).numpy()  # fmt: skip
    np.savez_compressed(args.out, **arrays)
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out}: {len(arrays)} arrays, {size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
