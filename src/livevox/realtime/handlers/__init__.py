"""The session's client-event handlers, one module per event family (mixins of `RealtimeSession`)."""
