r"""Scores nanoGPT's saved checkpoint on its validation split by both evaluation protocols of
`benchmarks/recurrences.py shakespeare` (needs torch; run with the Python that ran nanoGPT).

    python benchmarks/nanogpt_eval.py --checkout=NANOGPT_DIR --out_dir=out-shakespeare-char

The checkpoint (`<out_dir>/ckpt.pt`, the one nanoGPT's `train.py` saved) is loaded with the
checkout's own `model.py` (`GPT`, `GPTConfig`); the validation tokens are the checkout's
`data/shakespeare_char/val.bin`. Prints one JSON line:
  `windows_loss`: every non-overlapping window of `block` characters
    (`x = val[i : i + block]`, `y = val[i + 1 : i + block + 1]`, i = 0, block, ...), the mean
    loss over all their targets: `estimate_loss`'s measurement, over the whole split instead
    of 20 random batches (target j sees 1 to `block` characters);
  `sliding_loss`: every target of the split but the first, each given the `block - stride + 1`
    to `block` characters before it (fewer at the start): windows of `block` slid by
    `stride`, scoring the last `stride` targets of each (all of the first window's);
  `iter_num`, `best_val_loss`: what the checkpoint says of itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def load(checkout: Path, ckpt_path: Path):
    sys.path.insert(0, str(checkout))
    from model import GPT, GPTConfig  # the checkout's own model

    ckpt = torch.load(ckpt_path, map_location="cpu")
    model = GPT(GPTConfig(**ckpt["model_args"]))
    prefix = "_orig_mod."  # a torch.compile'd model's names
    weights = {k.removeprefix(prefix): v for k, v in ckpt["model"].items()}
    model.load_state_dict(weights)
    model.eval()
    return model, ckpt


@torch.inference_mode()
def target_losses(model, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Per-target losses `[N, T]` of windows `x`, `y` `[N, T]`."""
    out = []
    for i in range(0, len(x), batch):
        logits, _ = model(x[i : i + batch], y[i : i + batch])  # with targets: every position
        out.append(F.cross_entropy(logits.transpose(1, 2).float(), y[i : i + batch],
                                   reduction="none"))  # fmt: skip
    return torch.cat(out)


def windows_loss(model, val: np.ndarray, block: int) -> tuple[float, int]:
    n = (len(val) - 1) // block
    x = torch.from_numpy(val[: n * block].reshape(n, block).astype(np.int64))
    y = torch.from_numpy(val[1 : n * block + 1].reshape(n, block).astype(np.int64))
    losses = target_losses(model, x, y)
    return float(losses.double().mean()), losses.numel()


def sliding_loss(model, val: np.ndarray, block: int, stride: int) -> tuple[float, int]:
    starts = list(range(0, len(val) - block, stride))
    x = torch.from_numpy(np.stack([val[s : s + block] for s in starts]).astype(np.int64))
    y = torch.from_numpy(np.stack([val[s + 1 : s + block + 1] for s in starts]).astype(np.int64))
    losses = target_losses(model, x, y)
    total, count = float(losses[0].double().sum()), block  # the first window: every target
    covered = block  # targets val[1 : covered + 1] are scored
    for row, s in zip(losses[1:], starts[1:]):
        new = s + block - covered  # the targets this window adds at its end
        total += float(row[block - new :].double().sum())
        count += new
        covered = s + block
    tail = len(val) - 1 - covered  # targets after the last whole window: one more window
    if tail > 0:
        s = len(val) - 1 - block
        xt = torch.from_numpy(val[s : s + block].astype(np.int64))[None]
        yt = torch.from_numpy(val[s + 1 : s + block + 1].astype(np.int64))[None]
        total += float(target_losses(model, xt, yt)[0, block - tail :].double().sum())
        count += tail
    assert count == len(val) - 1, (count, len(val))
    return total / count, count


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkout", required=True, help="the nanoGPT checkout that trained it")
    p.add_argument("--out_dir", default="out-shakespeare-char", help="relative to --checkout")
    p.add_argument("--stride", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(2)
    checkout = Path(args.checkout).resolve()
    model, ckpt = load(checkout, checkout / args.out_dir / "ckpt.pt")
    block = ckpt["model_args"]["block_size"]
    val = np.fromfile(checkout / "data" / "shakespeare_char" / "val.bin", dtype=np.uint16)
    w, wn = windows_loss(model, val, block)
    s, sn = sliding_loss(model, val, block, args.stride)
    print(json.dumps({"windows_loss": w, "windows_targets": wn, "sliding_loss": s,
                      "sliding_targets": sn, "block": block, "stride": args.stride,
                      "iter_num": ckpt["iter_num"],
                      "best_val_loss": float(ckpt["best_val_loss"])}))  # fmt: skip


if __name__ == "__main__":
    main()
