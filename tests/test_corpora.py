"""Your own text and tiny Shakespeare: one command trains on them (char and word tokens,
one file or fixed splits), every bad file or value is one line with nothing left behind,
and the named corpus is found, verified and split as nanoGPT splits it."""

import hashlib
import json

import numpy as np
import pytest
from conftest import ROOT, real_data
from test_data import served  # noqa: F401  (a fixture)
from test_main import run_main
from test_robustness import assert_one_error

from rnnlm_jax.config import fields
from rnnlm_jax.data import corpora, sources

BOOK = f"--config={ROOT / 'configs' / 'timemachine.py'}:smoke"


@pytest.fixture(scope="module")
def mybook(tmp_path_factory):
    """A text of the user's: 30,000 characters of prose, with capitals and punctuation."""
    path = tmp_path_factory.mktemp("mine") / "mybook.txt"
    path.write_text(sources.packaged_time_machine().read_text()[2000:32000])
    return path


def final_lines(r):
    lines = r.stdout.splitlines()
    return lines[[i for i, line in enumerate(lines) if line.startswith("perplexity ")][-1] :]


def test_your_own_text_char_level_one_command(mybook, tmp_path):
    r = run_main(BOOK, "--config.corpus=text", f"--config.text_files={mybook}",
                 f"--workdir={tmp_path / 'w'}", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    about = r.stdout.splitlines()[0]
    assert about.startswith("text corpus mybook.txt (split 0.9 / 0.1 / 0): 2,000 of ")
    assert "(config.max_tokens; -1 keeps all)" in about and "3,000 validation" in about
    assert "validation perplexity" in final_lines(r)[0]
    vocab = json.loads((tmp_path / "w" / "vocab.json").read_text())
    # No cleaning: capitals, punctuation and newlines are tokens of their own.
    assert vocab["token"] == "char" and vocab["cleaning"] == "none"
    assert {"T", ",", "\n"} <= set(vocab["idx_to_token"])
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    assert config["corpus"] == "text" and config["text_files"] == str(mybook)


def test_your_own_text_word_level_and_the_books_cleaning(mybook, tmp_path):
    r = run_main(BOOK, "--config.corpus=text", f"--config.text_files={mybook}",
                 "--config.token=word", "--config.cleaning=book", "--config.num_epochs=1",
                 f"--workdir={tmp_path / 'w'}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "training words" in r.stdout.splitlines()[0]
    vocab = json.loads((tmp_path / "w" / "vocab.json").read_text())
    assert vocab["token"] == "word" and vocab["cleaning"] == "book"
    assert "<eos>" in vocab["idx_to_token"] and "the" in vocab["idx_to_token"]
    assert all(t == t.lower() for t in vocab["idx_to_token"] if t not in ("<unk>", "<eos>"))
    (continuation,) = final_lines(r)[1:2]
    assert continuation.startswith("time traveller ") and len(continuation.split()) == 2 + 10


def test_fixed_train_valid_test_files(mybook, tmp_path):
    text = mybook.read_text()
    parts = {"train.txt": text[:20000], "valid.txt": text[20000:25000], "test.txt": text[25000:]}
    for name, part in parts.items():
        (tmp_path / name).write_text(part)
    names = ",".join(str(tmp_path / n) for n in parts)
    r = run_main(BOOK, "--config.corpus=text", f"--config.text_files={names}",
                 "--config.max_tokens=-1", "--config.num_epochs=1",
                 f"--workdir={tmp_path / 'w'}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "(train, valid, test files): 20,000 training chars, 5,000 validation, " in r.stdout
    final = final_lines(r)[0]
    assert "validation perplexity" in final and "test perplexity" in final


def test_the_corpus_fields_are_in_every_shipped_config():
    from configs import ptb, sine, timemachine

    del sine  # exercise 3 is not a language model: it has no corpus
    from configs import shakespeare

    for config in (
        timemachine.get_config(),
        ptb.get_config(),
        ptb.get_config("smoke"),
        shakespeare.get_config(),
        shakespeare.get_config("smoke,rglru"),
    ):
        for name in ("corpus", "text_files", "valid_fraction", "test_fraction", "cleaning"):
            assert name in config, name
        assert set(config.keys()) == set(fields.FIELDS)


def _bad_files(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n \n")
    (tmp_path / "binary.txt").write_bytes(b"text\0with\0nuls" * 100)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 500)
    (tmp_path / "short.txt").write_text("a")
    (tmp_path / "small.txt").write_text("just a few words here\n")
    (tmp_path / "folder").mkdir()


@pytest.mark.parametrize(
    "args, status, words",
    [
        (["--config.text_files={d}/nope.txt"], 1, ["nope.txt", "does not exist"]),
        (["--config.text_files={d}/empty.txt"], 1, ["empty.txt", "is empty"]),
        (["--config.text_files={d}/blank.txt"], 1, ["blank.txt", "is empty"]),
        (["--config.text_files={d}/binary.txt"], 1, ["binary.txt", "binary"]),
        (["--config.text_files={d}/latin1.txt"], 1, ["latin1.txt", "not UTF-8"]),
        (["--config.text_files={d}/folder"], 1, ["folder", "not a file"]),
        (["--config.text_files={d}/short.txt"], 1, ["short.txt", "too short"]),
        (["--config.text_files={d}/small.txt"], 1, ["small.txt", "too short", "batch_size"]),
        (["--config.text_files={d}/small.txt,{d}/small.txt"], 2, ["text_files", "three"]),
        (["--config.text_files="], 2, ["text_files"]),
        (["--config.text_files={d}/small.txt", "--config.valid_fraction=0.7"], 2,
         ["valid_fraction", "[0, 0.5)"]),
        (["--config.text_files={d}/small.txt", "--config.valid_fraction=-0.1"], 2,
         ["valid_fraction"]),
        (["--config.text_files={d}/small.txt", "--config.valid_fraction=0.3",
          "--config.test_fraction=0.3"], 2, ["valid_fraction + config.test_fraction"]),
    ],
)  # fmt: skip
def test_a_bad_text_file_or_value_is_one_line_and_leaves_nothing(tmp_path, args, status, words):
    _bad_files(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(d=tmp_path) for a in args]
    r = run_main(BOOK, "--config.corpus=text", *args, f"--workdir={tmp_path / 'w'}")
    assert_one_error(r, status, *words)
    # No workdir, nothing else: at most a whole token file of a text that tokenized (a
    # cache the next run reads), never a partial one or a lock.
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith((".ids", ".json")))
    assert left == before
    for ids in tmp_path.glob("*.ids"):
        assert json.loads(ids.with_suffix(".json").read_text())["num_tokens"] > 0


def test_a_too_short_validation_part_says_what_to_change(mybook, tmp_path):
    r = run_main(BOOK, "--config.corpus=text", f"--config.text_files={mybook}",
                 "--config.valid_fraction=0.005", f"--workdir={tmp_path / 'w'}")  # fmt: skip
    assert_one_error(r, 1, "validation text has 150 tokens", "valid_fraction")
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------------------------------
# Tiny Shakespeare.


def test_shakespeare_is_split_as_nanogpt_splits_it():
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 10
    train, valid, vocab = corpora.split_shakespeare(text)
    assert "".join(train) + "".join(valid) == text  # every character, newlines too, in order
    assert len(train) == int(0.9 * len(text))
    assert set(vocab.idx_to_token) == {"<unk>", *text}  # the vocab of the whole text


def test_shakespeare_is_found_verified_and_downloaded_on_loopback(served, tmp_path):  # noqa: F811
    root, url = served
    body = b"ROMEO:\nBut, soft! what light through yonder window breaks?\n" * 50
    (root / "input.txt").write_bytes(body)
    sha1 = hashlib.sha1(body).hexdigest()
    cache = tmp_path / "cache"
    path = sources.find_shakespeare(data_dir=str(cache), url=f"{url}/input.txt", sha1=sha1)
    assert path == cache / "tinyshakespeare.txt" and path.read_bytes() == body
    assert sources.find_shakespeare(data_dir=str(cache), url="http://127.0.0.1:9/x", sha1=sha1)
    with pytest.raises(sources.DataError, match="SHA-1") as e:  # a wrong file is not used
        sources.find_shakespeare(data_dir=str(tmp_path / "other"), url=f"{url}/input.txt")
    assert "\n" not in str(e.value) and not (tmp_path / "other").exists()


def test_shakespeare_offline_is_one_line_with_how_to_fix(tmp_path):
    r = run_main(BOOK, "--config.corpus=shakespeare", f"--config.data_dir={tmp_path / 'd'}",
                 "--config.data_url=http://127.0.0.1:9/input.txt",
                 f"--workdir={tmp_path / 'w'}")  # fmt: skip
    assert_one_error(r, 1, "tinyshakespeare.txt", "is missing", "RNNLM_JAX_DATA_DIR")
    assert not (tmp_path / "d").exists() and not (tmp_path / "w").exists()


def test_the_real_tiny_shakespeare_facts():
    path = real_data("tinyshakespeare.txt")
    assert sources.sha1_of(path) == sources.SHAKESPEARE_SHA1
    config = fields.defaults()
    config.corpus, config.data_dir, config.max_tokens = "shakespeare", str(path.parent), -1
    corpus = corpora.load(config)
    assert len(corpus.vocab) == 65 + 1  # nanoGPT's 65 characters, and <unk>
    assert (len(corpus.train), len(corpus.valid)) == (1_003_854, 111_540)  # as nanoGPT's
    assert corpus.test is None and np.all(corpus.train != corpus.vocab.unk)
    assert "".join(corpus.vocab.to_tokens(corpus.train[:14])) == "First Citizen:"


def test_a_run_on_the_real_tiny_shakespeare(tmp_path):
    path = real_data("tinyshakespeare.txt")
    r = run_main(BOOK, "--config.corpus=shakespeare", f"--config.data_dir={path.parent}",
                 "--config.num_epochs=1", "--config.prefixes=('ROMEO:',)",
                 f"--workdir={tmp_path / 'w'}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("tiny Shakespeare: 2,000 of 1,003,854 (config.max_tokens; ")
    assert "validation perplexity" in final_lines(r)[0]
    assert final_lines(r)[1].startswith("ROMEO:")
