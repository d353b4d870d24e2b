"""SQLAlchemy async engine and session factory, one pool per process."""
from __future__ import annotations

import functools

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from botapp.settings import settings


@functools.lru_cache(maxsize=1)
def engine() -> AsyncEngine:
    s = settings()
    return create_async_engine(s.database_url, pool_size=s.db_pool_size, max_overflow=s.db_max_overflow,
                               pool_pre_ping=True)


@functools.lru_cache(maxsize=1)
def sessions() -> async_sessionmaker:
    return async_sessionmaker(engine(), expire_on_commit=False)
