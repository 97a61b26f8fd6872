r"""The book's concise PyTorch model (d2l 0.17, sections 8.6 and 9.1-9.3), the baseline that
`benchmarks/throughput.py --compare-torch` times against ours.

`nn.RNN` / `nn.GRU` / `nn.LSTM` (`--cell`, `--layers`) over one-hot characters, an
`nn.Linear` head, mean cross-entropy over the T*B targets, `clip_grad_norm_(..., 1)`, SGD
at `--lr`, one Python loop iteration per minibatch, the state carried from minibatch to
minibatch with its gradient cut (sequential partitioning), on the first 10,000 characters
of the book. The minibatches are this project's (`rnnlm_jax.data.epoch_batches`, the
book's partitioning), so both sides see the same data; PyTorch's default initializer.

    pip install torch==2.13.0   # in an environment of its own: torch is no dependency
    python benchmarks/torch_book_rnn.py --epochs 20 --threads 2 [--cell lstm --layers 2]

The last line is `tokens_per_sec=<float> perplexity=<float>`: tokens/sec over the epochs
after `--warmup`, the perplexity of the last epoch.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package

from rnnlm_jax import data  # noqa: E402  (numpy only: no JAX is imported)
from rnnlm_jax.data import sources


class BookModel(nn.Module):
    """d2l's `RNNModel`: the recurrent layer on one-hot inputs, a Linear head."""

    def __init__(self, cell: str, vocab_size: int, hidden: int, layers: int):
        super().__init__()
        layer = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = layer(vocab_size, hidden, num_layers=layers)
        self.head = nn.Linear(hidden, vocab_size)
        self.vocab_size = vocab_size

    def forward(self, tokens, state):
        x = nn.functional.one_hot(tokens.T, self.vocab_size).float()  # [T, B, V]
        y, state = self.rnn(x, state)
        return self.head(y.reshape(-1, y.shape[-1])), state  # [T * B, V]


def begin_state(cell: str, layers: int, batch: int, hidden: int):
    h = torch.zeros(layers, batch, hidden)
    return (h, torch.zeros_like(h)) if cell == "lstm" else h


def detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    p.add_argument("--cell", choices=("rnn", "gru", "lstm"), default="rnn")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=35)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--warmup", type=int, default=2, help="epochs left out of tokens/sec")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    text = sources.packaged_time_machine().read_text(encoding="utf-8")
    corpus, vocab = data.load_corpus(text, "char", 10000)
    model = BookModel(args.cell, len(vocab), args.hidden, args.layers)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    tokens, seconds, perplexity = 0, 0.0, math.nan
    for epoch in range(args.epochs):
        X_all, Y_all = data.epoch_batches(corpus, args.batch, args.steps, "sequential",
                                          args.seed, epoch)  # fmt: skip
        X_all, Y_all = torch.from_numpy(X_all).long(), torch.from_numpy(Y_all).long()
        state = begin_state(args.cell, args.layers, args.batch, args.hidden)
        start, loss_sum = time.perf_counter(), 0.0
        for X, Y in zip(X_all, Y_all):
            state = detach(state)
            logits, state = model(X, state)
            loss = loss_fn(logits, Y.T.reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss_sum += float(loss) * Y.numel()
        elapsed = time.perf_counter() - start
        perplexity = math.exp(loss_sum / Y_all.numel())
        if epoch >= args.warmup:
            tokens, seconds = tokens + Y_all.numel(), seconds + elapsed
    rate = tokens / seconds if seconds else math.nan
    print(f"# torch {torch.__version__} threads={torch.get_num_threads()} cell={args.cell} "
          f"layers={args.layers} hidden={args.hidden} epochs={args.epochs}")  # fmt: skip
    print(f"tokens_per_sec={rate:.1f} perplexity={perplexity:.4f}")


if __name__ == "__main__":
    main()
