"""Publish stage: MQTT topics, payloads, outbox, Home Assistant discovery."""
