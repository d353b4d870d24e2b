"""Tables; every change comes with an Alembic migration under migrations/versions/."""
from __future__ import annotations

import datetime

from sqlalchemy import BigInteger, DateTime, Integer, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Update(Base):
    """A Telegram update received on the webhook, processed by the worker."""

    __tablename__ = "updates"

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    text: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    processed_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    reply: Mapped[str | None] = mapped_column(Text)


class Job(Base):
    """A background job; attempts counts how many times a worker ran it."""

    __tablename__ = "jobs"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    seconds: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(64))


class Tick(Base):
    """One row per scheduler tick that a worker ran."""

    __tablename__ = "ticks"

    tick: Mapped[str] = mapped_column(String(32), primary_key=True)
    runs: Mapped[int] = mapped_column(Integer, default=1)
    ran_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
