r"""Writes nanoGPT's own logits for `configs/shakespeare.py:gpt`'s model (needs torch and a
copy of nanoGPT, not JAX): the test `tests/test_attention.py` loads its weights into ours.

    python benchmarks/nanogpt_parity.py --nanogpt=PATH/TO/nanoGPT
    # -> tests/data/nanogpt_parity.npz

nanoGPT's `model.py` (karpathy/nanoGPT, imported from the path given, not copied) builds a
GPT as its CPU recipe's (`bias=False`, `dropout=0`; LayerNorm, causal attention, MLP of
width 4C with exact GELU, learned positions, the head tied to the token embedding) at a
small size, in float64 from seed 0; the file holds its `state_dict`, token ids `[B, T]`, the
logits `[B, T, V]` it computes and its loss, under 250 KB. Written with torch 2.13.0 and
nanoGPT commit 3adf61e (model.py as of that commit).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "nanogpt_parity.npz"
SIZE = {"n_layer": 2, "n_head": 4, "n_embd": 32, "block_size": 16, "vocab_size": 65}
B, T = 3, 16


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nanogpt", required=True, help="a copy of karpathy/nanoGPT")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    import torch

    sys.path.insert(0, args.nanogpt)
    from model import GPT, GPTConfig  # nanoGPT's own

    torch.manual_seed(0)
    model = GPT(GPTConfig(**SIZE, dropout=0.0, bias=False)).double().eval()
    idx = torch.randint(0, SIZE["vocab_size"], (B, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, loss = model(idx, targets=idx.roll(-1, dims=1))  # targets: logits at every step
    arrays = {f"param/{k}": v.numpy() for k, v in model.state_dict().items()}
    arrays |= {"idx": idx.numpy(), "logits": logits.numpy(), "loss": np.array(loss.item())}
    arrays |= {f"size/{k}": np.array(v) for k, v in SIZE.items()}
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays)} arrays, logits {tuple(logits.shape)}, loss "
          f"{loss.item():.6f}")  # fmt: skip


if __name__ == "__main__":
    main()
