"""The engine of the embedded voice: Piper (GPL, an optional install extra) and its word timing."""
