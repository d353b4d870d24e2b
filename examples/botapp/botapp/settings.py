"""Configuration from the environment (systemd passes the release's .env file)."""
from __future__ import annotations

import functools
import os

from pydantic import Field
from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    database_url: str = Field(description="postgresql+asyncpg://user:password@host/db[?ssl=...]")
    redis_url: str = Field(description="redis://user:password@host:6379/0 or rediss://...")
    telegram_webhook_secret: str = Field(min_length=16, description="X-Telegram-Bot-Api-Secret-Token value")
    telegram_bot_token: str = ""
    telegram_api_url: str = "https://api.telegram.org"
    db_pool_size: int = 5
    db_max_overflow: int = 5
    queue_name: str = "botapp:tasks"
    tick_cron: str = "* * * * *"
    log_level: str = "INFO"
    # Set by the systemd units of botstack.deploy.app; harmless defaults elsewhere.
    process: str = Field(default="botapp", validation_alias="BOTSTACK_PROCESS")
    slot: str = Field(default="", validation_alias="BOTSTACK_SLOT")
    log_dir: str = Field(default="", validation_alias="BOTSTACK_LOG_DIR")


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings()  # type: ignore[call-arg]


def instance_name() -> str:
    """api-blue, worker-green-1...: one log file and one metrics label per process."""
    s = settings()
    name = s.process + (f"-{s.slot}" if s.slot else "")
    suffix = os.environ.get("BOTSTACK_INSTANCE", "")
    return f"{name}-{suffix}" if suffix else name
