#!/usr/bin/env python3
"""A small stand-in for Telegram's Bot API, for tests: the real api.telegram.org is not reachable from the
test machines, and it could not deliver updates to a test host anyway.

It answers the methods the collection and the sample app call (setWebhook, getWebhookInfo, deleteWebhook,
getMe, sendMessage) the way the Bot API documents them, including its refusals (a wrong token, a secret token
with characters Telegram does not allow, a webhook that is not HTTPS). Like Telegram, it delivers updates to
the registered webhook with the X-Telegram-Bot-Api-Secret-Token header, keeps an update pending while the
webhook does not answer 2xx, and reports the last failure in getWebhookInfo.

Test control (not Telegram's): POST /fake/updates {"updates": [...]} queues updates and delivers what is
pending, returning each delivery's status; GET /fake/state returns everything it was told, the secret token
and the messages the bot sent included.

Usage: telegram_bot_api.py --token TOKEN [--listen 127.0.0.1:8081] [--insecure] [--allow-http] [--resolve NAME:ADDRESS]
"""
from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class BotApi:
    """The state of one bot, shared by the request threads."""

    def __init__(self, token: str, insecure: bool = False, allow_http: bool = False):
        self.token = token
        self.insecure = insecure
        self.allow_http = allow_http
        self.lock = threading.Lock()
        self.webhook: dict = {}
        self.pending: list[dict] = []
        self.last_error_date = 0
        self.last_error_message = ""
        self.calls: list[dict] = []
        self.sent: list[dict] = []
        self.deliveries: list[dict] = []

    # --- Bot API methods --------------------------------------------------------------------------
    def call(self, method: str, params: dict) -> tuple[int, dict]:
        with self.lock:
            self.calls.append({"method": method, "params": {k: v for k, v in params.items() if k != "secret_token"},
                               "secret_token_set": "secret_token" in params, "at": time.time()})
        handler = getattr(self, "m_" + method, None)
        if handler is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
        return handler(params)

    def m_getMe(self, params):
        return 200, {"ok": True, "result": {"id": int(self.token.split(":")[0]), "is_bot": True,
                                            "first_name": "Fake", "username": "fake_bot"}}

    def m_setWebhook(self, params):
        url = str(params.get("url", ""))
        if not url:
            return self.m_deleteWebhook(params)
        if not (url.startswith("https://") or self.allow_http):
            return 400, _bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not SECRET_TOKEN.match(str(secret)):
            return 400, _bad("secret token contains unallowed characters")
        allowed = params.get("allowed_updates")
        if isinstance(allowed, str):
            allowed = json.loads(allowed)
        with self.lock:
            self.webhook = {"url": url, "secret_token": secret, "allowed_updates": allowed or [],
                            "max_connections": int(params.get("max_connections") or 40)}
            if _true(params.get("drop_pending_updates")):
                self.pending.clear()
            self.last_error_date, self.last_error_message = 0, ""
        return 200, {"ok": True, "result": True, "description": "Webhook was set"}

    def m_deleteWebhook(self, params):
        with self.lock:
            self.webhook = {}
            if _true(params.get("drop_pending_updates")):
                self.pending.clear()
        return 200, {"ok": True, "result": True, "description": "Webhook was deleted"}

    def m_getWebhookInfo(self, params):
        with self.lock:
            info = {"url": self.webhook.get("url", ""), "has_custom_certificate": False,
                    "pending_update_count": len(self.pending)}
            if self.webhook:
                info["max_connections"] = self.webhook["max_connections"]
                info["ip_address"] = "127.0.0.1"
                if self.webhook["allowed_updates"]:
                    info["allowed_updates"] = self.webhook["allowed_updates"]
            if self.last_error_date:
                info["last_error_date"] = self.last_error_date
                info["last_error_message"] = self.last_error_message
        return 200, {"ok": True, "result": info}

    def m_sendMessage(self, params):
        with self.lock:
            chat_id = params.get("chat_id")
            chat_id = int(chat_id) if str(chat_id).lstrip("-").isdigit() else chat_id
            self.sent.append({"chat_id": chat_id, "text": params.get("text")})
            message_id = len(self.sent)
        return 200, {"ok": True, "result": {"message_id": message_id, "date": int(time.time()),
                                            "chat": {"id": chat_id, "type": "private"},
                                            "text": params.get("text")}}

    # --- delivery, as Telegram does it -------------------------------------------------------------
    def deliver(self) -> list[dict]:
        """Send every pending update to the webhook in order; stop at the first one it does not accept."""
        results = []
        while True:
            with self.lock:
                if not self.pending or not self.webhook:
                    return results
                update, webhook = self.pending[0], dict(self.webhook)
            status, error = self._post(webhook, update)
            with self.lock:
                results.append({"update_id": update.get("update_id"), "status": status, "error": error})
                self.deliveries.append(results[-1])
                if error:
                    self.last_error_date, self.last_error_message = int(time.time()), error
                    return results
                if self.pending and self.pending[0] is update:
                    self.pending.pop(0)

    def _post(self, webhook: dict, update: dict) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        if webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = webhook["secret_token"]
        request = urllib.request.Request(webhook["url"], data=json.dumps(update).encode(), headers=headers,
                                         method="POST")
        context = ssl._create_unverified_context() if self.insecure else None  # noqa: S323 - a test double
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.status, ""
        except urllib.error.HTTPError as exc:
            return exc.code, "Wrong response from the webhook: %d %s" % (exc.code, exc.reason)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return 0, "Connection failed: %s" % reason

    def state(self) -> dict:
        with self.lock:
            return {"webhook": dict(self.webhook), "pending": list(self.pending), "calls": list(self.calls),
                    "sent": list(self.sent), "deliveries": list(self.deliveries),
                    "last_error_date": self.last_error_date, "last_error_message": self.last_error_message}


def _bad(description: str) -> dict:
    return {"ok": False, "error_code": 400, "description": "Bad Request: " + description}


def _true(value) -> bool:
    return str(value).lower() in ("1", "true", "yes")


def handler_for(api: BotApi):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: tests read /fake/state
            pass

        def _params(self) -> dict:
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            kind = self.headers.get("Content-Type", "")
            if body and kind.startswith("application/json"):
                query.update(json.loads(body))
            elif body and kind.startswith("multipart/form-data"):
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + kind.encode() + b"\r\n\r\n" + body)
                for part in message.iter_parts():
                    query[part.get_param("name", header="content-disposition")] = part.get_content().strip()
            elif body:
                query.update(dict(urllib.parse.parse_qsl(body.decode())))
            return query

        def _answer(self, status: int, data: dict):
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self):
            path = urllib.parse.urlsplit(self.path).path
            params = self._params()
            if path == "/fake/state":
                return self._answer(200, api.state())
            if path == "/fake/updates":
                with api.lock:
                    api.pending.extend(params.get("updates", []))
                return self._answer(200, {"deliveries": api.deliver()})
            match = re.match(r"^/bot([^/]+)/([A-Za-z]+)$", path)
            if not match:
                return self._answer(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            if match.group(1) != api.token:
                return self._answer(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            return self._answer(*api.call(match.group(2), params))

        do_GET = do_POST = _route

    return Handler


def resolve(names: dict) -> None:
    """Look these names up at the given addresses (the webhook keeps its name: Host header and SNI)."""
    if not names:
        return
    lookup = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return lookup(names.get(host, host), *args, **kwargs)
    socket.getaddrinfo = getaddrinfo


def serve(api: BotApi, host: str, port: int) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), handler_for(api))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token", required=True)
    parser.add_argument("--listen", default="127.0.0.1:8081")
    parser.add_argument("--insecure", action="store_true", help="deliver to webhooks with any certificate")
    parser.add_argument("--allow-http", action="store_true", help="accept http:// webhooks")
    parser.add_argument("--resolve", action="append", default=[], metavar="NAME:ADDRESS",
                        help="deliver to NAME at ADDRESS (as curl --resolve), whatever DNS says")
    args = parser.parse_args()
    resolve(dict(item.rsplit(":", 1) for item in args.resolve))
    host, port = args.listen.rsplit(":", 1)
    server = serve(BotApi(args.token, args.insecure, args.allow_http), host, int(port))
    server.serve_forever()


if __name__ == "__main__":
    main()
