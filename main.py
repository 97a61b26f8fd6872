r"""Trains the Time Machine RNN language model described by a config file.

    python main.py --config=configs/timemachine.py [--workdir=runs/timemachine]
    python main.py --config=configs/timemachine.py:smoke --config.num_epochs=2

This file is intentionally kept short: the logic is in `rnnlm_jax`, which
research code and notebooks import. `--workdir` defaults to
`runs/<config file stem>[_<variant>]`.
"""

import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from rnnlm_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (and :variant).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where outputs go; default runs/<config>[_<variant>].")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}", status=2)
    workdir = FLAGS.workdir or cli.default_workdir(
        config_flags.get_config_filename(FLAGS["config"])
    )
    cli.run(lambda: cli.train(FLAGS.config, workdir))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    app.run(main, flags_parser=cli.parse_flags)
