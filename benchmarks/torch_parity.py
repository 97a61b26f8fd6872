r"""Writes PyTorch's reference values for `RNNLayer`'s parity test (needs torch, not JAX).

    python benchmarks/torch_parity.py                      # -> tests/data/torch_parity.npz
    python benchmarks/torch_parity.py --out=/tmp/x.npz     # elsewhere (the test's drift check)

For every combination of cell (`rnn`, `gru`, `lstm`), layers (1, 2), directions (one,
both), layout (time-major, `batch_first`), initial state (none, given) and lengths (full,
packed with `pack_padded_sequence`), in float64 on the CPU: PyTorch's weights (its default
initialisation, seeded per case), the padded inputs, the outputs (`pad_packed_sequence`d,
zeros past each length), the final states, and the gradients of a fixed scalar loss,
`sum(out * c_out) + sum(h_n * c_h) [+ sum(c_n * c_c)]` with coefficients stored beside
them, with respect to the inputs, the initial state and every parameter.

Keys are `<case>/<name>`, e.g. `lstm-L2-bi-batch_first-h0-packed/weight_ih_l1_reverse` and
`.../grad/weight_ih_l1_reverse`, stored packed (`pack`: one float64 vector per case and a JSON
index; `unpack` reads them back). The file is under 1 MB.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
from pathlib import Path

import numpy as np

try:  # the test reads the file with `unpack` and no torch
    import torch
except ImportError:
    torch = None

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "torch_parity.npz"
T, B, D, H = 4, 3, 2, 3  # steps, batch, input width, hidden width
LENGTHS = [4, 2, 3]  # the packed cases' lengths (unsorted: enforce_sorted=False)


def case_name(cell, layers, bidirectional, batch_first, h0, packed) -> str:
    return "-".join([
        cell, f"L{layers}", "bi" if bidirectional else "uni",
        "batch_first" if batch_first else "time_major",
        "h0" if h0 else "zeros", "packed" if packed else "full",
    ])  # fmt: skip


def coefficients(shape, offset: float) -> torch.Tensor:
    """A fixed, dense pattern of weights for the scalar loss."""
    n = int(np.prod(shape))
    return torch.cos(offset + 0.7 * torch.arange(n, dtype=torch.float64)).reshape(shape)


def one_case(cell, layers, bidirectional, batch_first, h0, packed, seed) -> dict:
    torch.manual_seed(seed)
    module = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
    rnn = module(D, H, num_layers=layers, bidirectional=bidirectional,
                 batch_first=batch_first).double()  # fmt: skip
    K = 2 if bidirectional else 1
    x = torch.randn((B, T, D) if batch_first else (T, B, D), dtype=torch.float64)
    lengths = torch.tensor(LENGTHS if packed else [T] * B)
    if packed:  # what lies past a sequence's end must not matter: zeros, as padding is
        mask = torch.arange(T)[:, None] < lengths[None]  # [T, B]
        x = x * (mask.T if batch_first else mask)[..., None]
    x.requires_grad_(True)
    state = None
    if h0:
        hx = torch.randn(layers * K, B, H, dtype=torch.float64, requires_grad=True)
        if cell == "lstm":
            cx = torch.randn(layers * K, B, H, dtype=torch.float64, requires_grad=True)
            state = (hx, cx)
        else:
            state = hx
    if packed:
        inputs = torch.nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=batch_first, enforce_sorted=False
        )
        out, final = rnn(inputs, state)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first,
                                                        total_length=T)  # fmt: skip
    else:
        out, final = rnn(x, state)
    h_n, c_n = final if cell == "lstm" else (final, None)
    c_out, c_h = coefficients(out.shape, 0.3), coefficients(h_n.shape, 1.1)
    loss = (out * c_out).sum() + (h_n * c_h).sum()
    result = {"x": x, "lengths": lengths, "out": out, "h_n": h_n, "c_out": c_out, "c_h": c_h}
    if c_n is not None:
        c_c = coefficients(c_n.shape, 2.3)
        loss = loss + (c_n * c_c).sum()
        result.update(c_n=c_n, c_c=c_c)
    params = dict(rnn.named_parameters())
    wrt = {"x": x, **params}
    if h0:
        wrt["h0"] = state[0] if cell == "lstm" else state
        if cell == "lstm":
            wrt["c0"] = state[1]
            result["c0"] = state[1]
        result["h0"] = wrt["h0"]
    grads = torch.autograd.grad(loss, list(wrt.values()))
    result.update(params)
    result.update({f"grad/{k}": g for k, g in zip(wrt, grads)})
    return {k: v.detach().numpy() for k, v in result.items()}


def reference_arrays() -> dict[str, np.ndarray]:
    """Every case's arrays, keyed `<case>/<name>`."""
    torch.set_num_threads(1)
    arrays = {}
    combos = itertools.product(("rnn", "gru", "lstm"), (1, 2), (False, True), (False, True),
                               (False, True), (False, True))  # fmt: skip
    for seed, combo in enumerate(combos):
        name = case_name(*combo)
        for key, value in one_case(*combo, seed=seed).items():
            arrays[f"{name}/{key}"] = value
    return arrays


def pack(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays as one float64 vector per case and an `index` (JSON: each key's case,
    offset and shape), so the file holds a few entries, not thousands."""
    cases, index = {}, {}
    for key, value in arrays.items():
        case = key.split("/", 1)[0]
        parts = cases.setdefault(case, [])
        offset = sum(p.size for p in parts)
        parts.append(np.asarray(value, np.float64).ravel())
        index[key] = [offset, list(value.shape)]
    packed = {case: np.concatenate(parts) for case, parts in cases.items()}
    packed["index"] = np.array(json.dumps(index, sort_keys=True))
    return packed


def unpack(packed) -> dict[str, np.ndarray]:
    """`pack`'s inverse (lengths come back as float64 integers)."""
    index = json.loads(str(packed["index"]))
    out = {}
    for key, (offset, shape) in index.items():
        flat = packed[key.split("/", 1)[0]]
        out[key] = flat[offset : offset + int(np.prod(shape))].reshape(shape)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    buf = io.BytesIO()
    np.savez_compressed(buf, **pack(reference_arrays()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    print(f"wrote {out} ({len(buf.getvalue()):,} bytes), torch {torch.__version__}")


if __name__ == "__main__":
    main()
