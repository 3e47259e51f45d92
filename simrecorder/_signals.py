"""Hold back Python signal handlers while the recorder hands blocks to its stores.

A ``KeyboardInterrupt`` (or any exception a signal handler raises) that lands between
taking a block out of a buffer and a store having it would lose the block, or, once a
store has applied it, make the recorder write it twice. Python runs signal handlers in
the main thread only, so while the main thread flushes, :func:`deferred_signals` swaps
every Python-level handler for one that notes the signal; the noted signals are
handed to the real handlers right after the flush, so Ctrl-C still stops the program,
one flush later. A second Ctrl-C during the same flush interrupts at once (a store
that hangs must not make the program unstoppable); the store contract (see
:class:`~simrecorder.datastores.DataStore`) keeps that case exact too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["deferred_signals"]

# the classic signals; real-time ones (SIGRTMIN..) are left alone, which keeps the
# handler scan at ~10 us per flush
_CATCHABLE = tuple(
    sig
    for sig in signal.valid_signals()
    if sig < getattr(signal, "SIGRTMIN", 32) and sig not in (signal.SIGKILL, signal.SIGSTOP)
)
_state = threading.local()


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Run the ``with`` body with Python signal handlers deferred (main thread only)."""
    if threading.current_thread() is not threading.main_thread() or getattr(
        _state, "active", False
    ):
        yield
        return
    saved: dict[int, Any] = {}
    caught: list[tuple[int, Any]] = []

    def restore() -> None:
        while saved:
            sig, handler = saved.popitem()
            signal.signal(sig, handler)

    def note(signum: int, frame: Any) -> None:
        if done:  # left installed by an exception inside restore(): act as the original
            handlers[signum](signum, frame)
            return
        if signum == signal.SIGINT and any(s == signal.SIGINT for s, _ in caught):
            handler = saved.get(signum)
            caught[:] = [(s, f) for s, f in caught if s != signal.SIGINT]
            restore()
            if callable(handler):
                handler(signum, frame)
            raise KeyboardInterrupt
        caught.append((signum, frame))

    for sig in _CATCHABLE:
        handler = signal.getsignal(sig)
        if callable(handler):
            saved[sig] = handler
    handlers = dict(saved)
    done = False
    try:
        _state.active = True
        for signum in handlers:
            signal.signal(signum, note)
        yield
    finally:
        # each step below is safe to interrupt: the flags first, so a handler that
        # fires now (or stays installed) behaves as the original one
        done = True
        _state.active = False
        pending, caught[:] = list(caught), []
        restore()
        for signum, frame in pending:
            handlers[signum](signum, frame)
