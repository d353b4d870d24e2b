"""playbooks/secrets.yml: a new encrypted vault for an inventory - strong URL-safe values for every secret
it can make, a working age key pair, the provider's secrets left to fill in, none of it in the output at
-vvv, and an existing vault never overwritten."""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys

import pytest
import yaml
from ansible.constants import DEFAULT_VAULT_ID_MATCH
from ansible.parsing.vault import VaultLib, VaultSecret

pyrage = pytest.importorskip("pyrage")

ROOT = pathlib.Path(__file__).resolve().parents[3]
PLAYBOOK = ROOT / "playbooks" / "secrets.yml"
PASSWORD = "correct horse battery staple"


def run_playbook(inventory, password_file, *extra):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH="%s/.collections:%s" % (ROOT, ROOT), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="default")
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    cmd = [str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-vvv",
           "-e", "ansible_python_interpreter=%s" % sys.executable, "-e", "new_vault_inventory=%s" % inventory,
           *(["-e", "new_vault_password_file=%s" % password_file] if password_file else []), *extra, str(PLAYBOOK)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def decrypt(path):
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(PASSWORD.encode()))])
    return vault.decrypt(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    work = tmp_path_factory.mktemp("new-vault")
    inventory = work / "production"
    shutil.copytree(ROOT / "inventories" / "production", inventory)
    password_file = work / "vault-pass"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    first = run_playbook(inventory, password_file)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    vault = inventory / "group_vars" / "all" / "vault.yml"
    return dict(inventory=inventory, password_file=password_file, first=first, vault=vault,
                text=decrypt(vault), example=(vault.parent / "vault.yml.example").read_text())


def test_the_file_is_encrypted_and_only_its_owner_reads_it(written):
    raw = written["vault"].read_text()
    assert raw.startswith("$ANSIBLE_VAULT;1.1;AES256"), raw[:40]
    assert stat.S_IMODE(written["vault"].stat().st_mode) == 0o600


def test_every_secret_that_can_be_made_is_strong_and_url_safe_and_new(written):
    values = yaml.safe_load(written["text"])
    example = yaml.safe_load(written["example"])
    assert set(values) == set(example), "the same secrets as the example, no more, no fewer"
    made = {k: v for k, v in values.items() if not str(v).startswith("CHANGE-ME")}
    passwords = {k: v for k, v in made.items() if not k.endswith("_age_identity")}
    assert {"vault_db_bot_password", "vault_redis_bot_password", "vault_telegram_webhook_secret",
            "vault_pitr_cipher_pass"} <= set(passwords)
    for name, value in passwords.items():
        # 43 of 62 symbols: 256 bits; letters and digits pass a URL, a Redis ACL and Telegram's secret_token.
        assert re.fullmatch(r"[A-Za-z0-9]{43}", value), name
    assert len(set(passwords.values())) == len(passwords), "each secret its own value"


def test_the_age_identity_is_a_real_key_pair_and_its_recipient_is_printed(written):
    identity = yaml.safe_load(written["text"])["vault_backup_age_identity"]
    recipient = str(pyrage.x25519.Identity.from_str(identity).to_public())
    assert recipient in written["first"].stdout
    sealed = pyrage.encrypt(b"a backup", [pyrage.x25519.Recipient.from_str(recipient)])
    assert pyrage.decrypt(sealed, [pyrage.x25519.Identity.from_str(identity)]) == b"a backup"


def test_the_providers_secrets_are_left_to_fill_in_and_named(written):
    values = yaml.safe_load(written["text"])
    left = sorted(k for k, v in values.items() if str(v).startswith("CHANGE-ME"))
    assert left == ["vault_alert_smtp_password", "vault_alert_webhook_url", "vault_backup_s3_access_key_id",
                    "vault_backup_s3_secret_access_key"]
    for name in left:
        assert name in written["first"].stdout
    # The example's comments stay beside the values.
    assert "# pgBackRest repository passphrase" in written["text"]


def test_no_secret_reaches_the_output_at_any_verbosity(written):
    output = written["first"].stdout + written["first"].stderr
    values = yaml.safe_load(written["text"])
    leaked = [k for k, v in values.items() if not str(v).startswith("CHANGE-ME") and str(v) in output]
    assert not leaked


def test_a_second_run_changes_nothing_and_never_overwrites(written):
    before = written["vault"].read_bytes()
    again = run_playbook(written["inventory"], written["password_file"])
    assert again.returncode == 0 and re.search(r"changed=0\b", again.stdout), again.stdout[-3000:]
    assert "exists and was left as it is" in again.stdout
    assert written["vault"].read_bytes() == before


def test_without_a_password_file_it_stops_and_says_how_to_make_one(written, tmp_path):
    inventory = tmp_path / "inv"
    shutil.copytree(written["inventory"] / "group_vars" / "all", inventory / "group_vars" / "all")
    (inventory / "group_vars" / "all" / "vault.yml").unlink()
    result = run_playbook(inventory, None)
    assert result.returncode != 0
    assert "new_vault_password_file" in result.stdout and "openssl rand" in result.stdout, result.stdout[-2000:]
    assert not (inventory / "group_vars" / "all" / "vault.yml").exists()
