"""Message buses: the interface, the embedded default and Kafka."""

from __future__ import annotations

from nm_toolkit.bus.base import (
    Bus,
    Consumer,
    DeliveryFailed,
    Message,
    Producer,
    TopicPartition,
)
from nm_toolkit.bus.embedded import EmbeddedBus
from nm_toolkit.config import Settings


def bus_from_settings(settings: Settings) -> Bus:
    """The bus the settings name: embedded (default) or Kafka at ``bus.bootstrap_servers``."""
    if settings.bus.kind == "kafka":
        from nm_toolkit.bus.kafka import KafkaBus

        return KafkaBus(
            settings.bus.bootstrap_servers,
            client_id=settings.bus.client_id,
            default_partitions=settings.bus.default_partitions,
            max_message_bytes=settings.bus.max_message_bytes,
            session_timeout_ms=settings.bus.session_timeout_ms,
            heartbeat_interval_ms=settings.bus.heartbeat_interval_ms,
            group_instance_id=settings.bus.group_instance_id,
            compacted_topics=settings.topics.tables(),
        )
    bus = EmbeddedBus(settings.bus.default_partitions)
    bus.max_message_bytes = settings.bus.max_message_bytes
    return bus


__all__ = ["Bus", "Consumer", "DeliveryFailed", "EmbeddedBus", "Message", "Producer", "TopicPartition", "bus_from_settings"]
