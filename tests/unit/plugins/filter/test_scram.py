"""scram_sha256 against RFC 7677's test vector and a real SCRAM client exchange."""
from __future__ import annotations

import base64
import hashlib
import hmac
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))
from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.botstack.deploy.plugins.filter import scram  # noqa: E402


def _parse(verifier):
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored, server = keys.split(":")
    return method, int(iterations), base64.b64decode(salt), base64.b64decode(stored), base64.b64decode(server)


def test_rfc7677_vector(monkeypatch):
    # RFC 7677 section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    monkeypatch.setattr(scram.hashlib, "sha256", _sha256_with_salt(salt))
    verifier = scram.scram_sha256("pencil", "seed")
    _, iterations, got_salt, stored, server = _parse(verifier)
    assert iterations == 4096 and got_salt == salt
    # Recompute the client proof of the RFC exchange from StoredKey and check the server signature.
    auth_message = (b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
                    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
                    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    server_signature = hmac.new(server, auth_message, hashlib.sha256).digest()
    assert base64.b64encode(server_signature) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    client_signature = hmac.new(stored, auth_message, hashlib.sha256).digest()
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature))
    assert hashlib.sha256(client_key).digest() == stored


def _sha256_with_salt(salt):
    real = hashlib.sha256

    def fake(data=b""):
        if data.startswith(b"botstack-scram:"):
            class _Salt:
                def digest(self):
                    return salt + b"\0" * 16
            return _Salt()
        return real(data)
    return fake


def test_same_input_same_verifier_and_seed_changes_salt():
    a = scram.scram_sha256("s3cret", "db1bot")
    assert a == scram.scram_sha256("s3cret", "db1bot")
    assert a != scram.scram_sha256("s3cret", "db2bot")
    assert a.startswith("SCRAM-SHA-256$4096:")


@pytest.mark.parametrize(("password", "seed", "iterations"), [("", "x", 4096), ("p", "", 4096), ("p", "x", 10)])
def test_bad_input(password, seed, iterations):
    with pytest.raises(AnsibleFilterError):
        scram.scram_sha256(password, seed, iterations)
