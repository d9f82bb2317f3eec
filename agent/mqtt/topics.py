"""Every MQTT topic the agent uses, built in one place from prefix and device id."""

from __future__ import annotations

from dataclasses import dataclass

from agent.contracts.labels import LABELS

# Home Assistant announces itself here ("online") after it starts; we answer
# by publishing discovery again so a restarted HA finds the board at once.
HA_BIRTH_SUFFIX = "status"


@dataclass(frozen=True)
class Topics:
    prefix: str
    device_id: str
    discovery_prefix: str = "homeassistant"

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device_id}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    @property
    def summary(self) -> str:
        return f"{self.base}/summary"

    @property
    def node_id(self) -> str:
        """Home Assistant node id: one per board, unique on the broker."""
        return f"fer_{self.device_id}".replace(".", "_")

    def discovery(self, component: str, object_id: str) -> str:
        """``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` (HA's documented layout)."""
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{object_id}/config"

    @property
    def discovery_dominant(self) -> str:
        return self.discovery("sensor", "dominant_emotion")

    @property
    def discovery_face_count(self) -> str:
        return self.discovery("sensor", "face_count")

    @property
    def discovery_summary(self) -> tuple[str, ...]:
        """The audience-summary sensors: mean faces, then one share per label (``audience_<label>_share``)."""
        return (self.discovery("sensor", "audience_faces_mean"),
                *(self.discovery("sensor", f"audience_{label}_share") for label in LABELS))

    @property
    def discovery_all(self) -> tuple[str, ...]:
        return (self.discovery_dominant, self.discovery_face_count, *self.discovery_summary)

    @property
    def ha_birth(self) -> str:
        return f"{self.discovery_prefix}/{HA_BIRTH_SUFFIX}"
