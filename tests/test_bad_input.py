"""Bad input against the newer features (cells, blocks, resumes, sweeps, population mode,
scoring, your own text): one line and a clean workdir, or a result that is right."""

import json
import shutil

import jax
import pytest
from conftest import ROOT
from test_robustness import SMOKE, assert_one_error
from test_sweeps import run_main

from rnnlm_jax import Vocab, score
from rnnlm_jax.config import fields
from rnnlm_jax.config.checks import ConfigError
from rnnlm_jax.data import corpora
from rnnlm_jax.infer.load import load_trained
from rnnlm_jax.jobs.lm import LanguageModelJob
from rnnlm_jax.run import sweeps
from rnnlm_jax.train import checkpoints, loop


def test_griffin_block_trains_in_bfloat16(tmp_path):
    r = run_main(SMOKE, "--config.cell=rglru", "--config.block=residual",
                 "--config.dtype=bfloat16", "--config.num_epochs=2", "--config.num_hiddens=16",
                 f"--workdir={tmp_path / 'w'}")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert checkpoints.latest_epoch(tmp_path / "w") == 2


def test_a_model_that_fails_to_compile_leaves_no_workdir(tmp_path, monkeypatch):
    from configs import timemachine

    def broken(self, state, carry, lengths):
        raise TypeError("scan body function carry input and carry output must have equal types")

    monkeypatch.setattr(LanguageModelJob, "compile", broken)
    with pytest.raises(TypeError):
        loop.run(LanguageModelJob(timemachine.get_config("smoke")), tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "w"
    r = run_main(SMOKE, "--config.num_epochs=2", f"--workdir={path}")
    assert r.returncode == 0, r.stderr
    return path


@pytest.mark.parametrize(
    "flag, field",
    [
        ("--config.embed_dim=8", "embed_dim"),
        ("--config.optimizer=adam", "optimizer"),
        ("--config.weight_decay=0.1", "weight_decay"),
    ],  # fmt: skip
)
def test_resuming_with_a_field_that_changes_the_state_names_it(two_epochs, tmp_path, flag, field):
    copy = tmp_path / "w"
    shutil.copytree(two_epochs, copy)
    before = sorted(p.name for p in copy.rglob("*"))
    r = run_main(SMOKE, "--config.num_epochs=4", flag, f"--workdir={copy}")
    assert_one_error(r, 2, field, "another --workdir")
    assert "checkpoint" in r.stderr and "no checkpoint restores" not in r.stderr
    assert sorted(p.name for p in copy.rglob("*")) == before  # nothing changed


def test_a_sweep_that_is_not_a_list_of_dicts_is_one_line(tmp_path):
    config = tmp_path / "mine.py"
    source = (ROOT / "configs" / "timemachine.py").read_text()
    config.write_text(source + "\n\ndef get_sweep(arg=None):\n    return [1, 2]\n")
    for mode in ("population", "sweep"):
        r = run_main(f"--config={config}:smoke", f"--mode={mode}", f"--workdir={tmp_path / mode}")
        assert_one_error(r, 2, "get_sweep()", "list of dicts", "1")
        assert not (tmp_path / mode).exists()


def test_the_summary_reads_the_good_trials_and_names_the_bad(tmp_path):
    for i, name in enumerate(("lr=0.5", "lr=1.0", "bad", "listed")):
        folder = tmp_path / name
        folder.mkdir()
        trial = {"index": i, "overrides": {"lr": 0.5 + i}}
        text = {"bad": "{not json", "listed": "[1, 2]"}.get(name, json.dumps(trial))
        (folder / sweeps.TRIAL_FILE).write_text(text)
        record = {"epoch": 4, "perplexity": 9.0 + i, "val_perplexity": 10.0 + i}  # old names
        (folder / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    md, csv_text = sweeps.summarize(tmp_path)
    assert "| lr=0.5 |" in md and "| lr=1.0 |" in md and "| 10 |" in md and "| 11 |" in md
    assert "bad/trial.json" in md and "listed/trial.json" in md
    assert csv_text.count("\n") == 3  # a header and the two good trials
    for name in ("lr=0.5", "lr=1.0"):
        shutil.rmtree(tmp_path / name)
    with pytest.raises(ConfigError, match="bad/trial.json"):
        sweeps.summarize(tmp_path)


def test_a_bom_and_crlf_line_ends_are_not_tokens(tmp_path):
    text = "First line.\r\nSecond line!\r\nThird and last.\r\n" * 40
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    config = fields.defaults()
    config.update(corpus="text", text_files=str(path), max_tokens=-1)
    corpus = corpora.load(config)
    tokens = set(corpus.vocab.idx_to_token)
    assert "\ufeff" not in tokens and "\r" not in tokens and "\n" in tokens
    unix = tmp_path / "unix.txt"
    unix.write_text(text.replace("\r\n", "\n"))
    config.text_files = str(unix)
    same = corpora.load(config)
    assert same.vocab.idx_to_token == corpus.vocab.idx_to_token
    assert (same.train == corpus.train).all()


def test_scoring_text_the_model_never_saw_is_refused_and_partly_unseen_is_counted():
    from rnnlm_jax.nn.models import RNNModel
    from rnnlm_jax.train import create_train_state

    vocab = Vocab(list("abc "))
    model = RNNModel(len(vocab), num_hiddens=8)
    params = create_train_state(model, jax.random.key(0), 1.0, 1.0).params
    with pytest.raises(ValueError, match="none of the text's"):
        score(model, params, vocab, "xyz!")
    assert score(model, params, vocab, "abxc").num_unknown == 1


def test_sampling_a_population_workdir_says_how_to_sample_a_member(tmp_path):
    (tmp_path / checkpoints.CONFIG_FILE).write_text(json.dumps({"job": "population"}))
    with pytest.raises(ConfigError, match="population run.*--sweep_index=i"):
        load_trained(tmp_path)
