"""Tests of ``write_atomically``: a file replaced whole, with what each writer asks of it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskforce._atomic_write import write_atomically


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _locked_by_another(path: Path) -> bool:
    with open(path, "rb") as other:
        try:
            fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def test_replaces_the_file_whole_and_leaves_nothing_else(tmp_path: Path) -> None:
    """The target holds the new content; the folder holds the target alone."""
    target = tmp_path / "f.json"
    target.write_text("old")
    write_atomically(target, b"new", prefix=".f.")
    assert ("new", ["f.json"]) == (target.read_text(), os.listdir(tmp_path))


def test_the_new_file_has_the_mode_less_the_umask(tmp_path: Path) -> None:
    """``mode`` is the new file's, as os.open gives it: less the umask."""
    with _umask(0o027):
        write_atomically(tmp_path / "a", b"a", prefix=".a.")
        write_atomically(tmp_path / "b", b"b", prefix=".b.", mode=0o644)
    modes = [stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in ("a", "b")]
    assert [0o600, 0o640] == modes


@pytest.mark.parametrize("failing", ["prepare", "write", "replace"])
def test_a_failure_leaves_the_target_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Whatever fails, the error comes through, the target keeps its content and the
    new file is gone."""
    target = tmp_path / "f"
    target.write_text("old")

    def fail(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    if failing != "prepare":
        monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(
            target, b"new", prefix=".f.", prepare=fail if failing == "prepare" else None
        )
    monkeypatch.undo()
    assert ("old", ["f"]) == (target.read_text(), os.listdir(tmp_path))


def test_a_durable_file_is_fsynced_and_renamed_while_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durable: fsynced before the rename, and renamed while a lock ``prepare`` took on it
    still holds (the state store's start-up clean-up leaves a locked temp file alone)."""
    seen: list[tuple[str, bool]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        seen.append(("fsync", True))
        fsync(fd)

    def recording_replace(source: str, target: str) -> None:
        seen.append(("replace", _locked_by_another(Path(source))))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    lock = lambda fd: fcntl.flock(fd, fcntl.LOCK_EX)  # noqa: E731
    write_atomically(tmp_path / "f", b"x", prefix=".f.", prepare=lock)
    write_atomically(tmp_path / "g", b"x", prefix=".g.", prepare=lock, durable=False)
    assert [("fsync", True), ("replace", True), ("replace", False)] == seen
