"""Nothing breaks and nothing is lost: each case an adversarial user tried, through `main.py`
in a subprocess, asserting the exit status, a single `error:` line, no traceback, and the
workdir's bytes unchanged where nothing should change."""

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT
from test_checkpoints import main_cmd, run, start_long_run, tree_digest

from rnnlm_jax import data
from rnnlm_jax.train import checkpoints, workdir

SMOKE = "--config=configs/timemachine.py:smoke"


def assert_one_error(r, status, *words):
    """Exit `status`, stderr exactly one `error:` line holding `words`, no traceback."""
    assert r.returncode == status, (r.returncode, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    for word in words:
        assert word in errors[0], errors[0]


def sample(workdir, *args, **kwargs):
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), f"--workdir={workdir}", "--mode=sample", *args],
        cwd=kwargs.pop("cwd", ROOT),
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-epoch smoke run: checkpoints after epochs 2 and 4 (named by minibatch:
    the smoke config's epoch is 7 of them)."""
    path = tmp_path_factory.mktemp("trained") / "w"
    r = run(path)
    assert r.returncode == 0, r.stderr
    assert checkpoints.steps(path) == [28, 14]
    return path


@pytest.fixture
def copy(trained, tmp_path):
    """A copy of the trained workdir to damage."""
    target = tmp_path / "w"
    shutil.copytree(trained, target, symlinks=True)
    return target


def biggest_file(step_dir: Path) -> Path:
    return max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


# ---------------------------------------------------------------------------------------
# Workdirs that cannot be one, and values that are not values.


@pytest.mark.parametrize("kind", ["file", "proc", "sys"])
def test_an_unusable_workdir_is_one_line(tmp_path, kind):
    target = {"file": tmp_path / "f", "proc": "/proc/rnnlm_jax", "sys": "/sys/rnnlm_jax/w"}[kind]
    if kind == "file":
        target.write_text("mine")
    r = run(target, "--config.num_epochs=1")
    assert_one_error(r, 2, "--workdir")
    if kind == "file":
        assert target.read_text() == "mine"


def test_a_tilde_workdir_is_the_home_folder(copy, tmp_path):
    r = sample("~/w", "--num_preds=5", env=dict(os.environ, HOME=str(copy.parent)), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("time traveller"), r.stderr
    assert not (tmp_path / "~").exists()


def test_a_diverging_loss_is_one_line(tmp_path):
    r = run(tmp_path / "w", "--config.lr=100")
    assert_one_error(r, 1, "diverged", "lr")
    assert "OverflowError" not in r.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["--config.seed=99999999999999999999"], ["config.seed"]),
        (["--config.num_hiddens=1000000"], ["num_hiddens", "GiB"]),
    ],
)
def test_a_value_too_big_for_the_machine_is_one_line(tmp_path, args, words):
    r = run(tmp_path / "w", *args)
    assert_one_error(r, 2, *words)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "arg, word",
    [
        ("--temperature=nan", "temperature"),
        ("--num_preds=100000000000", "num_preds"),
        ("--num_samples=1000000000", "num_samples"),
        ("--seed=99999999999999", "seed"),
    ],
)
def test_a_bad_sampling_value_is_one_line(trained, arg, word):
    before = tree_digest(trained)
    assert_one_error(sample(trained, arg), 2, word)
    assert tree_digest(trained) == before


def test_a_config_file_missing_fields_gets_their_defaults(tmp_path):
    config = tmp_path / "partial.py"
    config.write_text(
        "import ml_collections\n\n\ndef get_config():\n"
        "    return ml_collections.ConfigDict({'num_hiddens': 8, 'num_epochs': 1,\n"
        "                                      'max_tokens': 1200, 'num_preds': 3})\n"
    )
    r = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), f"--config={config}", f"--workdir={tmp_path}/w"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "w" / "config.json").read_text())
    assert saved["num_hiddens"] == 8 and saved["batch_size"] == 32 and saved["lr"] == 1.0
    assert saved["corpus"] == "timemachine" and saved["valid_fraction"] == 0.1


@pytest.mark.parametrize(
    "fields, words",
    [
        ("{'num_epoch': 5}", ["config.num_epoch", "num_epochs"]),
        ("{'lr': 'fast'}", ["config.lr", "a number"]),
    ],
)
def test_a_config_file_with_a_typo_or_a_bad_value_is_one_line(tmp_path, fields, words):
    config = tmp_path / "mine.py"
    config.write_text(
        "import ml_collections\n\n\ndef get_config():\n"
        f"    return ml_collections.ConfigDict({fields})\n"
    )
    r = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), f"--config={config}", f"--workdir={tmp_path}/w"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_error(r, 2, *words)
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------------------------------
# Damaged checkpoints: fall back to the newest one that restores, or change nothing.


DAMAGE = {
    "truncated": lambda step: os.truncate(biggest_file(step / "state"), 10),
    "meta deleted": lambda step: (step / "meta" / "metadata").unlink(),
    "16 bytes overwritten": lambda step: _overwrite(biggest_file(step / "state"), 16),
}


def _overwrite(path: Path, n: int) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + n] = b"\x7f" * n
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_latest_checkpoint_falls_back_to_the_last_good_one(copy, damage):
    DAMAGE[damage](copy / "checkpoints" / "28")
    s = sample(copy, "--num_preds=5")
    assert s.returncode == 0 and s.stdout.startswith("time traveller"), s.stderr
    assert "skipping checkpoint 28" in s.stderr and "Traceback" not in s.stderr
    r = run(copy, "--config.num_epochs=5")
    assert r.returncode == 0, r.stderr
    assert "skipping checkpoint 28" in r.stderr and "after epoch 2" in r.stdout
    assert (copy / "checkpoints" / "28.damaged").is_dir()  # set aside; 28 is saved anew
    assert checkpoints.steps(copy) == [35, 28, 14]
    assert checkpoints.damage(copy / "checkpoints" / "28") is None
    records = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in records] == [1, 2, 3, 4, 5]


def test_no_good_checkpoint_is_one_line_and_changes_nothing(copy):
    DAMAGE["truncated"](copy / "checkpoints" / "28")
    DAMAGE["16 bytes overwritten"](copy / "checkpoints" / "14")
    before = tree_digest(copy)
    for r in (run(copy, "--config.num_epochs=6"), sample(copy)):
        assert_one_error(r, 1, "no checkpoint", "restores")
        assert tree_digest(copy) == before


@pytest.mark.parametrize("name", ["config.json", "vocab.json"])
@pytest.mark.parametrize("mode", ["resume", "sample"])
def test_a_garbage_json_file_is_one_line_naming_it(copy, name, mode):
    (copy / name).write_text("{not json")
    before = tree_digest(copy)
    r = run(copy, "--config.num_epochs=6") if mode == "resume" else sample(copy)
    assert_one_error(r, 1, name)
    assert tree_digest(copy) == before


def test_a_garbled_metrics_line_is_reported_not_taken_as_the_end(copy):
    path = copy / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # epoch 2's record, torn
    path.write_text("\n".join(lines) + "\n")
    r = run(copy, "--config.num_epochs=6")
    assert r.returncode == 0, r.stderr
    assert "metrics.jsonl line 2" in r.stderr
    records = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["epoch"] for x in records] == [1, 3, 4, 5, 6]


def test_a_finished_run_resumed_changes_nothing(copy):
    before = tree_digest(copy)
    for args in ([], ["--config.dtype=bfloat16"]):
        r = run(copy, *args)
        assert r.returncode == 0 and "perplexity" in r.stdout, r.stderr
        assert tree_digest(copy) == before


@pytest.mark.parametrize("name", ["metrics.jsonl", "perplexity.png"])
def test_a_symlink_in_the_workdir_is_not_written_through(copy, tmp_path, name):
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    (copy / name).unlink()
    (copy / name).symlink_to(outside)
    r = run(copy, "--config.num_epochs=6")
    assert_one_error(r, 2, name, "symbolic link")
    assert outside.read_text() == "not yours"


# ---------------------------------------------------------------------------------------
# One run per workdir.


def test_two_runs_at_once_one_runs_the_other_is_refused(tmp_path):
    target = tmp_path / "w"
    procs = [
        subprocess.Popen(
            main_cmd(target, "--config.num_epochs=6"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            umask=0o027,  # the files follow the user's umask
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert sorted(status for status, _, _ in results) == [0, 1], results
    _, _, err = next(r for r in results if r[0] == 1)
    assert err.count("\n") == 1 and "in use by another run (pid" in err, err
    records = [json.loads(x) for x in (target / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in records] == list(range(1, 7))
    for name in ("config.json", "vocab.json", "metrics.jsonl", "perplexity.png"):
        assert (target / name).stat().st_mode & 0o777 == 0o640, name
    assert not (target / workdir.RUN_LOCK).exists()  # released


def test_a_lock_left_by_a_dead_run_does_not_block(copy):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (copy / workdir.RUN_LOCK).write_text(f"{dead.pid} {socket.gethostname()}\n")
    r = run(copy, "--config.num_epochs=5")
    assert r.returncode == 0 and "after epoch 4" in r.stdout, r.stderr


def test_the_lock_names_its_holder(tmp_path):
    with workdir.hold(tmp_path):
        with pytest.raises(workdir.WorkdirInUse, match=f"pid {os.getpid()} on host"):
            with workdir.hold(tmp_path):
                pass
    with workdir.hold(tmp_path):  # released
        pass


def test_sampling_while_a_run_saves_every_epoch(tmp_path):
    proc = start_long_run(tmp_path, "--config.checkpoint_every_epochs=1", "--config.max_to_keep=1")
    try:
        for _ in range(3):  # saves back to back: each sample waits for one at most
            s = sample(tmp_path, "--num_preds=5")
            assert s.returncode == 0 and s.stdout.startswith("time traveller"), s.stderr
            assert "skipping" not in s.stderr and "Traceback" not in s.stderr, s.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == 0


# ---------------------------------------------------------------------------------------
# Signals and a full disk.


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_signal_during_compilation_stops_at_once(tmp_path, sig, status):
    # 2,000 layers take minutes to trace and compile, far longer than the run is given to
    # answer the signal (the communicate timeout: a guard against a hang, not a
    # measurement). The signal goes once the run holds its workdir (the lock names its pid):
    # from then on it builds the state and compiles, and must not wait for the compiler.
    workdir = tmp_path / "w"
    proc = subprocess.Popen(
        main_cmd(workdir, "--config.num_layers=2000"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock, deadline = workdir / ".lock", time.monotonic() + 300
    try:
        while not (lock.is_file() and lock.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status and f"{sig.name} before the first" in out, (out, err)
    assert "Traceback" not in err
    assert not (workdir / "checkpoints").exists()  # it never reached training
    assert checkpoints.steps(tmp_path / "w") == []


@pytest.fixture
def slow_server():
    """A loopback HTTP server that sends a 10 MB body slowly; yields its url."""

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(10_000_000))
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x" * 10_000)
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/timemachine.txt"
    server.shutdown()


def test_a_download_stopped_by_sigterm_leaves_no_part_file(tmp_path, slow_server):
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        main_cmd(tmp_path / "w", "--config.corpus=shakespeare", f"--config.data_url={slow_server}"),
        cwd=ROOT,
        env=dict(os.environ, RNNLM_JAX_DATA_DIR=str(data_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(data_dir.glob("*.part")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert_one_error(subprocess.CompletedProcess([], proc.returncode, out, err), 1, "SIGTERM")
    assert not data_dir.exists()  # neither the part file nor the folder it made


def test_a_download_has_an_overall_time_limit(tmp_path, slow_server):
    with pytest.raises(data.DataError, match="took over"):
        data.download(slow_server, tmp_path / "t.txt", "0" * 40, timeout=5, max_seconds=0.3)
    assert list(tmp_path.iterdir()) == []


FULL_DISK = r"""
set -e
mount -t tmpfs -o size={size} tmpfs "$DISK"
cp -a "$SRC" "$DISK/w"
head -c {free} /dev/zero > "$DISK/reserve"   # a save needs more than what is left
dd if=/dev/zero of="$DISK/fill" bs=4k 2>/dev/null || true
rm "$DISK/reserve"
set +e
"$PY" "$MAIN" --config=configs/timemachine.py:smoke --workdir="$DISK/w" \
    --config.num_epochs=8 --config.checkpoint_every_epochs=1 > "$OUT/stdout" 2> "$OUT/stderr"
echo $? > "$OUT/status"
cp -a "$DISK/w" "$OUT/w"
"""


def test_a_full_disk_keeps_the_last_checkpoint_and_the_record(trained, tmp_path):
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode:
        pytest.skip("needs a private mount namespace (unshare -rm) for a small tmpfs")
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    env = dict(os.environ, DISK=str(disk), SRC=str(trained), OUT=str(out), PY=sys.executable)
    env["MAIN"] = str(ROOT / "main.py")
    script = FULL_DISK.format(size="2m", free="64k")
    subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=env, timeout=300)
    r = subprocess.CompletedProcess(
        [], int((out / "status").read_text()), (out / "stdout").read_text(),
        (out / "stderr").read_text(),
    )  # fmt: skip
    assert_one_error(r, 1, "no space left")
    w = out / "w"
    assert checkpoints.latest_epoch(w) == 4 and checkpoints.damage(w / "checkpoints" / "28") is None
    records = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in records][:4] == [1, 2, 3, 4]


FAILING_CALLBACK = """
import tensorstore as ts
from absl import flags
from rnnlm_jax.run import cli
from rnnlm_jax.train.checkpoints import CheckpointError

def job():
    promise, future = ts.Promise.new()
    future.add_done_callback(lambda _: 1 / 0)  # as a save thread's callback on a closed loop
    promise.set_result(None)  # tensorstore reports the callback's error as unraisable
    raise CheckpointError("the save failed")

flags.FLAGS(["main.py"])
flags.FLAGS.verbosity = -3  # main.py's default
cli.run(job)
"""


def test_a_native_callback_failing_beside_the_error_prints_no_traceback(tmp_path):
    # What a full disk did once in CI: tensorstore's callback raised on Orbax's closed loop.
    r = subprocess.run(
        [sys.executable, "-c", FAILING_CALLBACK], cwd=tmp_path, capture_output=True, text=True
    )
    assert_one_error(r, 1, "the save failed")
