"""The HTTP API: Telegram webhook, health and readiness, jobs, metrics."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import time
import uuid

from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from redis.asyncio import Redis
from sqlalchemy import delete, text
from sqlalchemy.dialects.postgresql import insert

from botapp import __version__
from botapp.db import engine, sessions
from botapp.logs import setup_logging
from botapp.models import Job, Update
from botapp.settings import settings
from botapp.tasks import broker, process_update, run_job

log = logging.getLogger("botapp.api")
REQUESTS = Counter("botapp_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("botapp_http_request_duration_seconds", "HTTP request latency", ["route"])
STARTED = time.monotonic()


class State:
    shutting_down = False
    redis: Redis | None = None


def _watch_shutdown() -> None:
    """Readiness turns 503 as soon as SIGTERM arrives, before uvicorn stops accepting."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        State.shutting_down = True
        log.info("shutdown begins: readiness is now 503")
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    setup_logging()
    from botapp.redisconn import RETRY_ONCE  # here, not above: the release patches change the imports' lines

    State.redis = Redis.from_url(settings().redis_url, **RETRY_ONCE)
    await broker.startup()
    _watch_shutdown()
    log.info("api started")
    yield
    State.shutting_down = True
    await broker.shutdown()
    await State.redis.aclose()
    await engine().dispose()
    log.info("api stopped")


app = FastAPI(title="botapp", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)


@app.middleware("http")
async def observe(request: Request, call_next):
    started = time.perf_counter()
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    response = await call_next(request)
    route = getattr(request.scope.get("route"), "path", "unmatched")
    elapsed = time.perf_counter() - started
    REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    LATENCY.labels(route).observe(elapsed)
    if route not in ("/health", "/health/ready", "/metrics"):
        log.info("request", extra={"method": request.method, "route": route, "status": response.status_code,
                                   "duration_ms": round(elapsed * 1000, 1), "request_id": request_id})
    return response


async def _check(name: str, probe) -> dict:
    started = time.perf_counter()
    try:
        # Below the deploy gate's request timeout (5 s); a busy host answers a trivial query slowly.
        await asyncio.wait_for(probe(), timeout=4)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


async def _database() -> None:
    async with engine().connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _redis() -> None:
    await State.redis.ping()


@app.get("/health")
async def health() -> JSONResponse:
    checks = {"database": await _check("database", _database), "redis": await _check("redis", _redis)}
    healthy = all(c["status"] == "ok" for c in checks.values())
    body = {"status": "healthy" if healthy else "unhealthy", "version": __version__,
            "uptime_s": round(time.monotonic() - STARTED, 1), "checks": checks}
    return JSONResponse(body, status_code=200 if healthy else 503)


@app.get("/health/ready")
async def ready() -> JSONResponse:
    if State.shutting_down:
        return JSONResponse({"ready": False, "reason": "shutting down"}, status_code=503)
    return JSONResponse({"ready": True})


@app.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@app.post("/webhook/telegram")
async def telegram_webhook(request: Request,
                           secret: str | None = Header(default=None, alias="X-Telegram-Bot-Api-Secret-Token")):
    if secret is None or not hmac.compare_digest(secret, settings().telegram_webhook_secret):
        raise HTTPException(status_code=403, detail="bad secret token")
    update = await request.json()
    update_id = update.get("update_id")
    if not isinstance(update_id, int):
        raise HTTPException(status_code=422, detail="update_id missing")
    message = update.get("message") or {}
    async with sessions()() as session:
        statement = insert(Update).values(update_id=update_id, chat_id=(message.get("chat") or {}).get("id"),
                                          text=message.get("text"))
        inserted = await session.execute(statement.on_conflict_do_nothing().returning(Update.update_id))
        await session.commit()
    if inserted.first() is not None:  # Telegram retries; enqueue each update once
        try:
            await process_update.kiq(update_id)
        except Exception:
            # Not enqueued (Redis down): forget the update, so that Telegram's retry of this 500 enqueues it.
            async with sessions()() as session:
                await session.execute(delete(Update).where(Update.update_id == update_id))
                await session.commit()
            raise
    return {"ok": True}


@app.post("/api/jobs")
async def create_job(seconds: int = 10) -> dict:
    token = uuid.uuid4().hex
    async with sessions()() as session:
        session.add(Job(token=token, seconds=seconds, attempts=0))
        await session.commit()
    await run_job.kiq(token, seconds)
    return {"token": token}


@app.get("/api/jobs/{token}")
async def job(token: str) -> dict:
    async with sessions()() as session:
        row = await session.get(Job, token)
    if row is None:
        raise HTTPException(status_code=404)
    return {"token": row.token, "attempts": row.attempts, "worker": row.worker,
            "started_at": row.started_at, "finished_at": row.finished_at}


@app.get("/api/updates/{update_id}")
async def update_status(update_id: int) -> dict:
    async with sessions()() as session:
        row = await session.get(Update, update_id)
    if row is None:
        raise HTTPException(status_code=404)
    return {"update_id": row.update_id, "processed_at": row.processed_at, "reply": row.reply}


@app.get("/api/slow")
async def slow(seconds: float = 2.0) -> dict:
    """A request that takes a while (a report, an upload): in flight while a deploy switches."""
    await asyncio.sleep(min(seconds, 60))
    return {"slept": seconds, "version": __version__}


@app.get("/")
async def index() -> dict:
    return {"service": "botapp", "version": __version__}
