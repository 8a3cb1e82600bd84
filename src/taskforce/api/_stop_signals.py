"""The signals that stop ``taskforce serve``, and holding them until a server takes them over.

Standard library only: ``taskforce serve`` holds them first thing, before its settings,
logging and the app's modules load. Process-wide state: the handlers are the process's.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

__all__ = ["STOP_SIGNALS", "held_signals"]

#: What stops ``taskforce serve`` gracefully: SIGHUP too (a closed terminal, a process
#: manager's hang-up), so the targets file is emptied and no record is lost.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def held_signals(
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
) -> Iterator[list[signal.Signals]]:
    """Keep the stop signals that come before a server or supervisor takes them over.

    Until then, a signal's default action would end the process at once: no drain,
    no ``server.stopped``, its entries left in ``metrics.targets_file``. As PID 1 of a
    container (no init process), the kernel would drop it instead, and the process
    would serve on until it is killed. Yields the list the signals are added to; the
    old handlers are back when the block ends.
    """
    received: list[signal.Signals] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signals go to the main thread's handlers only
        return

    def keep(sig: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(sig))

    originals = {sig: signal.signal(sig, keep) for sig in signals}
    try:
        yield received
    finally:
        for sig, handler in originals.items():
            signal.signal(sig, handler)
