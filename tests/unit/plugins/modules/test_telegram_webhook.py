"""telegram_webhook against the fake Bot API (tests/fakes; the real api.telegram.org is not reachable here):
the tokens come from the live slot's configuration, setWebhook is called only when something differs, a rollback
to an older configuration registers its older secret, and no token reaches a result or an error."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import threading
import time

import pytest

from ansible_collections.botstack.deploy.plugins.module_utils.release import ReleaseStore

FAKES = pathlib.Path(__file__).resolve().parents[3] / "fakes" / "telegram_bot_api.py"
TOKEN = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"
SECRET = "s3cret-Token_for-the-Webhook-42"
URL = "https://bot.example.test/webhook/telegram"


def load_fake():
    spec = importlib.util.spec_from_file_location("telegram_bot_api", FAKES)
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    return fake


@pytest.fixture
def bot_api():
    fake = load_fake()
    api = fake.BotApi(TOKEN)
    server = fake.serve(api, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = "http://127.0.0.1:%d" % server.server_address[1]
    yield api
    server.shutdown()


def live_app(root: pathlib.Path, env: dict, slot: str = "blue", config: str = "c1") -> pathlib.Path:
    """An app root whose live slot runs configuration `config` with `env` (as botstack.deploy.app writes it)."""
    store = ReleaseStore(str(root))
    if store.read_manifest("v1") is None:
        store.create("v1", status="healthy")
    bundle = root / "config" / config
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "env").write_text("# Ansible managed\n" + "".join(
        '%s="%s"\n' % (k, v.replace("\\", "\\\\").replace('"', '\\"')) for k, v in env.items()))
    store.assign(slot, "v1", {"config": config})
    store.activate("v1", slot=slot)
    return root


def args(root, api, **extra):
    return dict({"app_root": str(root), "url": URL, "api_url": api.url}, **extra)


def no_token_in(result):
    text = json.dumps(result)
    assert TOKEN not in text and TOKEN.split(":")[1] not in text and SECRET not in text, text


def test_registers_once_with_the_live_secret_then_changes_nothing(module, tmp_path, bot_api):
    root = live_app(tmp_path / "app", {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET})
    first = module("telegram_webhook", args(root, bot_api, allowed_updates=["message"]), diff=True)
    assert first["_rc"] == 0 and first["changed"] and first["registered"], first
    assert bot_api.webhook == {"url": URL, "secret_token": SECRET, "allowed_updates": ["message"],
                               "max_connections": 40}
    assert first["webhook"]["url"] == URL and first["webhook"]["pending_update_count"] == 0
    state = root / ".telegram-webhook.json"
    assert state.stat().st_mode & 0o777 == 0o600
    no_token_in(first)

    again = module("telegram_webhook", args(root, bot_api, allowed_updates=["message"]))
    assert again["_rc"] == 0 and not again["changed"], again
    assert [c["method"] for c in bot_api.calls].count("setWebhook") == 1

    checked = module("telegram_webhook", args(root, bot_api, allowed_updates=["message", "callback_query"]),
                     check=True, diff=True)
    assert checked["changed"] and bot_api.webhook["allowed_updates"] == ["message"], "check mode set it"
    assert checked["diff"]["after"]["allowed_updates"] == ["callback_query", "message"]
    no_token_in(checked)


def test_a_rotated_secret_is_registered_and_a_rollback_registers_the_older_one(module, tmp_path, bot_api):
    root = live_app(tmp_path / "app", {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET})
    assert module("telegram_webhook", args(root, bot_api))["changed"]
    live_app(root, {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": "rotated-" + SECRET}, "green", "c2")
    rotated = module("telegram_webhook", args(root, bot_api))
    assert rotated["changed"] and bot_api.webhook["secret_token"] == "rotated-" + SECRET
    no_token_in(rotated)
    # The rollback: blue (the older configuration) is live again.
    ReleaseStore(str(root)).activate("v1", slot="blue")
    back = module("telegram_webhook", args(root, bot_api))
    assert back["changed"] and bot_api.webhook["secret_token"] == SECRET


def test_a_recent_delivery_error_is_returned(module, tmp_path, bot_api):
    root = live_app(tmp_path / "app", {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET})
    module("telegram_webhook", args(root, bot_api))
    with bot_api.lock:
        bot_api.last_error_date, bot_api.last_error_message = int(time.time()), "Wrong response from the webhook: 502"
    result = module("telegram_webhook", args(root, bot_api))
    assert not result["changed"] and result["delivery_error"] == "Wrong response from the webhook: 502"


@pytest.mark.parametrize(("env", "extra", "fragment"), [
    ({"TELEGRAM_WEBHOOK_SECRET": SECRET}, {}, "has no TELEGRAM_BOT_TOKEN"),
    ({"TELEGRAM_BOT_TOKEN": "not-a-token", "TELEGRAM_WEBHOOK_SECRET": SECRET}, {}, "is not a bot token"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": "a/b+c="}, {}, "1-256 characters of A-Z"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET}, {"url": "http://bot.example.test/hook"},
     "must be an https:// URL"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET}, {"url": "https://bot.example.test:9443/h"},
     "Telegram delivers only to ports 443, 80, 88, 8443"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN[:-3] + "xyz", "TELEGRAM_WEBHOOK_SECRET": SECRET}, {}, "refused getWebhookInfo: 401"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET}, {"api_url": "http://127.0.0.1:1/a b"},
     "must be an http(s):// URL"),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET}, {"api_url": "http://[::1"},
     "must be an http(s):// URL"),
])
def test_bad_input_is_refused_naming_the_fix_and_no_token(module, tmp_path, bot_api, env, extra, fragment):
    root = live_app(tmp_path / "app", env)
    result = module("telegram_webhook", args(root, bot_api, **extra))
    assert result["_rc"] != 0 and fragment in result["msg"], result
    assert not [c for c in bot_api.calls if c["method"] == "setWebhook"]
    no_token_in(result)
    assert TOKEN[:-3] + "xyz" not in json.dumps(result)


def test_nothing_live_and_an_unreachable_api_fail_clearly(module, tmp_path, bot_api):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = module("telegram_webhook", args(empty, bot_api))
    assert result["_rc"] != 0 and "No release of" in result["msg"] and "Deploy one first" in result["msg"]
    root = live_app(tmp_path / "app", {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET})
    down = module("telegram_webhook", dict(args(root, bot_api), api_url="http://127.0.0.1:9", timeout=3))
    assert down["_rc"] != 0 and "cannot be reached for getWebhookInfo" in down["msg"], down
    no_token_in(down)


def test_absent_deletes_the_webhook_and_the_record(module, tmp_path, bot_api):
    root = live_app(tmp_path / "app", {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET})
    module("telegram_webhook", args(root, bot_api))
    gone = module("telegram_webhook", {"app_root": str(root), "api_url": bot_api.url, "state": "absent"})
    assert gone["changed"] and bot_api.webhook == {} and not (root / ".telegram-webhook.json").exists()
    again = module("telegram_webhook", {"app_root": str(root), "api_url": bot_api.url, "state": "absent"})
    assert not again["changed"]


def test_the_record_is_readable_by_its_group_only_and_kept_so(module, tmp_path, bot_api):
    import grp
    root = live_app(tmp_path / "app", {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET})
    record = tmp_path / "record.json"
    extra = {"state_file": str(record), "state_file_group": "nogroup"}
    assert module("telegram_webhook", args(root, bot_api, **extra))["changed"]
    info = record.stat()
    assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (0o640, 0, grp.getgrnam("nogroup").gr_gid)
    assert not module("telegram_webhook", args(root, bot_api, **extra))["changed"]
    record.chmod(0o644)
    repaired = module("telegram_webhook", args(root, bot_api, **extra))
    assert repaired["changed"] and not repaired["registered"] and record.stat().st_mode & 0o777 == 0o640
    missing = module("telegram_webhook", args(root, bot_api, state_file=str(record), state_file_group="no-such-group"))
    assert missing["_rc"] != 0 and "no-such-group is not a group" in missing["msg"]
