"""url_credential: any password survives a connection URL; app_env_problems names the entries an app would
misread, never their values."""
from __future__ import annotations

import pathlib
import random
import string
import sys
from urllib.parse import unquote, urlsplit

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))
from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.botstack.deploy.plugins.filter.url_credential import (  # noqa: E402
    app_env_problems, url_credential)

HARD = ["abc/def+ghi==", "p@ss:word", "100%", "a#b?c", "sp ace", "ünïcode", "~-._", "/", "%41"]


def random_passwords(count=200, seed=7):
    rng = random.Random(seed)
    alphabet = string.printable.strip() + " "
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(count)]


@pytest.mark.parametrize("password", HARD + random_passwords())
def test_every_password_reads_back_from_the_url_and_the_host_stays_the_host(password):
    url = f"redis://bot:{url_credential(password)}@db.internal:6379/0?ssl_cert_reqs=required"
    parts = urlsplit(url)
    assert unquote(parts.password) == password
    assert parts.username == "bot" and parts.hostname == "db.internal" and parts.port == 6379
    assert parts.path == "/0"
    assert app_env_problems({"REDIS_URL": url}) == []


def test_unreserved_characters_are_left_as_they_are():
    assert url_credential("Abc-123_.~") == "Abc-123_.~"
    assert url_credential("a/b") == "a%2Fb", "Jinja's urlencode would keep the slash"


def test_a_non_string_is_refused():
    with pytest.raises(AnsibleFilterError, match="expects a string"):
        url_credential(12345)


@pytest.mark.parametrize("url, why", [
    ("redis://bot:ab/cd==@127.0.0.1:6379/0", "ends the URL's host part early"),
    ("postgresql+asyncpg://bot:a?b@db:5432/app", "ends the URL's host part early"),
    ("rediss://:x#y@db:6380/0", "ends the URL's host part early"),
    ("postgres://u:p@ss@db/app", "holds '@'"),
    ("amqp://u:100%@mq/", "'%' that is not an escape"),
], ids=["slash", "question-mark", "hash", "at", "percent"])
def test_an_unencoded_password_is_named_with_its_entry_and_without_its_value(url, why):
    problems = app_env_problems({"BROKER_URL": url})
    assert len(problems) == 1 and problems[0].startswith("app_env.BROKER_URL is a connection URL"), problems
    assert why in problems[0] and "url_credential" in problems[0]
    password = url.split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[-1]
    assert password not in problems[0]


@pytest.mark.parametrize("value", [
    "https://example.com/@someone",           # not a credential URL
    "postgresql://db.internal/app",           # no user part
    "postgresql:///app?host=/run/postgresql",  # a socket
    "redis://127.0.0.1:6379/0",
    "postgresql+psycopg://app:s3cret@db:5432/app?sslmode=verify-full&sslrootcert=/etc/ca.crt",
    42, True, None,
])
def test_ordinary_values_pass(value):
    assert app_env_problems({"VALUE": value}) == []


def test_names_and_line_breaks_are_named_without_values():
    problems = app_env_problems({"1BAD": "x", "MULTI": "top-secret\nline", "LIST": ["a"], "GOOD": "ok"})
    assert problems == [
        "'1BAD' is not an environment variable name (letters, digits and '_', not starting with a digit)",
        "app_env.LIST must be a string or a number, not a list",
        "app_env.MULTI must be one line (it holds a line break or a NUL)",
    ]
    assert not any("top-secret" in p for p in problems)


def test_app_env_must_be_a_mapping():
    with pytest.raises(AnsibleFilterError, match="app_env must be a mapping"):
        app_env_problems(["DATABASE_URL=x"])
