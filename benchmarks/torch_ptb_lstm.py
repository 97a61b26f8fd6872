r"""Zaremba et al. (2014)'s Penn Treebank LSTM in PyTorch, the baseline that
`benchmarks/ptb.py --compare-torch` times against ours.

The recipe of `configs/ptb.py` (the TensorFlow tutorial `ptb_word_lm.py`'s small, medium
and large configs): embedding H -> dropout -> L-layer `nn.LSTM` (dropout between layers)
-> dropout -> `nn.Linear` H -> 10,000, every parameter U(-init, init); cross-entropy summed
over the T steps and averaged over the batch; clipping at the recipe's norm; SGD with
`lr * decay ** max(epoch + 1 - decay_after, 0)`; the state carried (detached) through each
epoch from token 0. The words, vocab and minibatches are this project's
(`rnnlm_jax.data.corpora.load_ptb`, `rnnlm_jax.data.epoch_batches`), so both sides see
the same data.

    pip install torch==2.13.0   # in an environment of its own: torch is no dependency
    python benchmarks/torch_ptb_lstm.py --config small --epochs 1 --max-train-words 100000

The last line is `tokens_per_sec=<float> valid_perplexity=<float> test_perplexity=<float>`
(training tokens over training time, evaluation excluded; `--no-test` skips the test pass,
which runs with batch 1 and T 1 as the tutorial's).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package and configs

from configs.ptb import RECIPES  # noqa: E402
from rnnlm_jax import data  # noqa: E402  (numpy only: no JAX is imported)
from rnnlm_jax.data import corpora  # noqa: E402


class PTBModel(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int, init: float, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab)
        for p in self.parameters():
            nn.init.uniform_(p, -init, init)

    def forward(self, tokens, state):  # tokens [B, T] -> logits [T, B, V]
        y, state = self.lstm(self.drop(self.embed(tokens.T)), state)
        return self.head(self.drop(y)), state


def run_epoch(model, ids, batch, steps, opt=None, clip=0.0):
    """One pass over `ids` (trains if `opt`); returns (perplexity, tokens, seconds)."""
    X_all, Y_all = data.epoch_batches(ids, batch, steps, "sequential", 0, 0, random_offset=False)
    X_all, Y_all = torch.from_numpy(X_all).long(), torch.from_numpy(Y_all).long()
    layers, hidden = model.lstm.num_layers, model.lstm.hidden_size
    state = (torch.zeros(layers, batch, hidden), torch.zeros(layers, batch, hidden))
    model.train(opt is not None)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, start = 0.0, time.perf_counter()
    with torch.set_grad_enabled(opt is not None):
        for X, Y in zip(X_all, Y_all):
            state = tuple(s.detach() for s in state)
            logits, state = model(X, state)
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), Y.T.reshape(-1))
            total += float(loss)
            if opt is not None:
                opt.zero_grad()
                (loss / batch).backward()  # summed over T, averaged over the batch
                nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
    return math.exp(total / Y_all.numel()), Y_all.numel(), time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(RECIPES), default="small")
    p.add_argument("--epochs", type=int, default=0, help="0: the recipe's")
    p.add_argument("--max-train-words", type=int, default=0, help="0: all 929,589")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="", help="holds ptb/ ('': $RNNLM_JAX_DATA_DIR ...)")
    p.add_argument("--no-test", action="store_true", help="skip the batch-1 test pass")
    p.add_argument("--sha1s-unchecked", action="store_true", help="files of PTB's format")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    hidden, layers, steps, init, clip, epochs, decay_after, decay, keep, batch = RECIPES[
        args.config
    ]
    epochs = args.epochs or epochs
    sha1s = {} if args.sha1s_unchecked else None
    ptb = corpora.load_ptb(args.data_dir, args.max_train_words, sha1s=sha1s)
    model = PTBModel(len(ptb.vocab), hidden, layers, init, 1.0 - keep)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    rates, valid = [], math.nan
    for epoch in range(epochs):
        opt.param_groups[0]["lr"] = decay ** max(epoch + 1 - decay_after, 0)
        train, tokens, seconds = run_epoch(model, ptb.train, batch, steps, opt, clip)
        rates.append(tokens / seconds)
        valid = run_epoch(model, ptb.valid, batch, steps)[0]
        print(f"epoch {epoch + 1} train {train:.2f} valid {valid:.2f} {rates[-1]:,.0f} tok/s")
    test = math.nan if args.no_test else run_epoch(model, ptb.test, 1, 1)[0]
    print(f"# torch {torch.__version__} threads={torch.get_num_threads()} config={args.config}")
    print(
        f"tokens_per_sec={float(np.median(rates)):.1f} valid_perplexity={valid:.2f} "
        f"test_perplexity={test:.2f}"
    )


if __name__ == "__main__":
    main()
