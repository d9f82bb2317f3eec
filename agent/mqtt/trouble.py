""""Cannot write" as a state of the publisher, not an exception: what failed, where, since when.

A full disk (or a read-only or failing one) under the state directory must not
lose accepted events nor fill the log with tracebacks. The intake keeps what it
could not store in memory (bounded) and retries; this module names the cause
the way a person can act on (``No space left on device (ENOSPC)``), logs one
line when the trouble starts and one when it ends, and gives ``fer-agent
health`` and the stats a short text while it lasts.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("agent.mqtt")

_SQLITE_ERRNO = {13: errno.ENOSPC, 8: errno.EROFS, 10: errno.EIO, 14: errno.EACCES}  # SQLITE_FULL, READONLY, ...
RETRY_S = 1.0  # how often a write that failed is tried again


def describe_write_error(exc: BaseException) -> str:
    """``No space left on device (ENOSPC)`` for an OSError or an SQLite error that means the same."""
    code = getattr(exc, "errno", None)
    if code is None and isinstance(exc, sqlite3.Error):
        code = _SQLITE_ERRNO.get(getattr(exc, "sqlite_errorcode", -1) & 0xFF)
        if code is None and "disk is full" in str(exc):
            code = errno.ENOSPC
    if code:
        return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    return str(exc) or exc.__class__.__name__


@dataclass
class WriteTrouble:
    """The state directory cannot be written: one line at the start, one at the end, a text for health."""

    directory: Path
    what: str = "outbox"
    cause: str = ""
    since: float | None = None  # wall time the trouble began; None while writes succeed
    failures: int = 0  # failed attempts in the current spell
    spells: int = 0  # how many times writing stopped since start
    _next_try: float = field(default=0.0, repr=False)

    @property
    def active(self) -> bool:
        return self.since is not None

    def due(self, now: float | None = None) -> bool:
        """While in trouble, a retry at most every ``RETRY_S`` (a failing write costs a system call or more)."""
        return self.since is None or (time.monotonic() if now is None else now) >= self._next_try

    def failed(self, exc: BaseException, held: int, bound: int) -> None:
        self.failures += 1
        self._next_try = time.monotonic() + RETRY_S
        cause = describe_write_error(exc)
        if self.since is None or cause != self.cause:
            self.cause = cause
            log.error("MQTT: cannot write the %s in %s: %s; holding %d message(s) in memory (at most %d, beyond "
                      "that the oldest are lost and counted) and retrying every %.0f s", self.what, self.directory,
                      cause, held, bound, RETRY_S)
            if self.since is None:  # set last: `active` turns true once the line is out (other threads read it)
                self.spells += 1
                self.since = time.time()

    def succeeded(self, stored: int) -> None:
        if self.since is None:
            return
        log.warning("MQTT: the %s in %s is writable again after %.0f s (%d failed attempts); %d held message(s) "
                    "stored", self.what, self.directory, time.time() - self.since, self.failures, stored)
        self.since, self.cause, self.failures = None, "", 0

    def describe(self, held: int) -> str:
        """For ``fer-agent health``: what cannot be written, why, since when, how much waits in memory."""
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since or 0))
        return f"cannot write the {self.what} in {self.directory}: {self.cause} since {since}; {held} held in memory"
