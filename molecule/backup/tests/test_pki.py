"""The private CA across two hosts: backup-s3 keeps it, backup-db gets certificates it signs.

The exporters' certificates are covered by test_monitoring.py; here one more certificate goes
through the lifecycle an operator meets: issued, kept, renewed near its end, re-issued when its
names change, and bad input refused before anything changes.
"""
from __future__ import annotations

import json

import pytest

from conftest import assert_no_secret_in, play_recap, run_playbook

testinfra_hosts = ["backup-db"]

PKI = "/etc/botstack-pki"


def certificate_play(tmp_path, **role_vars) -> tuple[int, dict, str]:
    """Apply the certificate entry point to backup-db; return rc, its recap and the output."""
    playbook = tmp_path / "certificate.yml"
    playbook.write_text(json.dumps([{
        "name": "A drill certificate",
        "hosts": "backup-db",
        "become": True,
        "tasks": [{"name": "Issue it", "ansible.builtin.include_role": {
            "name": "botstack.deploy.pki", "tasks_from": "certificate"},
            "vars": {"pki_certificate_name": "drill", **role_vars}}],
    }]))
    result = run_playbook(playbook)
    output = result.stdout + result.stderr
    return result.returncode, play_recap(result.stdout).get("backup-db", {}), output


def serial(host) -> str:
    return host.check_output("openssl x509 -noout -serial -in %s/drill.crt", PKI)


@pytest.fixture
def drill(host):
    yield
    host.run("rm -f %s/drill.key %s/drill.csr %s/drill.crt", PKI, PKI, PKI)


def test_a_certificate_is_issued_kept_renewed_and_reissued(host, tmp_path, drill):
    names = ["DNS:drill.internal", "IP:10.9.8.7"]
    rc, recap, output = certificate_play(tmp_path, pki_certificate_sans=names, pki_certificate_valid_days=60)
    assert rc == 0 and recap["changed"] > 0, output[-3000:]
    host.check_output("openssl verify -CAfile %s/ca.crt %s/drill.crt", PKI, PKI)
    text = host.check_output("openssl x509 -noout -text -in %s/drill.crt", PKI)
    assert "DNS:drill.internal" in text and "IP Address:10.9.8.7" in text and "TLS Web Server Authentication" in text
    first = serial(host)

    # Unchanged description, far from its end: kept.
    rc, recap, output = certificate_play(tmp_path, pki_certificate_sans=names, pki_certificate_valid_days=60)
    assert rc == 0 and recap["changed"] == 0, output[-3000:]
    assert serial(host) == first

    # Within the renewal window (60 days left, renew at 90): a new certificate.
    rc, recap, output = certificate_play(tmp_path, pki_certificate_sans=names, pki_certificate_renew_days=90)
    assert rc == 0 and recap["changed"] > 0, output[-3000:]
    renewed = serial(host)
    assert renewed != first

    # A new name: re-issued with it, same key.
    key_before = host.file(f"{PKI}/drill.key").sha256sum
    rc, recap, output = certificate_play(tmp_path, pki_certificate_sans=[*names, "DNS:drill2.internal"])
    assert rc == 0 and recap["changed"] > 0, output[-3000:]
    assert serial(host) != renewed and host.file(f"{PKI}/drill.key").sha256sum == key_before
    assert "DNS:drill2.internal" in host.check_output("openssl x509 -noout -ext subjectAltName -in %s/drill.crt", PKI)


@pytest.mark.parametrize(("role_vars", "fragment"), [
    ({"pki_certificate_sans": ["drill.internal"]}, "'IP:<address>' or 'DNS:<name>'"),
    ({"pki_certificate_sans": []}, "pki_certificate_sans as a list"),
    ({"pki_certificate_sans": ["DNS:x"], "pki_certificate_usage": "email"}, "pki_certificate_usage"),
    ({"pki_certificate_sans": ["DNS:x"], "pki_ca_host": "ca.example.invalid"}, "is not a host of this inventory"),
])
def test_bad_input_is_refused_before_anything_changes(host, tmp_path, role_vars, fragment):
    rc, recap, output = certificate_play(tmp_path, **role_vars)
    assert rc != 0, output[-3000:]
    assert fragment in output, output[-3000:]
    assert recap.get("changed", 0) == 0, recap
    assert_no_secret_in(output, f"rejecting {role_vars}")
    assert not host.file(f"{PKI}/drill.key").exists
