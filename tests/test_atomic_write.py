"""Tests of ``write_atomically`` (a file replaced whole, with what each writer asks of it)
and of ``remove_all_left_behind`` (the temp files a crash left, swept at start-up)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskforce._atomic_write import remove_all_left_behind, write_atomically


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


_LEFTOVER = re.compile(r"\.(?P<id>[a-z]+)\.[0-9a-f]{4}\.tmp")


def _leftover(folder: Path, name: str, size: int, age: float = 60.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"x" * size)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_all_left_behind_in_a_folder_are_removed_and_counted(tmp_path: Path) -> None:
    """Every regular file whose whole name matches goes, with its bytes counted; another
    name, a FIFO or a folder of such a name, and one a live write holds locked stay."""
    _leftover(tmp_path, ".a.00ff.tmp", 10)
    _leftover(tmp_path, ".b.1234.tmp", 5)
    kept = [
        _leftover(tmp_path, ".a.00ff.tmp.json", 1),
        _leftover(tmp_path, "a.00ff.tmp", 1),
        _leftover(tmp_path, ".c.9999.tmp", 7),
    ]
    os.mkfifo(tmp_path / ".d.0000.tmp")
    (tmp_path / ".e.0000.tmp").mkdir()
    with open(kept[-1], "rb") as live:
        fcntl.flock(live.fileno(), fcntl.LOCK_EX)
        assert (2, 15) == remove_all_left_behind(tmp_path, _LEFTOVER)
    left = {".a.00ff.tmp.json", "a.00ff.tmp", ".c.9999.tmp", ".d.0000.tmp", ".e.0000.tmp"}
    assert left == set(os.listdir(tmp_path))
    assert (0, 0) == remove_all_left_behind(tmp_path / "absent", _LEFTOVER)


def test_hold_says_which_may_go_and_one_it_fails_on_is_left(tmp_path: Path) -> None:
    """``hold`` gets the name's match and is held while the file is looked at: one it
    yields false for, or raises ``OSError`` over, stays."""
    for name in (".go.0001.tmp", ".stay.0002.tmp", ".fail.0003.tmp"):
        _leftover(tmp_path, name, 3)
    held: list[str] = []

    @contextlib.contextmanager
    def hold(match: re.Match[str]) -> Iterator[bool]:
        if match["id"] == "fail":
            raise PermissionError("no lock")
        held.append(match["id"])
        yield match["id"] == "go"

    assert (1, 3) == remove_all_left_behind(tmp_path, _LEFTOVER, hold=hold)
    assert {"go", "stay"} == set(held)
    assert {".stay.0002.tmp", ".fail.0003.tmp"} == set(os.listdir(tmp_path))


def test_entries_are_acted_on_relative_to_their_folder_and_fresh_ones_stay(
    tmp_path: Path,
) -> None:
    """Given a folder's descriptor and names, it acts inside that folder, never through a
    symlink of such a name; a file written after ``fresh`` stays."""
    folder = tmp_path / "f"
    _leftover(folder, ".old.0001.tmp", 4)
    _leftover(folder, ".new.0002.tmp", 6, age=0.0)
    outside = _leftover(tmp_path, "target", 8)
    os.symlink(outside, folder / ".link.0003.tmp")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = [(fd, name) for name in sorted(os.listdir(folder))]
        assert (1, 4) == remove_all_left_behind(names, _LEFTOVER, fresh=time.time() - 30)
    finally:
        os.close(fd)
    assert {".new.0002.tmp", ".link.0003.tmp"} == set(os.listdir(folder))
    assert outside.exists()
