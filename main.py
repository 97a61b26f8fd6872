r"""Trains the recurrent language model a config file describes (the book's Time Machine RNN,
the Penn Treebank LSTM, tiny Shakespeare, or your own text), or samples from or scores text
with a trained one.

    python main.py --config=configs/timemachine.py [--workdir=runs/timemachine]
    python main.py --config=configs/timemachine.py:smoke --config.num_epochs=2
    python main.py --config=configs/timemachine.py --config.corpus=text --config.text_files=my.txt
    python main.py --config=configs/ptb.py                       # Zaremba et al.'s small model
    python main.py --workdir=runs/timemachine --mode=sample --prefix="time traveller"
    python main.py --workdir=runs/timemachine --mode=score --text="the time machine"

This file is intentionally kept short: the flags are `rnnlm_jax.run.app`'s (also
`python -m rnnlm_jax`), the logic is in `rnnlm_jax`, which research code and notebooks import.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the checkout's package
    from rnnlm_jax.run import app

    app.run()
