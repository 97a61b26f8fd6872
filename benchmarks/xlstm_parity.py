r"""Writes xlstm's own sLSTM values for `cell="slstm"`'s test (needs torch and a copy of
NX-AI/xlstm, not JAX; `tests/test_synthetic.py` reads the file with no torch).

    python benchmarks/xlstm_parity.py --xlstm=PATH/TO/xlstm   # -> tests/data/slstm_parity.npz

xlstm's vanilla sLSTM (`xlstm/blocks/slstm/src/vanilla`: `slstm_forward` with the `slstm`
pointwise function, loaded from the checkout given, not copied) runs in float64 from seed
0 on random input projections, recurrent weights and biases, for two cases: a zero initial
state and a random one (n > 0). The file holds the layer's inputs `x [T, B, D]`, its
weights `W [D, 4H]`, `R [N, 4d, d]` (xlstm's layout), `b [4H]` (gates i, f, z, o), the initial
state, xlstm's hidden states at every step, its final state `(h, c, n, m)`, and the gradients
of `sum(h_t * coef)` with respect to x, W, R and b. Written with torch 2.13.0 and xlstm
commit 032a6fb.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "slstm_parity.npz"
T, B, D, H, N = 7, 3, 5, 8, 2


def vanilla(checkout: str):
    """xlstm's `blocks/slstm/src/vanilla` package, loaded by path (its relative imports
    resolve inside it; the rest of xlstm is not imported)."""
    folder = Path(checkout) / "xlstm" / "blocks" / "slstm" / "src" / "vanilla"
    spec = importlib.util.spec_from_file_location(
        "xlstm_vanilla", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules["xlstm_vanilla"] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--xlstm", required=True, help="a copy of NX-AI/xlstm")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    import torch

    v = vanilla(args.xlstm)
    g = torch.Generator().manual_seed(0)
    d = H // N
    arrays = {}
    for case in ("zeros", "given"):
        x = torch.randn(T, B, D, generator=g, dtype=torch.float64, requires_grad=True)
        W = (0.5 * torch.randn(D, 4 * H, generator=g, dtype=torch.float64)).requires_grad_()
        R = (0.5 * torch.randn(N, 4 * d, d, generator=g, dtype=torch.float64)).requires_grad_()
        b = torch.randn(4 * H, generator=g, dtype=torch.float64, requires_grad=True)
        states = torch.zeros(4, B, H, dtype=torch.float64)
        if case == "given":  # h, c, n, m
            states = torch.randn(4, B, H, generator=g, dtype=torch.float64)
            states[2] = states[2].abs() + 0.5
        coef = torch.randn(T, B, H, generator=g, dtype=torch.float64)
        Wx = x @ W
        states_all, final, _ = v.slstm_forward(
            Wx, states, R, b, v.slstm_pointwise_function_registry["slstm"]
        )
        hs = states_all[0, 1:]  # [T, B, H]
        (hs * coef).sum().backward()
        for name, value in {"x": x, "W": W, "R": R, "b": b, "state0": states, "coef": coef,
                            "hs": hs, "final": final}.items():  # fmt: skip
            arrays[f"{case}/{name}"] = value.detach().numpy()
        for name, value in {"x": x, "W": W, "R": R, "b": b}.items():
            arrays[f"{case}/grad/{name}"] = value.grad.numpy()
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays)} arrays")


if __name__ == "__main__":
    main()
