"""The Prometheus ``file_sd`` targets file: every worker's metrics endpoint with a ``worker`` label.

The file is always replaced whole (written beside itself, then renamed), so
Prometheus never reads half a file. Every writer updates it under an exclusive
``flock`` on a ``.lock`` file beside it and changes only its own entries: a
worker of uvicorn or gunicorn its one entry, the supervisor of ``taskforce serve``
its workers', each marked with the service that listed it (:data:`SERVICE_LABEL`).
Several services (replicas on one machine) can share one file. Whatever else is in
the file (a group written by hand, of any shape) is kept as it is; a file that is
not a JSON list at all is not written over. A new file a crash left beside it (between
its write and its rename) is removed by the next write, under the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from taskforce._atomic_write import remove_all_left_behind, write_atomically
from taskforce.api._listener import bound_socket

__all__ = [
    "PATH_LABEL",
    "SERVICE_LABEL",
    "advertised_host",
    "register_target",
    "replace_own_targets",
    "report_failure",
    "service_name",
    "unregister_target",
]

_LOG = structlog.get_logger("taskforce.api")
#: The label that names the service an entry is of. Prometheus drops labels starting
#: with ``__`` once a target is discovered: no series carries it.
SERVICE_LABEL = "__meta_taskforce_service"
#: The label that tells Prometheus the path to scrape an entry at, when it is not its
#: default: a discovered target's own ``__metrics_path__`` wins over the job's
#: ``metrics_path``, so a job without one scrapes a ``metrics.path`` of the service's own.
PATH_LABEL = "__metrics_path__"
#: The path Prometheus scrapes a target at unless told otherwise (``metrics_path``).
_PROMETHEUS_PATH = "/metrics"


def report_failure(exc: OSError, *, level: str = "error") -> None:
    """Log that the targets file could not be written or updated; the metrics still serve."""
    getattr(_LOG, level)(
        "metrics.targets.failed",
        category="lifecycle",
        setting="metrics.targets_file",
        error=str(exc),
    )


def advertised_host(host: str) -> str:
    """Return the host to put in a target for a listener bound to ``host``.

    A wildcard address (``0.0.0.0``, ``::``, empty) cannot be scraped as such; the
    machine's fully qualified name stands in for it.
    """
    if host in ("", "0.0.0.0", "::"):
        return socket.getfqdn()
    return f"[{host}]" if ":" in host else host


def service_name(host: str, port: int) -> str:
    """Name the service that serves its API on ``host``:``port`` of this machine.

    Two services of one machine cannot both serve one address, and the machine's name
    tells apart those of two machines (or containers) sharing a file.
    """
    bracketed = f"[{host}]" if ":" in host else host
    return f"{socket.gethostname()}/{bracketed}:{port}"


def _entry(
    host: str, port: int, worker: str, service: str | None = None, path: str | None = None
) -> dict[str, Any]:
    labels = {"worker": worker} if service is None else {"worker": worker, SERVICE_LABEL: service}
    if path is not None and path != _PROMETHEUS_PATH:
        labels[PATH_LABEL] = path
    return {"targets": [f"{advertised_host(host)}:{port}"], "labels": labels}


def _labels(group: object) -> dict[Any, Any]:
    """A group's labels; none for a group of another shape (written by hand)."""
    labels = group.get("labels") if isinstance(group, dict) else None
    return labels if isinstance(labels, dict) else {}


def _targets(group: object) -> list[Any]:
    """A group's targets; none for a group of another shape (written by hand)."""
    targets = group.get("targets") if isinstance(group, dict) else None
    return targets if isinstance(targets, list) else []


def _without(groups: list[Any], mine: set[str]) -> list[Any]:
    """``groups`` without the targets in ``mine``; a group left with none goes too.

    A group that lists other targets besides (written by hand) keeps them.
    """
    kept = []
    for group in groups:
        targets = _targets(group)
        rest = [t for t in targets if not (isinstance(t, str) and t in mine)]
        if len(rest) == len(targets):
            kept.append(group)
        elif rest:
            kept.append({**group, "targets": rest})
    return kept


def _order(group: object) -> tuple[str, str]:
    """Sort by ``worker`` label, then targets; any group, of any shape, has a place."""
    return (str(_labels(group).get("worker", "")), json.dumps(_targets(group)))


def _readable_by_all(fd: int) -> None:
    os.fchmod(fd, 0o644)  # whatever the umask: Prometheus often runs as another user


def _temp_prefix(path: Path) -> str:
    """The start of the name of a new file :func:`_replace` writes beside ``path``."""
    return f".{path.name}."


def _replace(path: Path, groups: list[dict[str, Any]]) -> None:
    data = (json.dumps(groups, indent=2) + "\n").encode("utf-8")
    write_atomically(path, data, prefix=_temp_prefix(path), prepare=_readable_by_all)


def _remove_left_behind(path: Path) -> None:
    """Remove the new files of ``path`` a crash left beside it (killed between a write and
    its rename); log how many (``metrics.targets.tempfiles.removed``).

    Called under the file's lock, which every write holds: no such file is a live write's.
    Only the names :func:`_replace` gives (``.targets.json.<16 hex digits>.tmp``) are
    looked at: another file's, or any other, is left, as is anything of such a name that
    is no regular file (never opened in a way that waits).
    """
    own = re.compile(re.escape(_temp_prefix(path)) + r"[0-9a-f]{16}\.tmp")
    removed = size = 0
    with contextlib.suppress(OSError):  # a folder that cannot be listed: the write says so
        removed, size = remove_all_left_behind(path.parent, own)
    if removed:
        _LOG.warning(
            "metrics.targets.tempfiles.removed",
            category="lifecycle",
            setting="metrics.targets_file",
            files=removed,
            bytes=size,
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[list[dict[str, Any]]]:
    """Hold the file's lock; yield its groups (empty if absent or unreadable) to edit in place.

    The new files a crash left beside it are removed first (see :func:`_remove_left_behind`).
    """
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _remove_left_behind(path)
            groups = _read(path)
            yield groups
            _replace(path, groups)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> list[Any]:
    """The groups in the targets file: none when it is absent or empty.

    Raises:
        OSError: it cannot be read, or is not a JSON list (a hand edit saved half way, a
            mistyped file): it is left as it is, as start-up leaves it, rather than
            replaced by this writer's entries alone, the other services' lost.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as exc:
        raise OSError(f"{path} is not a targets file (a JSON list), left as it is: {exc}") from exc
    if not text.strip():
        return []
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        raise OSError(f"{path} is not a targets file (a JSON list), left as it is: {exc}") from exc
    if not isinstance(loaded, list):
        raise OSError(f"{path} is not a targets file (a JSON list), left as it is")
    return loaded


def replace_own_targets(
    path: Path,
    own: Sequence[tuple[str, int]],
    endpoints: Mapping[str, tuple[str, int]],
    *,
    first: tuple[str, int] | None = None,
    service: str | None = None,
    metrics_path: str | None = None,
) -> None:
    """Replace this service's entries in a targets file other services may share.

    Entries of other processes (another replica given the same file) are kept.

    Args:
        path: the targets file; its folder must exist.
        own: every (host, port) this service may list; its entries are removed first.
        endpoints: worker label -> (host, port) to list now (empty: withdraw them all).
        first: (host, port) of worker ``0``, when worker ``N`` listens on port + N: an
            entry labelled worker ``N`` at that port is this service's too, whatever
            worker count wrote it (a run with more workers that failed, so kept its
            entries, then a restart with fewer: theirs would stay down for good).
        service: the :func:`service_name` every entry is labelled with: the entries
            labelled so are this service's too, whatever ports they list (a run on
            another ``metrics.port`` that failed or was killed, so kept its entries).
        metrics_path: ``metrics.path``: an entry names it in :data:`PATH_LABEL` unless it
            is Prometheus' default, ``/metrics``.

    Raises:
        OSError: the file or its lock cannot be written, or it is not a JSON list.
    """
    mine = {f"{advertised_host(host)}:{port}" for host, port in own}
    entries = [
        _entry(host, port, worker, service, metrics_path)
        for worker, (host, port) in sorted(endpoints.items())
    ]
    with _locked(path) as groups:
        if first is not None:
            mine.update(target for target, _, _ in _earlier_workers(groups, *first))
        if service is not None:
            for group in groups:
                if _labels(group).get(SERVICE_LABEL) == service:
                    mine.update(t for t in _targets(group) if isinstance(t, str))
        groups[:] = _without(groups, mine) + entries
        groups.sort(key=_order)


def _earlier_workers(
    groups: list[dict[str, Any]], host: str, port: int
) -> list[tuple[str, str, int]]:
    """The entries in ``groups`` labelled worker ``N`` at ``host``:``port`` + N.

    Returns:
        ``(target, host, port + N)`` of each.
    """
    found = []
    for group in groups:
        worker = str(_labels(group).get("worker", ""))
        # at most 5 digits: a port's, and no label of another writer makes int() raise
        if worker.isascii() and worker.isdecimal() and len(worker) <= 5:
            target = f"{advertised_host(host)}:{port + int(worker)}"
            if [target] == _targets(group):
                found.append((target, host, port + int(worker)))
    return found


def _of_service(groups: list[Any], host: str, service: str) -> list[tuple[str, str, int]]:
    """The entries in ``groups`` labelled ``service`` at a port of ``host``.

    Returns:
        ``(target, host, port)`` of each.
    """
    found = []
    prefix = f"{advertised_host(host)}:"
    for group in groups:
        if _labels(group).get(SERVICE_LABEL) != service:
            continue
        for target in _targets(group):
            if not (isinstance(target, str) and target.startswith(prefix)):
                continue
            digits = target[len(prefix) :]
            # at most 5 digits: no port of another writer makes int() raise
            if digits.isascii() and digits.isdecimal() and len(digits) <= 5:
                found.append((target, host, int(digits)))
    return found


def register_target(
    path: Path,
    host: str,
    port: int,
    worker: str,
    *,
    first: int | None = None,
    service: str | None = None,
    metrics_path: str | None = None,
) -> None:
    """Add (or replace) this endpoint's entry in a targets file shared with other processes.

    Args:
        path: the targets file; its folder must exist.
        host: the address the endpoint is bound to.
        port: its port.
        worker: its ``worker`` label.
        first: the port of worker ``0`` when worker ``N`` listens on ``first`` + N (the
            workers of uvicorn or gunicorn): an entry labelled worker ``N`` at that port
            of ``host`` on which nothing listens any more is withdrawn. A server killed
            (its workers could not withdraw their entries) and started again with fewer
            workers would otherwise leave them listed, down for good.
        service: the :func:`service_name` the entry is labelled with: an entry labelled
            so at a port of ``host`` on which nothing listens any more is withdrawn too
            (a server killed and started again on another ``metrics.port``).
        metrics_path: ``metrics.path``: the entry names it in :data:`PATH_LABEL` unless it
            is Prometheus' default, ``/metrics``.

    Raises:
        OSError: the file or its lock cannot be written, or it is not a JSON list.
    """
    entry = _entry(host, port, worker, service, metrics_path)
    with _locked(path) as groups:
        # Under the lock: a worker binds its port before it registers, so one that is
        # starting holds its port already, or registers again after this.
        gone = set() if first is None else set(_unheld(_earlier_workers(groups, host, first)))
        if service is not None:
            gone.update(_unheld(_of_service(groups, host, service)))
        groups[:] = [*_without(groups, gone | set(entry["targets"])), entry]
        groups.sort(key=_order)


def _unheld(targets: list[tuple[str, str, int]]) -> Iterator[str]:
    """The targets of ``(target, host, port)`` whose port on ``host`` nothing listens on."""
    for target, host, port in targets:
        if _is_free(host, port):
            yield target


def _is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound: no socket listens on it (one in TIME_WAIT may)."""
    try:
        bound_socket(host, port).close()  # bound as a listener of ours would be
    except (OSError, UnicodeError):  # in use, or not to be told: kept
        return False
    return True


def unregister_target(path: Path, host: str, port: int) -> None:
    """Remove this endpoint's entry from a shared targets file (nothing if absent).

    Raises:
        OSError: the file or its lock cannot be written, or it is not a JSON list.
    """
    with _locked(path) as groups:
        groups[:] = _without(groups, {f"{advertised_host(host)}:{port}"})
