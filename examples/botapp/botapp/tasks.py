"""The Taskiq broker (a Redis stream: a message is acknowledged only after its task ran) and the tasks."""
from __future__ import annotations

import asyncio
import datetime
import logging
import os

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from taskiq import Context, TaskiqDepends, TaskiqEvents, TaskiqState
from taskiq_redis import RedisStreamBroker

from botapp.db import engine, sessions
from botapp.logs import setup_logging
from botapp.models import Job, Tick, Update
from botapp.redisconn import RETRY
from botapp.settings import instance_name, settings

log = logging.getLogger("botapp.tasks")

broker = RedisStreamBroker(
    url=settings().redis_url,
    queue_name=settings().queue_name,
    consumer_group_name="botapp-workers",
    # Read the stream from its start when the group is first created, one message at a time,
    # so a worker that stops leaves nothing it fetched but did not start.
    consumer_id="0",
    xread_count=1,
    # A message left unacknowledged this long (its worker died) goes to another worker;
    # longer than the longest task, or a running task would be handed out twice.
    idle_timeout=int(os.environ.get("BOTAPP_REDELIVER_AFTER_MS", "120000")),
    **RETRY,
)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _worker_startup(state: TaskiqState) -> None:
    setup_logging()
    log.info("worker started")


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _worker_shutdown(state: TaskiqState) -> None:
    log.info("worker stopping")
    await engine().dispose()


@broker.task(task_name="botapp.process_update")
async def process_update(update_id: int) -> None:
    """Answer one Telegram update (the reply is stored; sent when a bot token is configured)."""
    async with sessions()() as session:
        row = await session.get(Update, update_id)
        if row is None:
            log.warning("update not found", extra={"update_id": update_id})
            return
        reply = f"echo: {row.text}" if row.text else "hello"
        row.reply = reply
        row.processed_at = datetime.datetime.now(datetime.timezone.utc)
        await session.commit()
    if settings().telegram_bot_token and row.chat_id is not None:
        await _send(row.chat_id, reply)
    log.info("update processed", extra={"update_id": update_id})


async def _send(chat_id: int, text: str) -> None:
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    session = AiohttpSession(api=TelegramAPIServer.from_base(settings().telegram_api_url))
    async with Bot(settings().telegram_bot_token, session=session) as bot:
        await bot.send_message(chat_id, text)


@broker.task(task_name="botapp.run_job")
async def run_job(token: str, seconds: int) -> None:
    """A long job: counts its attempts, so a job that ran twice (or never finished) shows."""
    now = datetime.datetime.now(datetime.timezone.utc)
    async with sessions()() as session:
        await session.execute(
            update(Job).where(Job.token == token)
            .values(attempts=Job.attempts + 1, started_at=now, worker=instance_name()))
        await session.commit()
    log.info("job started", extra={"token": token, "seconds": seconds})
    await asyncio.sleep(seconds)
    async with sessions()() as session:
        await session.execute(
            update(Job).where(Job.token == token)
            .values(finished_at=datetime.datetime.now(datetime.timezone.utc)))
        await session.commit()
    log.info("job finished", extra={"token": token})


@broker.task(task_name="botapp.tick")
async def tick(context: Context = TaskiqDepends()) -> None:
    """Scheduled every minute; one row per tick, runs counted, so a doubled tick shows."""
    slot = context.message.labels.get("tick", "unknown")
    async with sessions()() as session:
        statement = insert(Tick).values(tick=slot, runs=1)
        await session.execute(statement.on_conflict_do_update(
            index_elements=[Tick.tick], set_={"runs": Tick.runs + 1}))
        await session.commit()
    log.info("tick", extra={"tick": slot})
