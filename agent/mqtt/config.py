"""``mqtt:`` section of the agent configuration.

Field docs (``metadata["doc"]``) are what ``fer-agent print-config`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MqttConfig:
    host: str | None = field(default=None, metadata={"doc": "broker host; empty = embedded broker on 127.0.0.1 (emulation)"})
    port: int = field(default=1883, metadata={"doc": "broker port (8883 is usual for TLS)"})
    prefix: str = field(default="fer", metadata={"doc": "topic prefix: <prefix>/<device_id>/..."})
    device_id: str | None = field(default=None, metadata={"doc": "device id in topics; empty = hostname"})
    qos_events: int = field(default=1, metadata={"doc": "QoS for events (0, 1 or 2)"})
    qos_state: int = field(default=1, metadata={"doc": "QoS for retained state (0, 1 or 2)"})
    qos_stats: int = field(default=0, metadata={"doc": "QoS for stats (0, 1 or 2)"})
    keepalive: int = field(default=30, metadata={"doc": "MQTT keepalive seconds"})
