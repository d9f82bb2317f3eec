"""An in-process MQTT broker for emulation: ``fer-agent demo`` with no broker configured.

amqtt runs on its own asyncio loop in a background thread. It listens on
127.0.0.1 only (never on the LAN: it has no authentication) and on a port the
OS picks, which the context manager yields. amqtt speaks MQTT 3.1.1 only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from agent.contracts.errors import FerError

log = logging.getLogger("agent.mqtt")

LOOPBACK = "127.0.0.1"


def broker_config(port: int = 0) -> dict[str, Any]:
    """amqtt 0.12 ``BrokerConfig`` as a dict: one TCP listener on loopback, anonymous, no $SYS or packet logging."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{LOOPBACK}:{port}", "max_connections": 64}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


class EmbeddedBroker:
    """``with EmbeddedBroker() as (host, port): ...`` - a loopback broker for the length of the block."""

    def __init__(self, port: int = 0, start_timeout: float = 10.0) -> None:
        self._port = port
        self._start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.host = LOOPBACK
        self.port = 0

    def start(self) -> tuple[str, int]:
        try:
            from amqtt.broker import Broker  # optional dependency (emulation extra)
        except ImportError:
            raise FerError("embedded MQTT broker needs amqtt (pip install 'fer-agent[emulation]'), "
                           "or set mqtt.host to a broker") from None
        for name in ("amqtt", "transitions"):  # chatty at INFO (every state change); keep warnings
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        self._loop = asyncio.new_event_loop()

        async def _start() -> None:
            self._broker = Broker(broker_config(self._port), loop=self._loop)
            await self._broker.start()

        def _main() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(_start())
            except BaseException as exc:  # reported to start()'s caller
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=_main, name="fer-embedded-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise FerError(f"embedded MQTT broker did not start within {self._start_timeout:.0f} s")
        if self._error is not None:
            raise FerError(f"embedded MQTT broker failed to start on {LOOPBACK}:{self._port}: {self._error}")
        self.host, self.port = self._bound_address()
        log.info("MQTT: embedded broker listening on %s:%d (loopback only)", self.host, self.port)
        return self.host, self.port

    def _bound_address(self) -> tuple[str, int]:
        # amqtt does not expose the listening socket; its server table is the only way to learn
        # the port the OS picked for port 0 (and to check the bind address really is loopback).
        servers = getattr(self._broker, "_servers", {})
        server = servers.get("default")
        sockets = getattr(getattr(server, "instance", None), "sockets", None) or ()
        addrs = [s.getsockname()[:2] for s in sockets]
        if not addrs:
            raise FerError("embedded MQTT broker: cannot find its listening socket (amqtt version change?)")
        for host, _ in addrs:
            if host != LOOPBACK:
                raise FerError(f"embedded MQTT broker bound to {host}, expected {LOOPBACK} only")
        return addrs[0]

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None:
            return
        if broker is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
            try:
                fut.result(timeout=10)
            except Exception as exc:  # shutting down anyway
                log.debug("embedded broker shutdown: %s", exc)
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
        self._loop = None

    def __enter__(self) -> tuple[str, int]:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
