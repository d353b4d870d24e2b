#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: telegram_webhook
short_description: Register an app's Telegram webhook with the secret token its live release runs with
version_added: 0.4.0
description:
  - Reads the bot token and the webhook secret token from the configuration the live slot of I(app_root) runs
    with (the C(app_env) entries named by I(bot_token_env) and I(secret_token_env)), so Telegram is always told
    the secret the serving processes check, after a rollback included.
  - Compares Telegram's C(getWebhookInfo) (URL, allowed updates, connections) and the fingerprint of the secret
    registered last (kept in I(state_file), since Telegram never returns it) with what is wanted, and calls
    C(setWebhook) only when they differ. Reads the webhook back and returns its pending updates and last delivery
    error.
  - I(state_file) (root, 0600, or 0640 for I(state_file_group)) also holds what the host's webhook check
    (C(botstack-telegram-webhook-<app>.timer) of the deploy role) needs to export the metrics.
  - Neither token appears in the results, the diff or any error message.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads getWebhookInfo; reports whether setWebhook would be called, without calling it.
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  app_root:
    description: Root of the application (botstack.deploy.app); its live slot's configuration holds the tokens.
    type: path
    required: true
  url:
    description: The public HTTPS URL Telegram delivers updates to (ports 443, 80, 88 or 8443). Required with C(state=present).
    type: str
  bot_token_env:
    description: Name of the C(app_env) entry holding the bot token (from @BotFather).
    type: str
    default: TELEGRAM_BOT_TOKEN
  secret_token_env:
    description:
      - Name of the C(app_env) entry holding the secret token Telegram sends in C(X-Telegram-Bot-Api-Secret-Token).
        Empty registers the webhook without one (not recommended).
    type: str
    default: TELEGRAM_WEBHOOK_SECRET
  allowed_updates:
    description: Update types to receive; empty is Telegram's default (all but chat_member and reactions).
    type: list
    elements: str
    default: []
  max_connections:
    description: Simultaneous HTTPS connections Telegram may open to the webhook (1-100).
    type: int
    default: 40
  drop_pending_updates:
    description: Drop the updates Telegram holds when the webhook is (re)registered.
    type: bool
    default: false
  api_url:
    description: Base URL of the Bot API (a local Bot API server, or a test double).
    type: str
    default: https://api.telegram.org
  validate_certs:
    description: Verify the Bot API's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: CA bundle for the Bot API's certificate.
    type: path
  timeout:
    description: Seconds per Bot API call.
    type: int
    default: 10
  state:
    description: C(present) registers the webhook; C(absent) deletes it (Telegram then holds updates for getUpdates).
    type: str
    choices: [present, absent]
    default: present
  state_file:
    description: Where the registration is recorded (root, 0600). Default C(<app_root>/.telegram-webhook.json).
    type: path
  state_file_group:
    description: A group that may read I(state_file) (mode 0640), such as the user of a check that reads the webhook.
    type: str
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Register the webhook with the secret the live release checks
  botstack.deploy.telegram_webhook:
    app_root: /srv/botstack
    url: https://bot.example.com/webhook/telegram
    allowed_updates: [message, callback_query]
  register: webhook

- name: Say when Telegram cannot deliver
  ansible.builtin.debug:
    msg: "{{ webhook.webhook.last_error_message }}"
  when: webhook.delivery_error | length > 0
"""

RETURN = r"""
webhook:
  description: Telegram's getWebhookInfo after the run (in check mode, before it).
  returned: success
  type: dict
  sample: {"url": "https://bot.example.com/webhook/telegram", "pending_update_count": 0, "max_connections": 40}
registered:
  description: Whether setWebhook (or deleteWebhook) was called (would be, in check mode).
  returned: success
  type: bool
delivery_error:
  description: Telegram's last delivery error when it happened in the last 10 minutes, else empty.
  returned: success
  type: str
  sample: "Wrong response from the webhook: 502 Bad Gateway"
"""

import grp
import hashlib
import json
import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.files import write_file_atomic
from ansible_collections.botstack.deploy.plugins.module_utils.redact import protect
from ansible_collections.botstack.deploy.plugins.module_utils.release import ReleaseError, ReleaseStore
from ansible_collections.botstack.deploy.plugins.module_utils.telegram import (
    BOT_TOKEN, SECRET_TOKEN, BotApi, TelegramError, api_url_problem, live_env_file, read_env_file, webhook_url_problem)

RECENT = 600


def fingerprint(secret):
    return hashlib.sha256(("botstack-telegram-webhook\0%s" % (secret or "")).encode("utf-8")).hexdigest()


def read_state(path):
    try:
        with open(path) as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type="path", required=True),
            url=dict(type="str"),
            bot_token_env=dict(type="str", default="TELEGRAM_BOT_TOKEN", no_log=False),
            secret_token_env=dict(type="str", default="TELEGRAM_WEBHOOK_SECRET", no_log=False),
            allowed_updates=dict(type="list", elements="str", default=[]),
            max_connections=dict(type="int", default=40),
            drop_pending_updates=dict(type="bool", default=False),
            api_url=dict(type="str", default="https://api.telegram.org"),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            timeout=dict(type="int", default=10),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            state_file=dict(type="path"),
            state_file_group=dict(type="str"),
        ),
        required_if=[("state", "present", ["url"])],
        supports_check_mode=True,
    )
    p = module.params
    present = p["state"] == "present"
    state_file = p["state_file"] or os.path.join(p["app_root"], ".telegram-webhook.json")
    if api_url_problem(p["api_url"]):
        module.fail_json(msg="api_url %r %s." % (p["api_url"], api_url_problem(p["api_url"])))
    # Telegram keeps each type once: a duplicate would make every run look changed.
    p["allowed_updates"] = sorted(set(p["allowed_updates"]))
    if present:
        problem = webhook_url_problem(p["url"])
        if problem:
            module.fail_json(msg="url %r %s." % (p["url"], problem))
        if not 1 <= p["max_connections"] <= 100:
            module.fail_json(msg="max_connections must be 1-100, got %d." % p["max_connections"])

    try:
        store = ReleaseStore(p["app_root"])
    except ReleaseError as exc:
        module.fail_json(msg=str(exc))
    env_file = live_env_file(store)
    if env_file is None:
        module.fail_json(msg="No release of %s is live: the webhook is registered with the configuration a live "
                             "release runs with. Deploy one first." % p["app_root"])
    try:
        env = read_env_file(env_file)
    except OSError as exc:
        module.fail_json(msg="The live configuration %s cannot be read: %s" % (env_file, exc.strerror))
    token = env.get(p["bot_token_env"], "")
    secret = env.get(p["secret_token_env"], "") if p["secret_token_env"] else ""
    protect(module, [token, secret])
    if not token:
        module.fail_json(msg="The live configuration has no %s: add the bot token (from @BotFather) to app_env, from "
                             "the vault, and deploy it." % p["bot_token_env"])
    if not BOT_TOKEN.match(token):
        module.fail_json(msg="%s in the live configuration is not a bot token (<digits>:<letters, digits, _ and ->)."
                             % p["bot_token_env"])
    if present and p["secret_token_env"] and not SECRET_TOKEN.match(secret):
        module.fail_json(msg="%s in the live configuration is %s: Telegram accepts 1-256 characters of A-Z, a-z, "
                             "0-9, _ and - (the secrets playbook generates one)."
                             % (p["secret_token_env"], "empty" if not secret else "not a valid secret token"))

    api = BotApi(p["api_url"], token, p["timeout"], p["validate_certs"], p["ca_path"])
    try:
        info = api.call("getWebhookInfo") or {}
    except TelegramError as exc:
        module.fail_json(msg="Reading the webhook failed: %s" % exc)
    previous = read_state(state_file)
    bot_id = token.split(":", 1)[0]

    if present:
        wanted = {"url": p["url"], "allowed_updates": p["allowed_updates"],
                  "max_connections": p["max_connections"]}
        actual = {"url": info.get("url", ""), "allowed_updates": sorted(info.get("allowed_updates") or []),
                  "max_connections": info.get("max_connections", 40) if info.get("url") else None}
        same_secret = previous.get("secret_sha256") == fingerprint(secret) and previous.get("bot_id") == bot_id
        register = actual != wanted or not same_secret
        record = {"api_url": p["api_url"], "bot_id": bot_id, "bot_token": token, "url": p["url"],
                  "secret_sha256": fingerprint(secret), "validate_certs": p["validate_certs"],
                  "ca_path": p["ca_path"], "timeout": p["timeout"]}
        diff = {"before": dict(actual, secret_token="the one registered earlier" if same_secret else "unknown or another"),
                "after": dict(wanted, secret_token="the live configuration's %s" % (p["secret_token_env"] or "(none)"))}
    else:
        register = bool(info.get("url"))
        record = None
        diff = {"before": {"url": info.get("url", "")}, "after": {"url": ""}}
    mode, gid = 0o600, 0
    if p["state_file_group"]:
        try:
            mode, gid = 0o640, grp.getgrnam(p["state_file_group"]).gr_gid
        except KeyError:
            if not module.check_mode:  # a check run before the group was made: the record would be rewritten
                module.fail_json(msg="state_file_group %s is not a group on this host." % p["state_file_group"])
            mode, gid = 0o640, -1
    if present:
        try:
            found = os.lstat(state_file)
            rewrite = previous != record or (found.st_mode & 0o7777, found.st_uid, found.st_gid) != (mode, 0, gid)
        except OSError:
            rewrite = True
    else:
        rewrite = os.path.lexists(state_file)
    changed = register or rewrite

    if changed and not module.check_mode:
        try:
            if register and present:
                params = {"url": p["url"], "allowed_updates": p["allowed_updates"],
                          "max_connections": p["max_connections"], "drop_pending_updates": p["drop_pending_updates"]}
                if secret:
                    params["secret_token"] = secret
                api.call("setWebhook", params)
            elif register:
                api.call("deleteWebhook", {"drop_pending_updates": p["drop_pending_updates"]})
        except TelegramError as exc:
            module.fail_json(msg="Registering the webhook failed: %s" % exc)
        # Recorded at once: a run that stops after this point does not register (or drop updates) again.
        if record is not None:
            write_file_atomic(state_file, json.dumps(record, sort_keys=True) + "\n", mode, 0, gid)
        elif os.path.lexists(state_file):
            os.unlink(state_file)
        try:
            info = api.call("getWebhookInfo") or {}
        except TelegramError as exc:
            module.warn("The webhook was registered, but reading it back failed: %s" % exc)

    error = ""
    if info.get("last_error_date") and time.time() - int(info["last_error_date"]) < RECENT:
        error = info.get("last_error_message", "")
    module.exit_json(changed=changed, registered=register, webhook=info, delivery_error=error,
                     diff=diff if module._diff and changed else {})


if __name__ == "__main__":
    main()
