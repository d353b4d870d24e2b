# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Telegram's Bot API as the webhook registration needs it, and the app's own configuration as its source of
the bot token and secret token: what the live slot runs with is what Telegram must be told (a rollback that
returns to an older secret registers the older secret)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

from ansible.module_utils.six.moves.urllib.parse import urlsplit
from ansible.module_utils.urls import open_url
from ansible.module_utils.six.moves.urllib.error import HTTPError

BOT_TOKEN = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,}$")
# Telegram's rule for secret_token (setWebhook): 1-256 characters, A-Z a-z 0-9 _ -.
SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# Telegram delivers to HTTPS on these ports only.
WEBHOOK_PORTS = (443, 80, 88, 8443)
_ENV_LINE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*$')


class TelegramError(Exception):
    """A refusal or failure, its message free of the bot token."""


def read_env_file(path):
    """NAME="value" lines as botstack.deploy.app writes them (\\ and \" escaped) -> dict."""
    values = {}
    with open(path) as handle:
        for line in handle:
            match = _ENV_LINE.match(line.rstrip("\n"))
            if match:
                values[match.group(1)] = re.sub(r"\\(.)", r"\1", match.group(2))
    return values


def live_env_file(store):
    """The env file of the configuration the live slot runs with, or None when nothing is live."""
    slot = store.current_slot()
    if not slot:
        return None
    config = ((store.slots().get(slot) or {}).get("data") or {}).get("config")
    if not config:
        return None
    return os.path.join(store.app_root, "config", config, "env")


def api_url_problem(url):
    """Why url cannot be the Bot API's base URL, or None."""
    try:
        parts = urlsplit(url or "")
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"[\s\x00-\x1f]", url):
        return "must be an http(s):// URL with a host name and no spaces"
    return None


def webhook_url_problem(url):
    """Why Telegram would refuse url as a webhook, or None."""
    try:
        parts = urlsplit(url or "")
    except ValueError:
        parts = urlsplit("")
    if parts.scheme != "https" or not parts.hostname:
        return "must be an https:// URL with a host name (Telegram delivers over HTTPS only)"
    try:
        port = parts.port or 443
    except ValueError:
        return "has an invalid port"
    if port not in WEBHOOK_PORTS:
        return "uses port %d; Telegram delivers only to ports %s" % (port, ", ".join(str(p) for p in WEBHOOK_PORTS))
    return None


class BotApi:
    """Calls to one bot's methods; every message it raises has the token replaced."""

    def __init__(self, api_url, token, timeout=10, validate_certs=True, ca_path=None):
        self.base = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.ca_path = ca_path

    def _clean(self, text):
        return str(text).replace(self.token, "<bot token>") if self.token else str(text)

    def call(self, method, params=None):
        url = "%s/bot%s/%s" % (self.base, self.token, method)
        body = json.dumps(params or {})
        try:
            response = open_url(url, data=body, method="POST", headers={"Content-Type": "application/json"},
                                timeout=self.timeout, validate_certs=self.validate_certs, ca_path=self.ca_path)
            data = json.loads(response.read())
        except HTTPError as exc:
            try:
                data = json.loads(exc.read())
            except ValueError:
                raise TelegramError(self._clean("%s answered %s to %s" % (self.base, exc.code, method)))
        except Exception as exc:  # noqa: BLE001 - whatever it is, its message may carry the URL and so the token
            raise TelegramError(self._clean("%s cannot be reached for %s: %s" % (self.base, method,
                                                                                 getattr(exc, "reason", exc))))
        if not data.get("ok"):
            raise TelegramError(self._clean("%s refused %s: %s %s" % (self.base, method, data.get("error_code", "?"),
                                                                      data.get("description", ""))))
        return data.get("result")
