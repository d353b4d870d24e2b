"""JSON logs on stdout (the journal) and, when BOTSTACK_LOG_DIR is set, in a file logrotate can rotate."""
from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import os

from botapp import __version__
from botapp.settings import instance_name, settings

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": instance_name(),
            "version": __version__,
        }
        document.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def setup_logging() -> None:
    formatter = JsonFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    log_dir = settings().log_dir
    if log_dir and os.path.isdir(log_dir):
        # WatchedFileHandler reopens the file after logrotate moved it away.
        handlers.append(logging.handlers.WatchedFileHandler(os.path.join(log_dir, f"{instance_name()}.log")))
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(settings().log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "taskiq"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
