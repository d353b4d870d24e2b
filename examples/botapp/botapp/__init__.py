"""Sample bot platform: a FastAPI webhook API, a Taskiq worker and a Taskiq scheduler."""

__version__ = "1.0.0"
