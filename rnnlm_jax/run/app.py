r"""The command line (`python main.py ...` or `python -m rnnlm_jax ...`): its flags and
modes. Trains the recurrent language model a config file describes (the book's Time Machine
RNN, the Penn Treebank LSTM, tiny Shakespeare, or your own text), or samples from or scores
text with a trained one, or runs a config's sweep.

    python main.py --config=configs/timemachine.py [--workdir=runs/timemachine]
    python main.py --config=configs/timemachine.py --config.corpus=text --config.text_files=my.txt
    python main.py --workdir=runs/timemachine --mode=sample --prefix="time traveller"
    python main.py --workdir=runs/timemachine --mode=score --text="the time machine"

An installed package finds the configs it ships by name (`--config=timemachine:gru`).
`--workdir` defaults to `runs/<config file stem>[_<variant>]`; running the same command again
resumes from the workdir's latest checkpoint. `--mode=sample` and `--mode=score` need only
the workdir: no config, no data file. The logic is in `rnnlm_jax.run.cli` and below.
"""

import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from rnnlm_jax.run import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (and :variant).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where outputs go; default runs/<config>[_<variant>].")
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "sample", "score", "sweep", "summary", "population"],
    "train (or resume) the job config.job names; sample from a workdir; score text under a "
    "workdir's model; sweep: submit every trial of the config's get_sweep(); summary: "
    "gather a sweep's final metrics; population: --config.job=population, the sweep's "
    "trials trained at once, vmapped.",
)
flags.DEFINE_integer("sweep_index", None, "Run trial i of the config's get_sweep().")
flags.DEFINE_enum(
    "cluster",
    "auto",
    ["auto", "slurm", "local"],
    "--mode=sweep: where the trials run: slurm (sbatch), local (processes here), or auto "
    "(SLURM where srun exists, as submitit decides).",
)
flags.DEFINE_string("slurm_partition", None, "--mode=sweep: SLURM partition.")
flags.DEFINE_integer("slurm_time", 240, "--mode=sweep: minutes per trial.")
flags.DEFINE_integer("gpus_per_task", 0, "--mode=sweep: GPUs per trial.")
flags.DEFINE_integer("cpus_per_task", 2, "--mode=sweep: CPUs per trial.")
flags.DEFINE_integer("array_parallelism", 16, "--mode=sweep: trials running at once.")
flags.DEFINE_bool("wait", None, "--mode=sweep: wait for the trials (default: only if local).")
flags.DEFINE_string("prefix", "time traveller", "--mode=sample: the text to continue.")
flags.DEFINE_integer("num_preds", 50, "--mode=sample: how many tokens to generate.")
flags.DEFINE_float("temperature", 0.0, "--mode=sample: 0 is greedy (the book); > 0 samples.")
flags.DEFINE_integer("top_k", 0, "--mode=sample: sample among the k likeliest tokens (0: all).")
flags.DEFINE_integer("seed", 0, "--mode=sample: the sampling seed.")
flags.DEFINE_integer("num_samples", 1, "--mode=sample: continuations, generated at once.")
flags.DEFINE_string("text", None, "--mode=score: the text to score.")
flags.DEFINE_string("text_file", None, "--mode=score: a UTF-8 file whose text to score.")
flags.DEFINE_bool("per_token", False, "--mode=score: also print every token's log-prob.")
flags.DEFINE_integer(
    "window",
    0,
    "--mode=score: > 0 scores every non-overlapping window of this many tokens from a fresh "
    "state (nanoGPT's evaluation protocol with 64), instead of the whole text carried.",
)
flags.DEFINE_string("coordinator_address", None, "Multi-process: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-process: how many processes in all.")
flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}", status=2)
    cli.start_processes(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if FLAGS.mode == "sample":
        sampling = dict(
            temperature=FLAGS.temperature,
            top_k=FLAGS.top_k,
            seed=FLAGS.seed,
            num_samples=FLAGS.num_samples,
        )
        cli.run(lambda: cli.sample(FLAGS.workdir, FLAGS.prefix, FLAGS.num_preds, **sampling))
        return
    if FLAGS.mode == "score":
        cli.run(lambda: cli.score(FLAGS.workdir, FLAGS.text, FLAGS.text_file, FLAGS.per_token,
                                  FLAGS.window))  # fmt: skip
        return
    if FLAGS.mode == "summary":
        cli.run(lambda: cli.summary(FLAGS.workdir))
        return
    config_name = config_flags.get_config_filename(FLAGS["config"])
    workdir = FLAGS.workdir or cli.default_workdir(config_name)
    if FLAGS.mode == "sweep":
        slurm = dict(
            partition=FLAGS.slurm_partition,
            timeout_min=FLAGS.slurm_time,
            gpus_per_task=FLAGS.gpus_per_task,
            cpus_per_task=FLAGS.cpus_per_task,
            array_parallelism=FLAGS.array_parallelism,
            cluster=FLAGS.cluster,
        )
        cli.run(
            lambda: cli.sweep(FLAGS.config, config_name, workdir, sys.argv[1:], slurm, FLAGS.wait)
        )
    else:
        if FLAGS.mode == "population":
            with FLAGS.config.unlocked():
                FLAGS.config.job = "population"
        cli.run(lambda: cli.train(FLAGS.config, workdir, config_name, FLAGS.sweep_index))


def run() -> None:
    """Parses the flags (one-line errors; JAX's own, such as `--jax_platforms=cpu`, too)
    and runs `main`."""
    jax.config.config_with_absl()
    cli.setup_logging()
    app.run(main, flags_parser=cli.parse_flags)
