"""Checkpoint files: the download cache, downloads, verification and reading.

Downloads go to :func:`cache_dir` (``$SELA_CACHE``, default ``~/.cache/sela-edu``) with
``torch.hub.download_url_to_file`` (progress bar). Verification, as far as the release allows: the
authors publish no checksums, so the kit checks (1) that a zip archive's every member passes its CRC-32
check (``pretrained.zip``, and every checkpoint written by torch >= 1.6, which is itself a zip), (2) that
the file loads and holds the expected keys and shapes, and (3) on later loads, that the file still has
the SHA-256 recorded next to it at its first successful load (``<file>.sha256``), so a cache damaged
later is caught. Offline (``$SELA_OFFLINE=1``, ``offline=True``, or no network), a missing file is
refused with its URL and the path to put it at.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from sela_edu.files import writing_whole
from sela_edu.apps.pretrained.registry import PretrainedError, released_spec


def cache_dir() -> Path:
    """Where downloads go: ``$SELA_CACHE``, else ``~/.cache/sela-edu``."""
    env = os.environ.get("SELA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sela-edu"


def is_offline(offline: bool | None) -> bool:
    """``offline`` when given, else ``$SELA_OFFLINE`` (1, true, yes): never download."""
    if offline is not None:
        return bool(offline)
    return os.environ.get("SELA_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def missing_file_error(what: str, url: str, target: Path, cause: str = "",
                       where: str = "set $SELA_CACHE to the folder that holds it") -> FileNotFoundError:
    """The error for a file that is not here and cannot be downloaded: its URL and where to put it."""
    why = f" ({cause})" if cause else ""
    return FileNotFoundError(
        f"{what} is not in the cache and cannot be downloaded here{why}. On a machine with internet, "
        f"download {url} and put it at {target} (or {where}).")


def download_to(url: str, target: Path, progress: bool) -> None:
    """Download ``url`` to ``target`` whole or not at all: an interrupted download leaves no file."""
    with writing_whole(target) as partial:
        torch.hub.download_url_to_file(url, str(partial), progress=progress)


def check_zip(path: Path) -> None:
    """Every member of a zip archive passes its CRC-32 check; PretrainedError (naming the file) if not."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # BadZipFile, OSError, EOFError, UnicodeDecodeError... depending on the damage
        raise PretrainedError(f"{path} is not a readable zip archive ({type(exc).__name__}: {exc}): the file is truncated or "
                              "corrupt; delete it and download again") from exc
    if bad is not None:
        raise PretrainedError(f"{path}: member {bad} fails its CRC check: the file is corrupt; delete it and "
                              "download again")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str | None = None) -> str:
    """Check what can be checked: zip CRCs (torch >= 1.6 checkpoints are zips), a published SHA-256
    when there is one, else the SHA-256 recorded at the first successful load. Returns the SHA-256."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        check_zip(path)
    digest = _sha256(path)
    recorded = path.with_name(path.name + ".sha256")
    want = expected_sha256 or (recorded.read_text().split()[0] if recorded.is_file() else None)
    if want and digest != want:
        raise PretrainedError(f"{path} has SHA-256 {digest}, expected {want}: the file changed or is corrupt; "
                              "delete it (and its .sha256) and download again")
    return digest


def record_sha(path: Path, digest: str) -> None:
    """Write ``<file>.sha256`` after the first successful load (later loads check against it)."""
    recorded = path.with_name(path.name + ".sha256")
    if not recorded.is_file():
        recorded.write_text(f"{digest}  {path.name}\n")


def read_torch_file(path: str | os.PathLike, *, trust: bool = False) -> Any:
    """``torch.load`` on the CPU with a clear error for truncated or corrupt files.

    ``weights_only=True`` by default (tensors, dicts, numbers, strings: what the released files hold);
    ``trust=True`` allows arbitrary pickled objects, for files from a source you trust."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise PretrainedError(f"{path} is empty: an interrupted download? Delete it and download again")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except OSError:  # a disk or permission failure says nothing about the file's content: not "corrupt"
        raise
    except Exception as exc:  # RuntimeError, EOFError, UnpicklingError... depending on the damage
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise PretrainedError(f"{path} holds Python objects beyond tensors ({text}); if you trust its source, "
                                  "pass trust=True") from exc
        raise PretrainedError(f"{path} cannot be read ({text}): the file is truncated or corrupt; delete it "
                              "and download it again") from exc


def fetch(name: str, *, cache: str | os.PathLike | None = None, offline: bool | None = None,
          progress: bool = True) -> Path:
    """The local path of released checkpoint ``name``, downloading (and unpacking) it if needed."""
    spec = released_spec(name)
    folder = Path(cache) if cache is not None else cache_dir()
    target = folder / spec.filename
    if target.is_file():
        return target
    if spec.in_archive:
        archive = folder / "pretrained.zip"
        if not archive.is_file():
            if is_offline(offline):
                raise missing_file_error(f"{spec.filename} (inside pretrained.zip)", spec.url, archive, "offline")
            try:
                download_to(spec.url, archive, progress)
            except OSError as exc:
                raise missing_file_error(f"{spec.filename} (inside pretrained.zip)", spec.url, archive,
                                         str(exc)) from exc
        check_zip(archive)
        with zipfile.ZipFile(archive) as zf:
            members = {Path(m).name: m for m in zf.namelist() if not m.endswith("/")}
            if spec.filename not in members:
                raise PretrainedError(f"{archive} holds no {spec.filename} (it holds {sorted(members)}); the "
                                      "archive's contents are undocumented, so this name may not exist")
            with writing_whole(target) as partial, zf.open(members[spec.filename]) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        return target
    if is_offline(offline):
        raise missing_file_error(spec.filename, spec.url, target, "offline")
    try:
        download_to(spec.url, target, progress)
    except OSError as exc:
        raise missing_file_error(spec.filename, spec.url, target, str(exc)) from exc
    return target

