"""rtproxy: record, inspect and replay OpenAI Realtime API sessions."""

__version__ = "0.1.0"
