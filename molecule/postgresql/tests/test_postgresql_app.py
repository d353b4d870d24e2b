"""From the app host: TLS + password works; everything else is refused."""
from __future__ import annotations

testinfra_hosts = ["pg-app"]

def test_app_user_connects_with_tls_and_password(host):
    out = host.check_output(
        "PGPASSWORD=bot-db-secret-for-tests psql -XAtq 'host=pg-db user=bot dbname=botstack sslmode=require'"
        " -c 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'")
    assert out == "t"


def test_app_user_without_tls_is_refused(host):
    result = host.run("PGPASSWORD=bot-db-secret-for-tests psql -XAtq 'host=pg-db user=bot dbname=botstack sslmode=disable' -c 'SELECT 1'")
    assert result.rc != 0
    assert "rejects connection" in result.stderr or "no encryption" in result.stderr


def test_wrong_password_is_refused(host):
    result = host.run("PGPASSWORD=wrong psql -XAtq 'host=pg-db user=bot dbname=botstack sslmode=require' -c 'SELECT 1'")
    assert result.rc != 0
    assert "password authentication failed" in result.stderr


def test_postgres_superuser_cannot_log_in_over_the_network(host):
    result = host.run("PGPASSWORD=anything psql -XAtq 'host=pg-db user=postgres dbname=postgres sslmode=require' -c 'SELECT 1'")
    assert result.rc != 0
    assert "rejects connection" in result.stderr
