"""livevox: a self-hosted server for the Azure Voice Live and OpenAI Realtime APIs."""

__version__ = "0.1.0"
