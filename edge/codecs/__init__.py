"""Payload codecs: turn device message bodies into uplink events (pure functions)."""
