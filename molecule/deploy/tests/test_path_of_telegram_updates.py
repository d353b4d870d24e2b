"""Telegram's path, against the fake Bot API on the host (tests/fakes/telegram_bot_api.py: the real Bot API is not
reachable from here, and could not deliver to a test host). The deploy registers the webhook with the secret the
live configuration holds; an update delivered the way Telegram delivers it goes through nginx to the app and its
worker, whose reply goes back to the Bot API; a rotated secret is registered with the configuration that carries
it and a rollback registers the older one; a webhook Telegram cannot deliver to is exported and alerts."""
from __future__ import annotations

import json
import random
import re
import shlex
import time
import uuid

import pytest
from conftest import assert_no_secret_in, play_recap, run_playbook, wait_for
from test_deploy import BOT_TOKEN, ENV, HOST, PLAYBOOKS, SECRET, assert_ok, live_environ, output
from test_monitoring import notifications, notified

FAKE = "http://127.0.0.1:8081"
URL = "https://bot.botstack.test/webhook/telegram"
UNIT = "botstack-telegram-webhook-botstack"
PROM = "http://127.0.0.1:9090"


def fake(host, path: str = "/fake/state", body: dict | None = None) -> dict:
    if body is None:
        return json.loads(host.check_output(f"curl -fsS {FAKE}{path}"))
    return json.loads(host.check_output(f"curl -fsS -H 'Content-Type: application/json' "
                                        f"--data-binary {shlex.quote(json.dumps(body))} {FAKE}{path}"))


def registrations(host) -> int:
    return sum(1 for call in fake(host)["calls"] if call["method"] == "setWebhook")


def deliver(host, text: str | None = None) -> tuple[list, int, str]:
    """Telegram delivers one update (or, with no text, only what it holds): its deliveries, the chat, the text."""
    chat = random.randint(10_000, 99_999)
    updates = []
    if text is not None:
        update_id = random.randint(10**8, 10**9)
        updates = [{"update_id": update_id, "message": {"message_id": 1, "date": int(time.time()), "text": text,
                                                        "chat": {"id": chat, "type": "private"}}}]
    return fake(host, "/fake/updates", {"updates": updates})["deliveries"], chat, text


def metric(host, query: str) -> list:
    answer = json.loads(host.check_output(f"curl -fsS --get {PROM}/api/v1/query --data-urlencode "
                                          f"{shlex.quote('query=' + query)}"))
    return answer["data"]["result"]


def config_layers(ephemeral_dir, app_env: dict) -> tuple:
    """site.yml's app, proxy and release layers with another app_env: a configuration change, rolled out."""
    site = ephemeral_dir / "telegram-layers.yml"
    site.write_text(json.dumps([
        {"name": "App", "ansible.builtin.import_playbook": str(PLAYBOOKS / "app.yml")},
        {"name": "Release", "ansible.builtin.import_playbook": str(PLAYBOOKS / "rollout.yml"),
         "vars": {"deploy_action": "deploy", "deploy_keep_live_release": True}}]))
    return site, json.dumps({"app_env": app_env})


def test_the_webhook_is_registered_with_the_secret_the_live_release_checks(host):
    webhook = fake(host)["webhook"]
    assert webhook == {"url": URL, "secret_token": SECRET, "allowed_updates": ["message"], "max_connections": 40}
    record = host.file("/var/lib/botstack-telegram/botstack.json")
    assert (record.user, record.group, record.mode) == ("root", "botstack-telegram", 0o640)
    assert host.file("/var/lib/botstack-telegram").mode == 0o750
    assert host.check_output(f"systemctl is-active {UNIT}.timer") == "active"
    # The check runs as a user of its own, sandboxed (systemd's own measure of it).
    exposure = host.check_output(f"systemd-analyze security --no-pager {UNIT}.service | tail -n1")
    level = re.search(r"exposure level for \S+: ([0-9.]+)", exposure)
    assert level and float(level.group(1)) < 5, exposure


def test_an_update_goes_through_nginx_to_the_worker_and_the_reply_back_to_the_bot_api(host):
    text = f"hello {uuid.uuid4().hex[:8]}"
    deliveries, chat, _ = deliver(host, text)
    assert [d["status"] for d in deliveries] == [200], deliveries
    sent = wait_for("the worker's reply at the Bot API", lambda: [
        m for m in fake(host)["sent"] if m["chat_id"] == chat and m["text"] == f"echo: {text}"], timeout=60)
    assert len(sent) == 1, sent
    assert fake(host)["pending"] == []


def test_the_first_update_after_a_redis_restart_is_answered_and_processed(host):
    """The app's pooled Redis connections were closed by the restart: the first enqueue opens one again instead of
    answering 500 (which would make Telegram redeliver, and the update wait)."""
    host.check_output("systemctl restart redis-server")
    wait_for("Redis back", lambda: host.socket("tcp://127.0.0.1:6379").is_listening, timeout=30)
    text = f"after a restart {uuid.uuid4().hex[:8]}"
    deliveries, chat, _ = deliver(host, text)
    assert [d["status"] for d in deliveries] == [200], deliveries
    wait_for("the worker's reply after the restart", lambda: [
        m for m in fake(host)["sent"] if m["chat_id"] == chat and m["text"] == f"echo: {text}"], timeout=60)


def test_a_rotated_secret_is_registered_with_its_configuration_and_a_rollback_registers_the_older_one(
        host, ephemeral_dir):
    rotated = f"rotated-{uuid.uuid4().hex}"
    before = registrations(host)
    site, extra = config_layers(ephemeral_dir, dict(ENV, TELEGRAM_WEBHOOK_SECRET=rotated))
    assert_ok(run_playbook(site, "-e", extra))
    assert f"TELEGRAM_WEBHOOK_SECRET={rotated}" in live_environ(host)
    assert fake(host)["webhook"]["secret_token"] == rotated and registrations(host) == before + 1
    deliveries, _, _ = deliver(host, "after the rotation")
    assert [d["status"] for d in deliveries] == [200], deliveries
    # (A repeat calls Telegram no more: the converge's idempotence step, and the module's unit tests.)
    # The rollback returns to the configuration before, and Telegram to its secret.
    back = run_playbook(PLAYBOOKS / "rollback.yml")
    assert_ok(back)
    assert_no_secret_in(output(back), "the rollback")
    assert f"TELEGRAM_WEBHOOK_SECRET={SECRET}" in live_environ(host)
    assert fake(host)["webhook"]["secret_token"] == SECRET and registrations(host) == before + 2
    deliveries, _, _ = deliver(host, "after the rollback")
    assert [d["status"] for d in deliveries] == [200], deliveries


def test_a_webhook_telegram_cannot_deliver_to_is_exported_and_alerts(host):
    seen = len(notifications(host))
    host.check_output("systemctl stop nginx")
    try:
        deliveries, _, _ = deliver(host, "while the proxy is down")
        assert deliveries[0]["status"] == 0 and deliveries[0]["error"].startswith("Connection failed"), deliveries
        wait_for("the pending update and Telegram's error in Prometheus", lambda: metric(
            host, 'botstack_telegram_webhook_pending_updates{app="botstack"} > 0') and metric(
            host, 'botstack_telegram_webhook_last_error_info{app="botstack"}'), timeout=90)
        message = wait_for("TelegramWebhookFailing at the receiver",
                           lambda: notified(host, "TelegramWebhookFailing", "FIRING", seen), timeout=120)
        assert "botstack" in json.dumps(message)
    finally:
        host.check_output("systemctl start nginx")
    deliveries, _, _ = deliver(host)
    assert deliveries and all(d["status"] == 200 for d in deliveries), deliveries
    wait_for("TelegramWebhookFailing resolved at the receiver",
             lambda: notified(host, "TelegramWebhookFailing", "RESOLVED", seen), timeout=150)
    exported = host.check_output("cat /var/lib/prometheus/node-exporter/botstack_telegram_botstack.prom")
    journal = host.check_output(f"journalctl --no-pager -u {UNIT}.service")
    assert_no_secret_in(exported + journal, "the webhook check")
    assert BOT_TOKEN not in exported + journal


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"deploy_telegram_webhook_url": "http://bot.botstack.test/webhook/telegram"},
     "deploy_telegram_webhook_url must be the public https:// URL"),
    ({"app_env": dict(ENV, TELEGRAM_WEBHOOK_SECRET="base64/with+signs=")},
     "app_env.TELEGRAM_WEBHOOK_SECRET (deploy_telegram_secret_token_env) must hold"),
])
def test_bad_telegram_settings_are_refused_before_anything_changes(host, extra, fragment):
    before = registrations(host)
    result = run_playbook(PLAYBOOKS / "deploy.yml", "-e", json.dumps(extra))
    assert result.returncode != 0 and fragment in " ".join(output(result).split()), output(result)[-3000:]
    assert play_recap(result.stdout)[HOST]["changed"] == 0
    assert registrations(host) == before
    assert_no_secret_in(output(result), "a refused Telegram setting")


def test_a_webhook_no_longer_configured_is_no_longer_watched(host, ephemeral_dir):
    """deploy_telegram_webhook_url emptied: the check, its record (the bot token) and its metrics go; Telegram keeps
    its webhook (deleting it is a decision). (Last of the Telegram checks: the scenario goes on without it.)"""
    site, extra = config_layers(ephemeral_dir, ENV)
    off = run_playbook(site, "-e", extra, "-e", "deploy_telegram_webhook_url=")
    assert_ok(off)
    for path in (f"/etc/systemd/system/{UNIT}.timer", "/var/lib/botstack-telegram/botstack.json",
                 "/var/lib/prometheus/node-exporter/botstack_telegram_botstack.prom"):
        assert not host.file(path).exists, path
    assert fake(host)["webhook"]["url"] == URL
