"""The Taskiq scheduler: a tick every minute, sent once per minute across restarts.

Only one scheduler runs per environment (the deploy tooling starts it on one host and stops
the old one before starting the new one). The schedule source also claims each minute in
Redis before sending, so a scheduler restarted within a minute does not send it again.

Taskiq's loop sends a cron task 60 s after its previous send, labelled with the minute it
is in: a loop started late in a minute and then held up past a minute's end (a busy host)
skips that minute, and a handover across a minute's end can leave one unsent. So each send
first sends, late, the minutes since the last one sent (at most CATCH_UP_MINUTES back).
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
CATCH_UP_MINUTES = 5
MINUTE_FORMAT = "%Y-%m-%dT%H:%MZ"


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
        now = datetime.datetime.now(datetime.timezone.utc)
        minute = now.strftime(MINUTE_FORMAT)
        await self._send_missed(task, now)
        if not await self._claim(task.schedule_id, minute):
            log.info("already sent this minute", extra={"schedule_id": task.schedule_id, "minute": minute})
            raise ScheduledTaskCancelledError
        task.labels["tick"] = minute
        log.info("sending", extra={"schedule_id": task.schedule_id, "minute": minute})

    async def _claim(self, schedule_id: str, minute: str) -> bool:
        """Claim one (schedule, minute); count the send and remember it as the last one sent."""
        if not await self.redis.set(f"botapp:schedule:{schedule_id}:{minute}", "1", nx=True, ex=CLAIM_TTL):
            return False
        sent = f"botapp:schedule:sent:{minute}"
        await self.redis.incr(sent)
        await self.redis.expire(sent, CLAIM_TTL)
        await self.redis.set(f"botapp:schedule:{schedule_id}:last", minute, ex=CLAIM_TTL)
        return True

    async def _send_missed(self, task: ScheduledTask, now: datetime.datetime) -> None:
        """Send the minutes between the last one sent and this one, if no scheduler sent them."""
        last = await self.redis.get(f"botapp:schedule:{task.schedule_id}:last")
        if last is None:
            return
        last_sent = datetime.datetime.strptime(last.decode(), MINUTE_FORMAT).replace(tzinfo=datetime.timezone.utc)
        current = now.replace(second=0, microsecond=0)
        earliest = max(last_sent + datetime.timedelta(minutes=1), current - datetime.timedelta(minutes=CATCH_UP_MINUTES))
        missed = earliest
        while missed < current:
            minute = missed.strftime(MINUTE_FORMAT)
            if await self._claim(task.schedule_id, minute):
                await broker.find_task(task.task_name).kicker().with_labels(tick=minute).kiq()
                log.warning("sent late", extra={"schedule_id": task.schedule_id, "minute": minute})
            missed += datetime.timedelta(minutes=1)

scheduler = TaskiqScheduler(broker=broker, sources=[ClaimedMinuteSource()])
