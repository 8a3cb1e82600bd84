"""The workspace the file tools are confined to, one folder per session.

Inside a mission, a tool's paths are taken relative to the session's own
folder ``<workspace_dir>/<folder name of the session id>`` and must resolve
inside it, so one session cannot reach another's files. Outside a mission (a
tool called directly from Python) the whole workspace directory is the root.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from taskforce.core.interfaces import current_session_id

__all__ = [
    "Failure",
    "Location",
    "PathRefused",
    "Workspace",
    "is_session_folder_name",
    "open_folder",
    "session_folder_name",
]

# Characters kept as they are in a folder name; everything else is %-escaped.
# '.' is escaped too, so no name can be '.', '..' or a hidden file.
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# Well under NAME_MAX (255 bytes) on every common filesystem.
_MAX_NAME = 120
# Linux's PATH_MAX, counting the final NUL: a longer path cannot be reached by path.
_PATH_MAX = 4096
# A folder opened only to act in it (O_PATH: no read permission needed), never a symlink.
_FOLDER_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW


class PathRefused(Exception):
    """The path resolves outside the workspace."""


class Failure(Exception):
    """A file action that failed; the message completes the sentence ``path '<path>' ...``."""

    def __init__(self, message: str, error_type: str) -> None:
        self.error_type = error_type
        super().__init__(message)


def _escape(match: re.Match[str]) -> str:
    # surrogatepass: a lone surrogate (from a JSON escape) still maps to distinct bytes.
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))


def session_folder_name(session_id: str) -> str:
    """Map a session id to a safe folder name; distinct ids give distinct names.

    ``A-Z a-z 0-9 _ -`` are kept and every other character becomes ``%XX`` per
    UTF-8 byte, so the name holds no separator or dot. A name longer than 120
    characters is replaced by ``~`` and the SHA-256 of the id; ``~`` never
    appears in an escaped name, so the two forms cannot collide.

    Args:
        session_id: The session id, any non-empty string.

    Returns:
        A folder name of 1 to 120 characters from ``A-Z a-z 0-9 _ - % ~``.

    Raises:
        ValueError: ``session_id`` is empty.
    """
    if not session_id:
        raise ValueError("a session id must not be empty")
    name = _UNSAFE.sub(_escape, session_id)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()
        name = f"~{digest}"
    return name


# What session_folder_name makes: kept characters and %XX escapes, or ~ and a SHA-256.
_SESSION_NAME = re.compile(r"(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+|~[0-9a-f]{64}")


def is_session_folder_name(name: str) -> bool:
    """Whether ``name`` is one :func:`session_folder_name` can make."""
    return len(name) <= _MAX_NAME and _SESSION_NAME.fullmatch(name) is not None


class Workspace:
    """The directory the file tools are confined to; created on first use.

    Args:
        root: The workspace directory. Each session works in a folder of its own
            below it; outside a mission relative paths are taken relative to it.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def current_root(self) -> Path:
        """Return the folder the running code's paths are confined to (not created).

        Returns:
            The running mission's session folder, or the workspace root outside a mission.
        """
        session_id = current_session_id()
        if session_id is None:
            return self.root
        return self.root / session_folder_name(session_id)

    def resolve(self, raw: str, root: Path) -> Path:
        """Resolve a tool's path argument to a real path inside ``root``.

        Runs blocking filesystem calls: call it from a worker thread.

        Args:
            raw: The path as the model gave it, relative or absolute.
            root: What :meth:`current_root` returned in the caller's context.

        Returns:
            The resolved path, with every symlink followed.

        Raises:
            PathRefused: The resolved path is outside ``root``.
            Failure: The path runs into a symlink loop.
        """
        root.mkdir(parents=True, exist_ok=True)
        real_root = root.resolve(strict=True)
        # Non-strict resolution still follows every symlink that exists, including a
        # dangling final one, so a path that does not exist yet is checked as well.
        try:
            resolved = (real_root / raw).resolve()
        except (RuntimeError, OSError) as exc:
            # Python 3.11 and 3.12 raise here on a symlink loop (RuntimeError, or OSError ELOOP).
            if isinstance(exc, OSError) and exc.errno != errno.ELOOP:
                raise
            raise Failure("is a symlink loop", "SymlinkLoop") from exc
        if _runs_into_a_loop(resolved):
            # Python 3.13 hands the path back with the loop left in it instead.
            raise Failure("is a symlink loop", "SymlinkLoop")
        if not resolved.is_relative_to(real_root):
            raise PathRefused(raw)
        return resolved

    def locate(self, raw: str, root: Path) -> Location:
        """Resolve a tool's path argument as :meth:`resolve` does, and open its folder.

        The folders on the way are opened one by one from ``root``, each without
        following a symlink, so one swapped in since the path was resolved (by another
        process on the workspace) is refused, not followed out of it. Runs blocking
        filesystem calls: call it from a worker thread.

        Args:
            raw: The path as the model gave it, relative or absolute.
            root: What :meth:`current_root` returned in the caller's context.

        Returns:
            The open folder, the folders after it yet to be made, and the last name.
            Close it.

        Raises:
            PathRefused: The resolved path is outside ``root``, or a folder on the way
                has become a symlink.
            Failure: The path runs into a symlink loop.
            OSError: ``ENAMETOOLONG`` for a resolved path of ``PATH_MAX`` bytes or
                more (which could be made folder by folder, but not reached by path).
        """
        resolved = self.resolve(raw, root)
        real_root = root.resolve(strict=True)
        if not resolved.is_relative_to(real_root):  # the root itself was moved meanwhile
            raise PathRefused(raw)
        if len(os.fsencode(resolved)) >= _PATH_MAX:
            raise OSError(errno.ENAMETOOLONG, "path too long", str(resolved))
        *folders, name = resolved.relative_to(real_root).parts or (".",)
        location = Location(open_folder(real_root), [], name)
        try:
            for index, part in enumerate(folders):
                try:
                    folder = open_folder(part, location.folder)
                except FileNotFoundError:
                    location.missing = folders[index:]
                    break
                os.close(location.folder)
                location.folder = folder
        except BaseException:
            location.close()
            raise
        return location


def open_folder(path: Path | str, dir_fd: int | None = None, flags: int = _FOLDER_FLAGS) -> int:
    """Open a folder, refusing a symlink (swapped in after the path was checked).

    Args:
        path: The folder, relative to ``dir_fd`` if given.
        dir_fd: A descriptor of the folder ``path`` is in.
        flags: The flags to open it with; the default opens it for use as a ``dir_fd``.
            They must hold ``O_DIRECTORY`` and ``O_NOFOLLOW``.

    Returns:
        The descriptor.

    Raises:
        PathRefused: ``path`` is a symlink.
        NotADirectoryError: ``path`` is something else than a folder.
    """
    try:
        return os.open(path, flags, dir_fd=dir_fd)
    except NotADirectoryError:
        if stat.S_ISLNK(os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise PathRefused(str(path)) from None
        raise


@dataclass(slots=True)
class Location:
    """Where a file tool acts: an open folder of the workspace and a name in it.

    Attributes:
        folder: A descriptor of the deepest folder on the way that exists.
        missing: The folders after it that do not exist yet, outermost first.
        name: The last part of the path (``"."`` for the root itself), in the folder
            ``missing`` ends in.
    """

    folder: int
    missing: list[str]
    name: str

    def make_folders(self) -> None:
        """Make the missing folders, each opened (not followed) as it is made."""
        while self.missing:
            part = self.missing[0]
            with contextlib.suppress(FileExistsError):  # made meanwhile: it is opened as found
                os.mkdir(part, dir_fd=self.folder)
            folder = open_folder(part, self.folder)
            os.close(self.folder)
            self.folder = folder
            del self.missing[0]

    def close(self) -> None:
        """Close the folder's descriptor."""
        os.close(self.folder)


def _runs_into_a_loop(path: Path) -> bool:
    """Whether looking ``path`` up fails on a symlink loop (``ELOOP``); any other outcome,
    a missing file among them, is for the caller to meet when it opens the path."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False
