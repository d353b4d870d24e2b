"""scram_sha256 against RFC 7677's test vector, and its keep-or-renew behaviour."""
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


def test_rfc7677_vector():
    # RFC 7677 section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    _, iterations, got_salt, stored, server = _parse(scram.verifier("pencil", salt, 4096))
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


def test_a_new_verifier_gets_a_fresh_random_salt():
    first, second = scram.scram_sha256("s3cret"), scram.scram_sha256("s3cret")
    assert first.startswith("SCRAM-SHA-256$4096:") and first != second
    assert _parse(first)[2] != _parse(second)[2] and len(_parse(first)[2]) == 16
    assert scram.matches("s3cret", first) and scram.matches("s3cret", second)


def test_the_stored_verifier_is_kept_while_the_password_matches():
    stored = scram.verifier("s3cret", b"0123456789abcdef", 8192)
    assert scram.scram_sha256("s3cret", stored) == stored


@pytest.mark.parametrize("stored", ["", "md5a3556571e93b0d20722ba62be61e8c2d", "SCRAM-SHA-256$4096:garbage"])
def test_anything_else_is_renewed(stored):
    renewed = scram.scram_sha256("s3cret", stored)
    assert renewed != stored and scram.matches("s3cret", renewed)


def test_a_rotated_password_gets_a_new_salt():
    stored = scram.scram_sha256("old-password")
    rotated = scram.scram_sha256("new-password", stored)
    assert rotated != stored and _parse(rotated)[2] != _parse(stored)[2]
    assert scram.matches("new-password", rotated) and not scram.matches("old-password", rotated)


@pytest.mark.parametrize(("password", "iterations"), [("", 4096), ("p", 10)])
def test_bad_input(password, iterations):
    with pytest.raises(AnsibleFilterError):
        scram.scram_sha256(password, "", iterations)
