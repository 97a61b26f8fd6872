"""The research corpora, on small files written in each one's format: enwik8 trains by
steps, evaluates by steps, checkpoints, resumes bit-identically mid-epoch, samples and
scores from its workdir and reports bits per byte; WikiText trains on words and on
sentencepiece subwords (perplexity per word too); downloads through a loopback server are
verified, unpacked and refused (both checksums named) when wrong; bad values are one line.
"""

import hashlib
import http.server
import io
import threading
import zipfile

import numpy as np
import pytest
from conftest import ROOT
from test_loop import check_resumes, records, saved
from test_main import run_main
from test_robustness import assert_one_error

from rnnlm_jax.data import archives, corpora
from rnnlm_jax.data.sources import DataError

ENWIK8 = f"--config={ROOT / 'configs' / 'enwik8.py'}:smoke"
WIKITEXT = f"--config={ROOT / 'configs' / 'wikitext.py'}"
_SYLLABLES = np.array("ka ri to mo na se lu vi da pe qua ster ing tion al".split())
WORDS = np.array("the of and a in to was is for on as with by he at from his an it were".split()
                 + ["".join(np.random.default_rng(i).choice(_SYLLABLES, 1 + i % 3))
                    for i in range(300)])  # fmt: skip


def wiki_text(n_lines: int, seed: int) -> str:
    """Lines in WikiText's shape: headings, paragraphs of space-separated tokens."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n_lines):
        if i % 10 == 0:
            lines.append(f" = {' '.join(rng.choice(WORDS, 2))} = ")
        else:
            words = rng.choice(WORDS, int(rng.integers(5, 40)), p=None)
            lines.append(" " + " ".join(words) + " , " + " ".join(rng.choice(WORDS, 4)) + " . ")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def enwik8_dir(tmp_path_factory):
    """A data folder whose enwik8/enwik8 has enwik8's format: 100,000,000 bytes of
    XML-ish UTF-8 text (not the real file, which no test reads)."""
    root = tmp_path_factory.mktemp("data")
    page = ("<page>\n    <title>Caf\u00e9 \u20ac</title>\n    <text>" + wiki_text(30, 0)
            + "</text>\n  </page>\n").encode()  # fmt: skip
    (root / "enwik8").mkdir()
    with open(root / "enwik8" / "enwik8", "wb") as f:
        f.write((page * (100_000_000 // len(page) + 1))[:100_000_000])
    return root


@pytest.fixture(scope="module")
def enwik8_run(enwik8_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("enwik8") / "w"
    r = run_main(ENWIK8, f"--config.data_dir={enwik8_dir}", "--config.eval_tokens=400000",
                 f"--workdir={workdir}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return workdir, r


def test_enwik8_trains_by_steps_and_reports_bits_per_byte(enwik8_dir, enwik8_run):
    workdir, r = enwik8_run
    assert "enwik8 (90M / 5M / 5M bytes): 90,000,000 training bytes, 5,000,000 validation, " \
        "5,000,000 test, vocab 256" in r.stdout  # fmt: skip
    assert "config.train_steps=12 bounds the run" in r.stderr
    lines = records(workdir)
    steps = [x for x in lines if x.get("kind") == "step"]
    assert [x["step"] for x in steps] == [4, 8] and all("eval_loss" in x for x in steps)
    last = lines[-1]
    assert last["step"] == 12 and last["test_bits_per_token"] > 0
    assert last["test_streams"] == 4  # 5M test bytes: the batch's streams, as validation
    assert f"test {last['test_bits_per_token']:.4f} bits per byte" in r.stdout
    assert [m["step"] for m in saved(workdir)][-1] > 8  # checkpoints by step, and the end
    assert (enwik8_dir / "enwik8" / "enwik8.byte.ids").stat().st_size == 100_000_000
    # Sampling and scoring from the workdir alone.
    s = run_main(f"--workdir={workdir}", "--mode=sample", "--prefix=<page>", "--num_preds=10")
    assert s.returncode == 0 and s.stdout.startswith("<page>"), s.stderr
    s = run_main(f"--workdir={workdir}", "--mode=score", "--text=<title>Caf\u00e9</title>")
    assert s.returncode == 0 and "bits per byte" in s.stdout, s.stderr


def test_enwik8_resumes_bit_identically_mid_epoch(enwik8_dir, enwik8_run, tmp_path):
    args = [ENWIK8, f"--config.data_dir={enwik8_dir}", "--config.eval_tokens=400000"]
    out = check_resumes(args, enwik8_run[0], tmp_path, "SIGTERM",
                        lambda metas: any(m["position"] >= 4 for m in metas),
                        mid_epoch=True)  # fmt: skip
    assert "tokenizing" not in out  # the token file is read, not rebuilt


def write_wikitext(root, raw: bool):
    folder = root / ("wikitext-2-raw" if raw else "wikitext-2")
    folder.mkdir(parents=True)
    for split, n, seed in (("train", 600, 1), ("valid", 80, 2), ("test", 80, 3)):
        (folder / f"wiki.{split}.{'raw' if raw else 'tokens'}").write_text(wiki_text(n, seed))


def test_wikitext_words(tmp_path):
    write_wikitext(tmp_path / "data", raw=False)
    r = run_main(f"{WIKITEXT}:smoke", f"--config.data_dir={tmp_path / 'data'}",
                 f"--workdir={tmp_path / 'w'}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "wikitext2 (its train, valid, test files)" in r.stdout
    last = records(tmp_path / "w")[-1]
    assert last["test_perplexity"] > 1 and "test_word_perplexity" not in last


def test_wikitext_subwords_sample_and_score_from_the_workdir(tmp_path):
    write_wikitext(tmp_path / "data", raw=True)
    workdir = tmp_path / "w"
    r = run_main(f"{WIKITEXT}:subword,smoke", f"--config.data_dir={tmp_path / 'data'}",
                 f"--workdir={workdir}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    last = records(workdir)[-1]
    test = (tmp_path / "data" / "wikitext-2-raw" / "wiki.test.raw").read_text()
    words = len(test.split()) + test.count("\n")
    ids = np.fromfile(tmp_path / "data" / "wikitext-2-raw" / "wiki.train.raw.sentencepiece.ids",
                      np.uint8)  # fmt: skip
    assert len(ids) > 0
    # Perplexity per word: the total loss over the test text's word count.
    n_test = corpora.load(corpora.CorpusSpec(corpus="wikitext2_raw", token="sentencepiece",
                          vocab_size=120, data_dir=str(tmp_path / "data"))).test.size  # fmt: skip
    expected = np.exp(last["test_loss"] * n_test / words)
    assert last["test_word_perplexity"] == pytest.approx(expected, rel=1e-6)
    assert "perplexity per word" in r.stdout
    s = run_main(f"--workdir={workdir}", "--mode=sample", "--prefix=The", "--num_preds=8")
    assert s.returncode == 0 and s.stdout.startswith("The"), s.stderr
    s = run_main(f"--workdir={workdir}", "--mode=score", "--text=the time machine .")
    assert s.returncode == 0 and "sentencepiece tokens" in s.stdout, s.stderr


# ----------------------------------------------------------------------------
# Downloads and checks.


@pytest.fixture
def server(tmp_path):
    """A loopback server of `files` (name -> bytes); `lie` names files whose
    Content-Length it overstates (a truncated transfer)."""
    files, lie = {}, set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            name = self.path.lstrip("/")
            if name not in files:
                self.send_error(404)
                return
            body = files[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + (1000 if name in lie else 0)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield files, lie, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def zipped(members: dict) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in members.items():
            z.writestr(name, text)
    return out.getvalue()


@pytest.fixture
def wikitext_zip(monkeypatch):
    """WikiText-2's archive entry pointed at a zip of small files with its own MD5."""
    body = zipped({f"wikitext-2/wiki.{s}.tokens": wiki_text(40, i)
                   for i, s in enumerate(("train", "valid", "test"))})  # fmt: skip
    entry = archives.ARCHIVES["wikitext2"]
    md5 = hashlib.md5(body).hexdigest()
    monkeypatch.setitem(archives.ARCHIVES, "wikitext2",
                        archives.Archive(**{**entry.__dict__, "digest": ("md5", md5)}))  # fmt: skip
    return body


def test_a_named_corpus_is_downloaded_verified_and_unpacked(server, wikitext_zip, tmp_path):
    files, _, url = server
    files["wikitext-2-v1.zip"] = wikitext_zip
    paths = archives.find("wikitext2", str(tmp_path / "d"), f"{url}/wikitext-2-v1.zip")
    names = [f"wiki.{s}.tokens" for s in ("test", "train", "valid")]
    assert sorted(p.name for p in paths.values()) == names
    assert paths["train"].read_text() == wiki_text(40, 0)
    folder = tmp_path / "d" / "wikitext-2"
    assert sorted(p.name for p in folder.iterdir()) == [*names, "wikitext-2-v1.zip"]
    files.clear()  # found again without the server
    assert archives.find("wikitext2", str(tmp_path / "d"), f"{url}/wikitext-2-v1.zip") == paths


def test_a_wrong_or_truncated_download_leaves_nothing(server, wikitext_zip, tmp_path):
    files, lie, url = server
    files["wikitext-2-v1.zip"] = wikitext_zip[:-10] + b"0123456789"
    with pytest.raises(DataError, match="MD5 .* expected"):
        archives.find("wikitext2", str(tmp_path / "d"), f"{url}/wikitext-2-v1.zip")
    files["wikitext-2-v1.zip"] = wikitext_zip
    lie.add("wikitext-2-v1.zip")
    with pytest.raises(DataError, match="truncated"):
        archives.find("wikitext2", str(tmp_path / "d"), f"{url}/wikitext-2-v1.zip")
    assert not (tmp_path / "d").exists()


def test_a_zip_with_the_wrong_checksum_names_both(tmp_path):
    folder = tmp_path / "d" / "wikitext-2"
    folder.mkdir(parents=True)
    (folder / "wikitext-2-v1.zip").write_bytes(b"not the zip")
    r = run_main(f"{WIKITEXT}:smoke", f"--config.data_dir={tmp_path / 'd'}",
                 f"--workdir={tmp_path / 'w'}")  # fmt: skip
    want = archives.ARCHIVES["wikitext2"].digest[1]  # the published one (another process)
    assert_one_error(r, 1, "wikitext-2-v1.zip", hashlib.md5(b"not the zip").hexdigest(), want,
                     "delete it")  # fmt: skip
    assert not (tmp_path / "w").exists()


def test_text8_and_enwik8_files_are_checked(tmp_path):
    (tmp_path / "text8").mkdir()
    (tmp_path / "text8" / "text8").write_bytes(b"Not Lowercase " * 10)
    with pytest.raises(DataError, match="100,000,000"):
        archives.find("text8", str(tmp_path), "http://127.0.0.1:9/none.zip")
    (tmp_path / "enwik8").mkdir()
    (tmp_path / "enwik8" / "enwik8").write_bytes(b"x" * 1000)
    with pytest.raises(DataError, match="1,000 bytes, not the 100,000,000 of enwik8"):
        archives.find("enwik8", str(tmp_path), "http://127.0.0.1:9/none.zip")


# ----------------------------------------------------------------------------
# Bad values: one line each.


def test_bad_values_of_the_step_clock_and_the_tokenizers(enwik8_dir, tmp_path):
    d = f"--config.data_dir={enwik8_dir}"
    r = run_main(ENWIK8, d, "--config.eval_tokens=6000000", f"--workdir={tmp_path / 'a'}")
    assert_one_error(r, 2, "eval_tokens=6,000,000", "5,000,000")
    r = run_main(ENWIK8, d, "--config.token=char", f"--workdir={tmp_path / 'b'}")
    assert_one_error(r, 1, "enwik8", "byte")
    write_wikitext(tmp_path / "data", raw=True)
    w = f"--config.data_dir={tmp_path / 'data'}"
    r = run_main(f"{WIKITEXT}:subword,smoke", w, "--config.vocab_size=50000",
                 f"--workdir={tmp_path / 'c'}")  # fmt: skip
    assert_one_error(r, 1, "sentencepiece cannot learn 50000", "Vocabulary size too high")
    r = run_main(f"{WIKITEXT}:subword,smoke", w, "--config.vocab_size=10",
                 f"--workdir={tmp_path / 'e'}")  # fmt: skip
    assert_one_error(r, 1, "sentencepiece cannot learn 10")
    r = run_main(f"{WIKITEXT}:subword,smoke", w, "--config.vocab_size=0",
                 f"--workdir={tmp_path / 'f'}")  # fmt: skip
    assert_one_error(r, 2, "vocab_size > 0")
    r = run_main(f"--config={ROOT / 'configs' / 'timemachine.py'}:smoke", "--config.token=byte",
                 f"--workdir={tmp_path / 'g'}")  # fmt: skip
    assert_one_error(r, 2, "token='byte'", "token files")
    for name in "acefg":
        assert not (tmp_path / name).exists()


def test_train_steps_wins_over_num_epochs_and_says_so(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(wiki_text(200, 5))
    r = run_main(f"--config={ROOT / 'configs' / 'timemachine.py'}:smoke", "--config.corpus=text",
                 f"--config.text_files={text}", "--config.max_tokens=-1",
                 "--config.train_steps=7", "--config.num_epochs=50",
                 f"--workdir={tmp_path / 'w'}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "config.train_steps=7 bounds the run (config.num_epochs is not read)" in r.stderr
    assert records(tmp_path / "w")[-1]["step"] == 7


def test_text8_is_split_by_bytes_as_characters(tmp_path):
    (tmp_path / "text8").mkdir()
    words = b" anarchism originated as a term of abuse first used against early working class"
    with open(tmp_path / "text8" / "text8", "wb") as f:
        f.write((words * (100_000_000 // len(words) + 1))[:100_000_000])
    corpus = corpora.load(corpora.CorpusSpec(corpus="text8", token="char", max_tokens=-1,
                                             data_dir=str(tmp_path)))  # fmt: skip
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (
        90_000_000, 5_000_000, 5_000_000)  # fmt: skip
    expected = (words * 2)[90_000_000 % len(words) :][:10].decode()
    assert corpus.vocab.decode(corpus.valid[:10]) == expected
    assert isinstance(corpus.train, np.memmap) and corpus.train.dtype == np.uint8
