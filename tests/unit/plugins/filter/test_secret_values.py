"""secret_values and the modules' masking: what failure evidence may never show."""
from __future__ import annotations

from ansible_collections.botstack.deploy.plugins.filter.redact import secret_values
from ansible_collections.botstack.deploy.plugins.module_utils.redact import MASK, forms, mask

ENV = {"DATABASE_URL": "postgres://shop:p%40ss-W0rd-77@db:5432/shop", "LOG_LEVEL": "INFO", "WORKERS": "4",
       "DEBUG": "false", "SECRET_KEY": "k3y-0f-the-shop", "X": "abc"}


def test_every_value_the_url_password_and_the_vault_values_but_not_plain_ones():
    values = secret_values(ENV, ["vault-Token-9a8b"], plain=["LOG_LEVEL"])
    assert "k3y-0f-the-shop" in values and "vault-Token-9a8b" in values
    assert "p%40ss-W0rd-77" in values and "p@ss-W0rd-77" in values  # as written, and as the app decodes it
    assert ENV["DATABASE_URL"] in values
    assert not {"INFO", "4", "false", "abc"} & set(values)


def test_masking_catches_the_forms_an_app_prints_a_value_in():
    secret = "p@ss \"W0rd\"/x"
    text = ("repr: 'p@ss \"W0rd\"/x' json: \"p@ss \\\"W0rd\\\"/x\" url: p%40ss%20%22W0rd%22%2Fx plus: p%40ss+%22W0rd%22%2Fx")
    masked = mask({"msg": text, "journal": [text]}, forms([secret]))
    assert "W0rd" not in str(masked), masked
    assert masked["msg"].count(MASK) == 4


def test_a_module_returns_nothing_of_its_secrets_neither_on_success_nor_on_failure(module, tmp_path):
    """health_gate copies the journal of a unit that failed into its evidence: an app printing its settings."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text("#!/bin/sh\nprintf 'Id=app.service\\nActiveState=failed\\nSubState=failed\\n"
                                      "Result=exit-code\\nLoadState=loaded\\nNRestarts=0\\n'\n")
    (bindir / "journalctl").write_text("#!/bin/sh\necho \"ValidationError input_value='adm1n-Passw0rd' "
                                       "url=postgres://u:adm1n-Passw0rd@db/x\"\n")
    for tool in bindir.iterdir():
        tool.chmod(0o755)
    failed = module("health_gate", {"units": ["app.service"], "timeout": 5, "secrets": ["adm1n-Passw0rd"]},
                    extra_path=str(bindir))
    assert failed["failed"] is True and "input_value=" in failed["msg"]
    assert "adm1n-Passw0rd" not in str(failed), failed
    # Masking wraps both ways out of the module: a gate that passes still returns its result.
    (bindir / "systemctl").write_text("#!/bin/sh\nprintf 'Id=app.service\\nActiveState=active\\nSubState=running\\n"
                                      "Result=success\\nLoadState=loaded\\nNRestarts=0\\n'\n")
    passed = module("health_gate", {"units": ["app.service"], "successes": 1, "timeout": 5,
                                    "secrets": ["adm1n-Passw0rd"]}, extra_path=str(bindir))
    assert passed["_rc"] == 0 and passed.get("failed") is not True and passed["consecutive"] == 1, passed
