"""What `main.py` needs at the edge: flag parsing, the modes, and errors as one line with
an exit status (2: bad flags, config or value; 1: data, checkpoint or training errors)."""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from rnnlm_jax import jobs
from rnnlm_jax.config.checks import ConfigError
from rnnlm_jax.data.sources import DataError, read_text
from rnnlm_jax.extras import MissingExtra
from rnnlm_jax.infer import generation, scoring
from rnnlm_jax.infer.load import load_trained
from rnnlm_jax.run import sweeps
from rnnlm_jax.train import parallel
from rnnlm_jax.train.checkpoints import CheckpointError
from rnnlm_jax.train.loop import TrainingError
from rnnlm_jax.train.preemption import EXIT_STATUS
from rnnlm_jax.train.workdir import WorkdirError, WorkdirInUse


class ConsoleHandler(logging.Handler):
    """The command line's view of the library's log (`logging.getLogger("rnnlm_jax")`):
    info lines on stdout as they are (progress, samples, results), those logged with
    `extra={"stderr": True}` on stderr, warnings on stderr as `warning: ...`."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            stream = sys.stderr if getattr(record, "stderr", False) else sys.stdout
            print(message, file=stream, flush=True)


_UNIT = {"char": "character", "byte": "byte"}  # what bits are counted per


def setup_logging() -> None:
    """Shows the library's messages on the terminal (a library user's own code decides
    for itself: without a handler, info is silent and warnings reach stderr)."""
    logger = logging.getLogger("rnnlm_jax")
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not again through absl's handler on the root logger


def fail(message: str, status: int) -> None:
    """Prints `error: message` (one line) to stderr and exits with `status`."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(status)


def _last_line(error: BaseException) -> str:
    """The informative last line of a possibly multi-line message (e.g. a quoted traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


# Flags that only one mode reads: given to another mode they would be ignored, so they are
# refused (the training seed is --config.seed, the sample's --seed).
MODE_FLAGS = {
    "sample": ("prefix", "num_preds", "temperature", "top_k", "seed", "num_samples"),
    "score": ("text", "text_file", "per_token", "window"),
    "sweep": (
        "cluster",
        "slurm_partition",
        "slurm_time",
        "gpus_per_task",
        "cpus_per_task",
        "array_parallelism",
        "wait",
    ),  # fmt: skip
}
HELP = ("--help", "-h", "--helpfull", "-?", "--helpshort")


def _shipped_configs() -> Path | None:
    """The folder of the configs the package ships (`configs/`, as `rnnlm_jax.configs`)."""
    from importlib import resources

    try:
        return Path(str(resources.files("rnnlm_jax.configs")))
    except ModuleNotFoundError:
        return None


def packaged_config(name: str) -> Path | None:
    """The config file the package ships for `name` (`timemachine`, `timemachine.py` or
    `configs/timemachine.py`), or None."""
    folder, stem = _shipped_configs(), Path(name).name.removesuffix(".py")
    path = folder / f"{stem}.py" if folder and stem else None
    return path if path and path.is_file() and stem != "__init__" else None


def _with_packaged_configs(argv: list[str]) -> list[str]:
    """`--config=FILE[:variant]` where FILE does not exist here but names a config the
    package ships (an installed wheel run away from the checkout) -> that file."""
    out = []
    for arg in argv:
        if arg.startswith("--config="):
            path, sep, variant = arg[len("--config=") :].partition(":")
            if path and not Path(path).expanduser().exists():
                shipped = packaged_config(path)
                if shipped is not None:
                    arg = f"--config={shipped}{sep}{variant}"
        out.append(arg)
    return out


def print_help(argv: list[str]) -> None:
    """The command's usage and every flag it takes (its own, then JAX's with --helpfull)."""
    from rnnlm_jax.run import app

    print(app.__doc__.strip() + "\n")
    print(flags.FLAGS.module_help(app))
    if "--helpfull" in argv:
        print(flags.FLAGS.get_help())
    sys.exit(0)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing that reports a bad flag, config file or override in one line, status 2."""
    if any(a in HELP for a in argv[1:]):
        print_help(argv)
    argv = _with_packaged_configs(argv)
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        fail(_last_line(e), status=2)
    except (AttributeError, KeyError) as e:  # An override of a field the config does not have.
        fail(_unknown_override(argv, e), status=2)
    except Exception as e:
        fail(f"bad flags: {_last_line(e)}", status=2)
    if flags.FLAGS.workdir:  # a flag's `~` is not expanded by the shell
        flags.FLAGS.workdir = os.path.expanduser(flags.FLAGS.workdir)
    for mode, names in MODE_FLAGS.items():
        given = [n for n in names if flags.FLAGS[n].present]
        if given and flags.FLAGS.mode != mode:
            hint = " (a training run's seed is --config.seed)" if "seed" in given else ""
            fail(f"--{given[0]} is for --mode={mode}, not --mode={flags.FLAGS.mode}{hint}", 2)
    if flags.FLAGS.mode in ("sample", "summary", "score"):
        if not flags.FLAGS.workdir:
            fail(f"--mode={flags.FLAGS.mode} needs --workdir", status=2)
    elif flags.FLAGS["config"].value is None:
        folder = _shipped_configs()
        names = (
            sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__") if folder else []
        )
        shipped = ", ".join(names)
        fail(f"--config is required: a config file, or one the package ships ({shipped}), "
             "e.g. --config=timemachine", status=2)  # fmt: skip
    else:
        try:
            flags.FLAGS.config.keys()  # A config file that failed to load reports it here.
        except Exception as e:
            filename = config_flags.get_config_filename(flags.FLAGS["config"])
            fail(f"cannot load --config={filename}: {_last_line(e)}", status=2)
    # Quiet by default: no INFO lines from JAX's backend probing, and no tracebacks that
    # Orbax's save threads log before the error reaches `run` as one line; --verbosity=0
    # restores them.
    if not any(a.startswith(("--verbosity", "-v=", "--v=")) for a in argv):
        flags.FLAGS.verbosity = -3
    return rest


def _unknown_override(argv: list[str], error: BaseException) -> str:
    """The one-line message for a `--config.X=` override that ml_collections refused (a
    field the config does not have), or for a config file that failed to load."""
    text = str(error)
    if "get_config" in text:
        return f"cannot load the config file: it defines no get_config() ({_last_line(error)})"
    overrides = [a.split("=", 1)[0] for a in argv if a.startswith("--config.")]
    for flag in overrides:
        leaf = flag.rsplit(".", 1)[-1]
        if re.search(rf"[\"'\\]{re.escape(leaf)}[\"'\\]", text):
            near = re.search(r'Did you mean "([^"]+)"', text)
            hint = f"; did you mean --config.{near.group(1)}?" if near else ""
            return (
                f"unknown config field {leaf!r} ({flag}=): the config defines no such field{hint}"
            )
    return f"bad --config override: {_last_line(error)}"


def start_processes(coordinator_address, num_processes, process_id) -> None:
    """Joins a multi-process run (explicit flags, or SLURM with several tasks); the
    processes other than 0 print nothing (process 0 speaks and writes for all)."""
    if coordinator_address and (num_processes is None or process_id is None):
        fail("--coordinator_address needs --num_processes and --process_id", status=2)
    if parallel.initialize_distributed(coordinator_address, num_processes, process_id):
        if not parallel.is_main_process():
            sys.stdout = open(os.devnull, "w")


def default_workdir(config_filename: str) -> str:
    """`runs/<config stem>[_<variant>]`, e.g. `runs/timemachine_gru` for `...:gru`."""
    path, _, variant = config_filename.partition(":")
    name = Path(path).stem + (f"_{variant}" if variant else "")
    return str(Path("runs") / name)


def train(config, workdir: str, config_name: str = "", sweep_index: int | None = None) -> None:
    """Trains (or resumes) the job `config.job` names (`rnnlm_jax.jobs`); after a SIGTERM /
    SIGINT exits 0 / 130 with the checkpoint saved.

    With `sweep_index`, trial i of the config file's sweep, in its own workdir subfolder.
    `config.job = "population"` trains all the sweep's trials at once.
    """
    if sweep_index is not None:
        trial_dir, overrides = sweeps.trial_workdir(workdir, config_name, sweep_index)
        sweeps.apply_trial(config, overrides)
        if parallel.is_main_process():
            sweeps.write_trial_file(trial_dir, sweep_index, overrides)
        workdir = str(trial_dir)
    trials = sweeps.load_sweep(config_name) if config.get("job") == "population" else None
    result = jobs.run(config, workdir, trials)
    if result.stopped_by:
        sys.exit(EXIT_STATUS[result.stopped_by])


def sweep(config, config_name: str, workdir: str, argv: list[str], slurm: dict, wait) -> None:
    """Submits every trial of the config file's sweep (one job array); when the trials ran
    here, prints the summary table."""
    trials = sweeps.load_sweep(config_name)
    for overrides in trials:  # a typo fails here, before anything is submitted
        sweeps.apply_trial(config.copy_and_resolve_references(), overrides)
    workdir = Path(workdir).absolute()
    path, _, variant = config_name.partition(":")
    dropped = (
        "--mode",
        "--slurm_",
        "--gpus_per_task",
        "--cpus_per_task",
        "--array_par",
        "--wait",
        "--nowait",
        "--cluster",
        "--sweep_index",
        "--workdir",
        "--config=",
    )
    trial_argv = [a for a in argv if not a.startswith(dropped)]
    config_arg = str(Path(path).absolute()) + (f":{variant}" if variant else "")
    trial_argv = [f"--config={config_arg}", f"--workdir={workdir}", *trial_argv]
    try:
        jobs = sweeps.launch(trial_argv, workdir, len(trials), slurm, wait)
    except RuntimeError as e:
        raise TrainingError(f"some trials failed: {e}") from None
    if all(job.done() for job in jobs):
        print(sweeps.summarize(workdir)[0], end="")
    else:
        print(f"when they finish: python main.py --mode=summary --workdir={workdir}")


def summary(workdir: str) -> None:
    """Prints (and writes) the table of a sweep's final metrics."""
    print(sweeps.summarize(workdir)[0], end="")


def sample(workdir: str, prefix: str, num_preds: int, **sampling) -> None:
    """Prints continuations of `prefix` from the workdir's latest checkpoint, one per line.

    `sampling`: `temperature` (0: the book's greedy procedure), `top_k`, `seed`,
    `num_samples`; see `generation.sample`.
    """
    model, params, vocab, _ = load_trained(workdir)
    try:
        texts = generation.sample(model, params, vocab, prefix, num_preds, **sampling)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    print("\n".join(texts), flush=True)


def score(
    workdir: str, text: str | None, text_file: str | None, per_token: bool, window: int = 0
) -> None:
    """Prints the perplexity (and bits per character) of `text` or the file `text_file` under
    the workdir's latest checkpoint; `per_token`: first each token and its log-probability.
    `window` > 0: instead, the mean loss over every non-overlapping window of `window`
    tokens, each from a fresh state (nanoGPT's evaluation protocol)."""
    if text is not None and text_file is not None:
        raise ConfigError("--mode=score takes --text or --text_file, not both")
    if text is None and text_file is None:
        raise ConfigError("--mode=score needs --text=... or --text_file=PATH")
    if text_file is not None:
        text = read_text(text_file, "--text_file")
    if window < 0 or (window and per_token):
        raise ConfigError("--window must be >= 0, and takes no --per_token")
    model, params, vocab, _ = load_trained(workdir)
    if window:
        ids = vocab.encode(text)
        try:
            loss, count = scoring.window_loss(model, params, ids, window)
        except ValueError as e:
            raise ConfigError(f"--window={window}: {e}") from None
        bits = (f", {loss / math.log(2):.4f} bits per {_UNIT[vocab.token]}"
                if vocab.token in _UNIT else "")  # fmt: skip
        print(f"loss {loss:.4f} nats per token (perplexity {math.exp(loss):.4f}{bits}) over "
              f"{count} targets in windows of {window} {vocab.token} tokens, each from a fresh "
              "state", flush=True)  # fmt: skip
        return
    try:
        result = scoring.score(model, params, vocab, text)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if result.num_unknown:
        print(
            f"warning: {result.num_unknown} of the {result.num_scored} scored tokens are not in "
            "the model's vocab and were scored as <unk>",
            file=sys.stderr,
            flush=True,
        )
    if per_token:
        for tok, lp in zip(result.tokens[1:], result.log_probs):
            print(f"{tok!r}\t{lp:.4f}")
    bpc = result.bits_per_char
    print(
        f"perplexity {result.perplexity:.4f} over {result.num_scored} {vocab.token} tokens"
        + (f" ({bpc:.4f} bits per {_UNIT[vocab.token]})" if bpc is not None else "")
        + f"; the first token, {result.tokens[0]!r}, is context only (not scored)",
        flush=True,
    )


def _out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation that failed (XLA's RESOURCE_EXHAUSTED, or NumPy's)."""
    text = str(error)
    return isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in text or "Out of memory" in text


def _disk_full(error: BaseException) -> bool:
    """Whether `error` is a write to a full disk (an `OSError`, or tensorstore's in Orbax)."""
    return getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)


def _quiet_hook(*exc) -> None:
    """Tracebacks that native callbacks print on their own (tensorstore's, inside Orbax's
    save threads, after a failed write: through `sys.excepthook`, or `sys.unraisablehook`
    when an asyncio loop has closed under them) are dropped: the error reaches `run` as one
    line."""


def run(job: Callable[[], None]) -> None:
    """Runs `job`, turning the project's errors into one line and a non-zero status.

    With the default verbosity, the quiet hooks stay in place when `job` fails with a known
    error: Orbax's threads may report the same failure again while the process exits."""
    quiet = flags.FLAGS.is_parsed() and flags.FLAGS.verbosity < -1  # the default: no logs
    hooks = sys.excepthook, sys.unraisablehook
    if quiet:
        sys.excepthook = sys.unraisablehook = _quiet_hook
    try:
        job()
    except (ConfigError, WorkdirError) as e:
        fail(e, status=2)
    except (DataError, TrainingError, CheckpointError, WorkdirInUse, MissingExtra) as e:
        fail(e, status=1)
    except KeyboardInterrupt:
        fail("interrupted", status=130)
    except Exception as e:
        if _disk_full(e):
            fail("no space left on device; the workdir keeps its last complete checkpoint", 1)
        if isinstance(e, OSError):
            where = f" ({e.filename})" if e.filename else ""
            fail(f"{e.strerror or _last_line(e)}{where}", 1)
        if _out_of_memory(e):
            hint = "try a smaller model, batch or num_preds"
            fail(f"out of memory: {_last_line(e)[:200]} ({hint})", status=1)
        sys.excepthook, sys.unraisablehook = hooks  # an unexpected error: its traceback
        raise
    sys.excepthook, sys.unraisablehook = hooks
