"""sd_notify(3) for ``Type=notify`` and ``WatchdogSec=``, without libsystemd.

A few lines of socket code instead of a dependency on libsystemd or a Python
binding; a no-op outside systemd, so the agent calls it unconditionally.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """sd_notify(3) over ``$NOTIFY_SOCKET`` without libsystemd.

    The protocol is one AF_UNIX datagram of newline-separated ``KEY=value``
    lines per call. A name starting with '@' is an abstract-namespace socket
    (leading NUL byte). Without ``$NOTIFY_SOCKET`` (not under systemd, or
    ``Type=simple``) every method does nothing, so the agent calls them
    unconditionally. Send errors are logged once and swallowed: losing the
    notify socket must never take the frame loop down (the watchdog will).
    """

    def __init__(self, env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if env is None else env
        self._clock = clock
        self._sock: socket.socket | None = None
        self._address: str | None = None
        self._warned = False
        address = env.get("NOTIFY_SOCKET") or ""
        if address.startswith("@"):
            self._address = "\0" + address[1:]
        elif address.startswith("/"):
            self._address = address
        elif address:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path; sd_notify disabled", address)
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval_s: float | None = self._watchdog_interval(env)
        self._last_watchdog = -math.inf

    @staticmethod
    def _watchdog_interval(env: Mapping[str, str]) -> float | None:
        """Half of ``$WATCHDOG_USEC`` (what sd_watchdog_enabled(3) recommends), or None when off."""
        usec = env.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = env.get("WATCHDOG_PID")
        if pid and pid.strip() != str(os.getpid()):
            return None  # the watchdog is meant for another process (e.g. our parent)
        try:
            value = int(usec)
        except ValueError:
            log.warning("WATCHDOG_USEC=%r is not an integer; watchdog disabled", usec)
            return None
        if value <= 0:
            return None
        return value / 2_000_000.0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> bool:
        """Send one raw sd_notify message; True if it was sent."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto(message.encode("utf-8", "replace"), self._address)
            return True
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify to %r failed: %s", self._address.replace("\0", "@"), exc)
                self._warned = True
            return False

    @staticmethod
    def _line(text: str) -> str:
        # STATUS= is one line; a newline would start a new (bogus) assignment.
        return " ".join(str(text).split())

    def ready(self, status: str = "") -> bool:
        """After the model is loaded and the source opened: ends ``Type=notify`` start-up."""
        msg = "READY=1"
        if status:
            msg += "\nSTATUS=" + self._line(status)
        sent = self.notify(msg)
        self._last_watchdog = self._clock()  # READY counts as the first sign of life
        return sent

    def status(self, text: str) -> bool:
        """One-line summary shown by ``systemctl status fer-agent``."""
        return self.notify("STATUS=" + self._line(text))

    def watchdog(self) -> bool:
        """Keep-alive from the frame loop; cheap to call every frame (rate-limited to half the timeout)."""
        if self.watchdog_interval_s is None or self._sock is None:
            return False
        now = self._clock()
        if now - self._last_watchdog < self.watchdog_interval_s:
            return False
        self._last_watchdog = now
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        """On shutdown, before releasing the camera and flushing the outbox."""
        msg = "STOPPING=1"
        if status:
            msg += "\nSTATUS=" + self._line(status)
        return self.notify(msg)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
