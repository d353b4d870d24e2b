"""Notes: a tiny notes API."""

from importlib.metadata import version

__version__ = version("notes")
