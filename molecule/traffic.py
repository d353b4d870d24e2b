"""A steady request loop through the proxy, counting every request that did not succeed.

Used by the deploy scenario's verify step and by benchmarks/deploy.py, so both count
failed requests the same way: a request fails when it errors (refused, reset, timeout)
or answers anything but 2xx.

Kept-alive clients behave as RFC 9112 section 9.5 asks of HTTP clients (and as browsers and Go's
net/http do): a GET sent on a reused connection that the server closed at that instant is sent
once more on a new connection. nginx before 1.27.4 (no keepalive_min_timeout; Debian 12 has 1.22)
closes idle kept-alive connections when its old workers exit at a reload, which every proxy switch
is. Those resends are counted apart (`resent`) and printed; a resent request that fails again is a
failure, and new-connection clients never resend.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
import time

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


@dataclasses.dataclass
class Report:
    total: int = 0
    failed: int = 0
    resent: int = 0
    slow_total: int = 0
    # Per class of request (get, slow, and each extra kind such as webhook): sent and failed.
    sent_by_class: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    failed_by_class: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    versions: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    failures: list = dataclasses.field(default_factory=list)
    # Per version, monotonic times of its first and last answer to a plain (not slow) request.
    first_seen: dict = dataclasses.field(default_factory=dict)
    last_seen: dict = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        classes = ", ".join(f"{name} {sent} ({self.failed_by_class[name]} failed)"
                            for name, sent in sorted(self.sent_by_class.items()))
        return (f"{self.total} requests [{classes}], {self.failed} failed, {self.resent} resent on a "
                f"new connection after the proxy closed a kept-alive one, statuses "
                f"{dict(self.statuses)}, versions {dict(self.versions)}, first failures {self.failures[:5]}")


class Traffic:
    """Requests at `rate` per second to `path`, plus a slow request every `slow_every` seconds.

    Half the clients keep their connection alive, half open a new one per request, as real
    clients (and Telegram) do. Use as a context manager; the report is in `.report`.
    """

    def __init__(self, base_url: str, host_header: str, rate: float = 20.0, path: str = "/health",
                 slow_every: float = 1.0, slow_seconds: float = 3.0, clients: int = 4, kinds=(),
                 slow_path: str = "/api/slow?seconds={seconds}&n={n}"):
        self.base_url, self.host_header, self.path = base_url.rstrip("/"), host_header, path
        self.rate, self.slow_every, self.slow_seconds, self.clients = rate, slow_every, slow_seconds, clients
        self.slow_path = slow_path
        # Other classes of request, each (name, per second, send(session) -> response): e.g. webhook() below.
        self.kinds = list(kinds)
        self.report = Report()
        self._in_flight: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _record(self, ok: bool, status, version=None, detail=None, slow=False, kind=None):
        kind = kind or ("slow" if slow else "get")
        with self._lock:
            self.report.total += 1
            self.report.slow_total += slow
            self.report.sent_by_class[kind] += 1
            self.report.failed_by_class[kind] += not ok
            self.report.statuses[status] += 1
            if version:
                self.report.versions[version] += 1
                if not slow:
                    now = time.monotonic()
                    self.report.first_seen.setdefault(version, now)
                    self.report.last_seen[version] = now
            if not ok:
                self.report.failed += 1
                if len(self.report.failures) < 50:
                    self.report.failures.append(f"{time.strftime('%H:%M:%S')} {status} {detail}")

    def _request(self, session, url, timeout, slow=False):
        try:
            response = session.get(url, headers={"Host": self.host_header}, verify=False, timeout=timeout)
        except requests.RequestException as exc:
            self._record(False, "error", detail=f"{url}: {type(exc).__name__}: {exc}"[:300], slow=slow)
            return
        history = getattr(getattr(response.raw, "retries", None), "history", ()) or ()
        if history:
            with self._lock:
                self.report.resent += len(history)
        version = None
        try:
            version = response.json().get("version")
        except ValueError:
            pass
        ok = 200 <= response.status_code < 300
        self._record(ok, response.status_code, version, None if ok else f"{url}: {response.text[:200]}", slow=slow)

    @staticmethod
    def _kept_alive_session() -> requests.Session:
        session = requests.Session()
        # Only a connection closed before any answer (read error) on a GET; never a status, never a connect error.
        resend = Retry(total=1, connect=0, read=1, status=0, other=0, redirect=0, allowed_methods=["GET"],
                       raise_on_status=False)
        session.mount("https://", HTTPAdapter(max_retries=resend))
        session.mount("http://", HTTPAdapter(max_retries=resend))
        return session

    def _client(self, index: int):
        keepalive = index % 2 == 0
        session = self._kept_alive_session() if keepalive else requests.Session()
        interval = self.clients / self.rate
        next_at = time.monotonic() + index * interval / self.clients
        while not self._stop.is_set():
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            if not keepalive:
                session.close()
                session = requests.Session()
            self._request(session, self.base_url + self.path, timeout=10)
        session.close()

    def _slow(self):
        for n in itertools.count():
            if self._stop.wait(self.slow_every):
                return
            slow = threading.Thread(target=self._request, daemon=True, args=(
                requests.Session(), self.base_url + self.slow_path.format(seconds=self.slow_seconds, n=n),
                self.slow_seconds + 30, True))
            self._in_flight.append(slow)
            slow.start()

    def _kind(self, name, rate, send):
        """Requests of one extra class, on a new connection each (as Telegram and browsers posting forms do)."""
        interval, next_at = 1.0 / rate, time.monotonic()
        while not self._stop.is_set():
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            with requests.Session() as session:
                try:
                    response = send(session)
                except requests.RequestException as exc:
                    self._record(False, "error", detail=f"{name}: {type(exc).__name__}: {exc}"[:300], kind=name)
                    continue
                ok = 200 <= response.status_code < 400
                self._record(ok, response.status_code, None, None if ok else f"{name}: {response.text[:200]}", kind=name)

    def __enter__(self) -> Traffic:
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        if self.slow_every:
            self._threads.append(threading.Thread(target=self._slow, daemon=True))
        for name, rate, send in self.kinds:
            self._threads.append(threading.Thread(target=self._kind, args=(name, rate, send), daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        # Let the slow requests in flight finish before counting.
        time.sleep(self.slow_seconds + 1 if self.slow_every else 0)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        # Its own slow requests still in flight (another loop's threads, or a test's, are not waited for).
        deadline = time.monotonic() + self.slow_seconds + 35
        for thread in list(self._in_flight):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return False


def webhook(base_url: str, host_header: str, secret: str, path: str = "/webhook/telegram", chats: int = 50):
    """A Telegram-like update delivery: POST of an update (JSON body) with the secret token header."""
    counter = itertools.count(int(time.time() * 1000) % 1_000_000_000)

    def send(session: requests.Session):
        update_id = next(counter)
        body = {"update_id": update_id, "message": {"message_id": update_id, "chat": {"id": update_id % chats},
                                                     "text": f"load {update_id}", "from": {"language_code": "en"}}}
        return session.post(base_url.rstrip("/") + path, json=body, verify=False, timeout=10,
                            headers={"Host": host_header, "X-Telegram-Bot-Api-Secret-Token": secret})
    return send
