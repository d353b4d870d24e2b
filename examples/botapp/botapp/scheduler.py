"""The Taskiq scheduler: a tick every minute, sent at most once per minute across restarts.

Only one scheduler runs per environment (the deploy tooling starts it on one host and stops
the old one before starting the new one). The schedule source also claims each minute in
Redis before sending, so a scheduler restarted within a minute does not send it again.
"""
from __future__ import annotations

import datetime
import logging

from redis.asyncio import Redis
from taskiq import ScheduledTask, ScheduleSource, TaskiqScheduler
from taskiq.exceptions import ScheduledTaskCancelledError

from botapp.logs import setup_logging
from botapp.settings import settings
from botapp.tasks import broker

log = logging.getLogger("botapp.scheduler")
CLAIM_TTL = 7 * 24 * 3600


class ClaimedMinuteSource(ScheduleSource):
    """The app's schedules; every (schedule, minute) is claimed in Redis before it is sent."""

    def __init__(self) -> None:
        self.redis: Redis | None = None

    async def startup(self) -> None:
        setup_logging()
        from botapp.redisconn import RETRY  # here, not above: the release patches change the imports' lines

        self.redis = Redis.from_url(settings().redis_url, **RETRY)
        log.info("scheduler started")

    async def shutdown(self) -> None:
        log.info("scheduler stopping")
        if self.redis is not None:
            await self.redis.aclose()

    async def get_schedules(self) -> list[ScheduledTask]:
        return [ScheduledTask(task_name="botapp.tick", labels={}, args=[], kwargs={},
                              cron=settings().tick_cron, schedule_id="botapp.tick")]

    async def pre_send(self, task: ScheduledTask) -> None:
        minute = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
        claimed = await self.redis.set(f"botapp:schedule:{task.schedule_id}:{minute}", "1", nx=True, ex=CLAIM_TTL)
        if not claimed:
            log.info("already sent this minute", extra={"schedule_id": task.schedule_id, "minute": minute})
            raise ScheduledTaskCancelledError
        task.labels["tick"] = minute
        sent = f"botapp:schedule:sent:{minute}"
        await self.redis.incr(sent)
        await self.redis.expire(sent, CLAIM_TTL)
        log.info("sending", extra={"schedule_id": task.schedule_id, "minute": minute})


scheduler = TaskiqScheduler(broker=broker, sources=[ClaimedMinuteSource()])
