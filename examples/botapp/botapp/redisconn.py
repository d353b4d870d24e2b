"""Redis connections that outlive a Redis restart: redis-py's asyncio client retries nothing by default, so the
first command on a pooled connection Redis closed would fail (a webhook answered 500 after a Redis restart).
With these settings the connection is opened again and the command retried."""
from __future__ import annotations

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

_ERRORS = [RedisConnectionError, RedisTimeoutError]
# Enqueueing and the scheduler's claims ride out a restart: up to ~3 s in all (0.1, 0.2, 0.4, 0.8, 1.6 s).
RETRY = {"retry": Retry(ExponentialBackoff(cap=2, base=0.1), 5), "retry_on_error": _ERRORS}
# The readiness check opens a closed connection again once, at once: a Redis that is down is reported as down.
RETRY_ONCE = {"retry": Retry(NoBackoff(), 1), "retry_on_error": _ERRORS}
