from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Read from the environment (NOTES_*) or a .env file in the working directory."""

    model_config = SettingsConfigDict(env_prefix="NOTES_", env_file=".env", extra="ignore")

    # e.g. postgresql+psycopg://notes:secret@localhost:5432/notes, or sqlite:///./notes.db
    database_url: str
    # Password of the built-in "admin" user (HTTP Basic on /api/v1/admin/*).
    first_superuser_password: str = Field(min_length=12)
    # Echo SQL statements (debugging).
    sql_echo: bool = False


@lru_cache
def get_settings() -> Settings:
    return Settings()
