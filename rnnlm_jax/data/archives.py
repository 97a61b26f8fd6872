"""The research corpora that come as zip archives: enwik8, text8, WikiText-2 and
WikiText-103 (word-level `.tokens` files and the raw ones), found in a data folder or
downloaded there, verified, and unpacked (atomically, like every download here).

Where each checksum comes from (never from memory):
  enwik8.zip        SHA-256 and size from Hugging Face `datasets`'
                    `datasets/enwik8/dataset_infos.json`; the unpacked `enwik8` is the first
                    100,000,000 bytes of the 2006 English Wikipedia dump (the Hutter Prize,
                    http://prize.hutter1.net/), checked by its size.
  text8.zip         no checksum is published (Mahoney's page, mattmahoney.net/dc/
                    textdata.html, gives the recipe and the size): the unpacked `text8` is
                    checked by its size (100,000,000 bytes) and its alphabet (a-z and space).
  wikitext-2-v1.zip, wikitext-103-v1.zip
                    MD5 from torchtext's dataset definitions (`torchtext/datasets/
                    wikitext2.py`, `wikitext103.py`).
  wikitext-*-raw-v1.zip
                    no checksum is published: the three files are checked to be there and
                    non-empty (and UTF-8 when tokenized).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from rnnlm_jax.data import sources
from rnnlm_jax.data.sources import DATA_DIR_ENV, DataError

SALESFORCE = "https://s3.amazonaws.com/research.metamind.io/wikitext/"


@dataclasses.dataclass(frozen=True)
class Archive:
    """A named corpus's zip: where it comes from, its checksum (`(algorithm, hex)` or None
    where none is published), and the files it holds (`{key: member path}`, unpacked into
    `<data folder>/<folder>/<file name>`)."""

    name: str
    url: str
    digest: tuple[str, str] | None
    cited: str
    members: dict[str, str]
    folder: str
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    alphabet: bytes | None = None  # every byte the unpacked files may hold

    @property
    def zip_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _wikitext(n: str, raw: bool, md5: str | None) -> Archive:
    folder = f"wikitext-{n}" + ("-raw" if raw else "")
    ext = "raw" if raw else "tokens"
    return Archive(
        name=f"wikitext{n}" + ("_raw" if raw else ""),
        url=f"{SALESFORCE}wikitext-{n}{'-raw' if raw else ''}-v1.zip",
        digest=("md5", md5) if md5 else None,
        cited="torchtext's dataset definitions" if md5 else "none published: files checked",
        members={s: f"{folder}/wiki.{s}.{ext}" for s in ("train", "valid", "test")},
        folder=folder,
    )


ARCHIVES: dict[str, Archive] = {
    a.name: a
    for a in (
        Archive(
            "enwik8",
            "http://mattmahoney.net/dc/enwik8.zip",
            ("sha256", "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc"),
            "Hugging Face datasets' enwik8 dataset_infos.json",
            {"all": "enwik8"},
            "enwik8",
            sizes={"all": 100_000_000},
        ),
        Archive(
            "text8",
            "http://mattmahoney.net/dc/text8.zip",
            None,
            "none published: size and alphabet checked",
            {"all": "text8"},
            "text8",
            sizes={"all": 100_000_000},
            alphabet=b" abcdefghijklmnopqrstuvwxyz",
        ),
        _wikitext("2", False, "542ccefacc6c27f945fb54453812b3cd"),
        _wikitext("103", False, "9ddaacaf6af0710eda8c456decff7832"),
        _wikitext("2", True, None),
        _wikitext("103", True, None),
    )
}

# enwik8 and text8: the first 90,000,000 bytes train, the next 5,000,000 validate, the last
# 5,000,000 test (Mikolov et al. 2012's split, as Merity et al.'s and Al-Rfou et al.'s).
BYTE_SPLITS = {"train": (0, 90_000_000), "valid": (90_000_000, 95_000_000),
               "test": (95_000_000, 100_000_000)}  # fmt: skip


def find(name: str, data_dir: str = "", url: str = "", timeout: float = 30.0) -> dict[str, Path]:
    """The verified files of corpus `name` (`{key: path}`: `all` for enwik8 and text8,
    `train` / `valid` / `test` for WikiText) in `<data folder>/<folder>/`; when missing,
    its zip is downloaded there from `url` (default: the corpus's own address), verified
    and unpacked. A zip already there is verified before it is used.

    Raises:
      DataError: one line: what is missing or wrong (both checksums), and what to do.
    """
    archive = ARCHIVES[name]
    folder = sources.data_dir_of(data_dir) / archive.folder
    paths = {k: folder / Path(m).name for k, m in archive.members.items()}
    problem = _check_files(archive, paths)
    if problem is None:
        return paths
    zip_path = folder / archive.zip_name
    if zip_path.is_file():
        _verify_zip(archive, zip_path)
    else:
        url = url or archive.url
        created = sources._missing_parents(zip_path)
        algorithm, want = archive.digest or ("sha1", None)  # no digest: the files are checked
        reason = sources._fetch(url, zip_path, want, timeout, algorithm)
        if reason:
            sources.remove_empty(created)
            raise DataError(
                f"{archive.name}: {problem}, and {archive.zip_name} cannot be downloaded from "
                f"{url} ({reason}); put {archive.zip_name} (or its unpacked files) into "
                f"{folder}, or set ${DATA_DIR_ENV} to a folder whose {archive.folder}/ holds "
                "them"
            )
    _unpack(archive, zip_path, paths)
    problem = _check_files(archive, paths)
    if problem:
        raise DataError(f"{archive.name}: {zip_path} unpacked, but {problem}")
    return paths


def _check_files(archive: Archive, paths: dict[str, Path]) -> str | None:
    """Why the unpacked files are not the corpus's (None: they are)."""
    for key, path in paths.items():
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        want = archive.sizes.get(key)
        if want is not None and size != want:
            return f"{path} has {size:,} bytes, not the {want:,} of {archive.name}"
        if size == 0:
            return f"{path} is empty"
        if archive.alphabet is not None:
            with open(path, "rb") as f:
                head = f.read(1 << 20)
            bad = set(head) - set(archive.alphabet)
            if bad:
                return (
                    f"{path} holds bytes other than {archive.name}'s lowercase letters and "
                    f"spaces (e.g. {bytes([min(bad)])!r})"
                )
    return None


def _verify_zip(archive: Archive, zip_path: Path) -> None:
    if archive.digest is None:
        return
    algorithm, want = archive.digest
    got = sources.digest_of(zip_path, algorithm)
    if got != want:
        raise DataError(
            f"{zip_path} has {algorithm.upper()} {got}, but {archive.name}'s is {want} "
            f"({archive.cited}): it is damaged or another file; delete it to download it "
            f"again from {archive.url}"
        )


def _unpack(archive: Archive, zip_path: Path, paths: dict[str, Path]) -> None:
    """Unpacks the archive's members into `paths`, each through a temporary file."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            for key, member in archive.members.items():
                dest = paths[key]
                fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
                try:
                    with os.fdopen(fd, "wb") as out, z.open(member) as src:
                        shutil.copyfileobj(src, out, 1 << 22)
                    os.replace(tmp, dest)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
    except KeyError as e:
        raise DataError(f"{zip_path} does not hold {e.args[0]}: is it {archive.name}'s?") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{zip_path} cannot be unpacked ({e}); delete it and run again") from None
