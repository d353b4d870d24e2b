"""nginx converged by botstack.deploy.nginx, with a certificate from Pebble."""
from __future__ import annotations

import pathlib
import shlex
import subprocess

import pytest
import requests
import urllib3
from conftest import assert_role_rejects, container_address, molecule_path, play_recap, run_playbook

TOOLS = molecule_path("MOLECULE_PROJECT_DIRECTORY") / ".venv-tools" / "bin"
CURL = "curl -sS --cacert /tmp/pebble-roots.pem --resolve app.test:443:127.0.0.1"
PEBBLE = "--server https://localhost:14000/dir --no-random-sleep-on-renew"


@pytest.fixture(scope="module")
def pebble_root(host):
    """Pebble's issuing root, from its management interface."""
    host.check_output("curl -sS --cacert /etc/pebble/ca.crt https://127.0.0.1:15000/roots/0 > /tmp/pebble-roots.pem")
    return "/tmp/pebble-roots.pem"


def test_certificate_was_issued_by_pebble_through_http01(host, pebble_root):
    out = host.run("openssl s_client -connect 127.0.0.1:443 -servername app.test -CAfile %s -verify_return_error"
                   " </dev/null 2>&1", pebble_root).stdout
    assert "Verify return code: 0 (ok)" in out, out
    assert host.check_output("readlink /etc/nginx/botstack/ssl/botstack.crt") == "/etc/letsencrypt/live/app.test/fullchain.pem"


def test_certbot_renew_dry_run_against_pebble(host):
    result = host.run("REQUESTS_CA_BUNDLE=/etc/pebble/ca.crt certbot renew --dry-run " + PEBBLE)
    assert result.rc == 0, result.stdout + result.stderr
    assert host.file("/etc/letsencrypt/renewal-hooks/deploy/50-botstack-reload-nginx").mode == 0o755
    assert host.service("certbot.timer").is_enabled


def test_https_response_carries_every_header(host, pebble_root):
    headers = host.check_output(CURL + " -D - -o /dev/null https://app.test/").lower()
    assert headers.startswith("http/2 200")
    for expected in ["strict-transport-security: max-age=31536000", "x-frame-options: deny",
                     "content-security-policy: default-src 'self'", "x-content-type-options: nosniff",
                     "referrer-policy: strict-origin-when-cross-origin"]:
        assert expected in headers, headers
    assert "server: nginx\r" in headers or "server: nginx\n" in headers  # no version


def test_http_redirects_to_https_except_acme(host):
    redirect = host.check_output("curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Host: app.test' http://127.0.0.1/x")
    assert redirect == "301 https://app.test/x"
    host.run("printf ok > /var/www/letsencrypt/.well-known/acme-challenge/probe 2>/dev/null ||"
             " (mkdir -p /var/www/letsencrypt/.well-known/acme-challenge && printf ok > /var/www/letsencrypt/.well-known/acme-challenge/probe)")
    assert host.check_output("curl -sS -H 'Host: app.test' http://127.0.0.1/.well-known/acme-challenge/probe") == "ok"


def test_static_files_and_gzip(host, pebble_root):
    assert host.check_output(CURL + " https://app.test/static/health") == "health from the app"
    host.run_expect([0], "python3 -c \"print('a bot reply, ' * 300)\" > /srv/upstream/large.txt")
    headers = host.check_output(CURL + " -H 'Accept-Encoding: gzip' -D - -o /dev/null https://app.test/static/large.txt")
    assert "content-type: text/plain" in headers.lower() and "content-encoding: gzip" in headers.lower(), headers
    plain = host.check_output(CURL + " -D - -o /dev/null https://app.test/static/large.txt")
    assert "content-encoding" not in plain.lower(), plain


def test_metrics_only_from_localhost(host, pebble_root):
    assert host.check_output(CURL + " https://app.test/metrics") == "metrics from the app"
    urllib3.disable_warnings()
    address = container_address(host.backend.host)
    outside = requests.get(f"https://{address}/metrics", headers={"Host": "app.test"}, verify=False, timeout=10)
    assert outside.status_code == 403


def test_rate_limit_returns_429_past_the_burst(host, pebble_root):
    # The default allows 30 r/s with a burst of 60 (ordinary API use from one address passes): 150 requests at
    # once from one address pass the burst.
    codes = host.check_output(
        "for i in $(seq 1 150); do " + CURL + " -o /dev/null -w '%{http_code}\\n' https://app.test/ & done; wait").split()
    assert len(codes) == 150 and codes.count("200") >= 60, codes
    assert "429" in codes, codes
    premium = host.check_output(CURL + " -H 'X-Api-Key: k1' -o /dev/null -w '%{http_code}' https://app.test/")
    assert premium == "200"


def test_the_webhook_limits_each_sender_but_the_trusted_networks(host, pebble_root):
    """Converged with a webhook rate of 5 r/s (burst 10) and loopback as the trusted senders (Telegram's networks
    by default): 80 updates at once from 127.0.0.1 all reach the app; from the host's own address, not trusted,
    the same burst ends in 429."""
    burst = ("for i in $(seq 1 80); do curl -sS --cacert /tmp/pebble-roots.pem --resolve app.test:443:{address} "
             "-o /dev/null -w '%{{http_code}}\\n' https://app.test/webhook/telegram & done; wait")
    trusted = host.check_output(burst.format(address="127.0.0.1")).split()
    assert len(trusted) == 80 and "429" not in trusted, trusted
    untrusted = host.check_output(burst.format(address=container_address(host.backend.host))).split()
    assert len(untrusted) == 80 and untrusted.count("429") >= 40, untrusted


def test_access_log_is_json(host):
    line = host.check_output("tail -n 1 /var/log/nginx/botstack.access.log")
    assert line.startswith('{"time":') and '"status":' in line


def test_sslyze_mozilla_intermediate(host, reports_dir, pebble_root):
    address = container_address(host.backend.host)
    roots = reports_dir / "pebble-roots.pem"
    roots.write_text(host.check_output("cat %s", pebble_root) + "\n")
    result = subprocess.run([str(TOOLS / "sslyze"), "--mozilla_config=intermediate", "--certinfo",
                             f"--certinfo_ca_file={roots}", f"app.test:443{{{address}}}"],
                            capture_output=True, text=True, timeout=120, check=False)
    (reports_dir / "sslyze.txt").write_text(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "app.test:443: OK - Compliant." in result.stdout


def test_gixy_finds_no_issues(host, reports_dir):
    dump = host.check_output("nginx -T 2>/dev/null")
    path = pathlib.Path(reports_dir) / "nginx-T.conf"
    path.write_text(dump)
    result = subprocess.run([str(TOOLS / "gixy"), "-", "-f", "text"], input=dump, capture_output=True, text=True,
                            timeout=60, check=False)
    (reports_dir / "gixy.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No issues found" in result.stdout, result.stdout


# Files this role wrote under other app names: "oldbot" (the app renamed: its site claims app.test, and an
# upstream left without a site) goes; "shopbot", another app of this host under its own name, stays.
OTHER_APPS = {
    "/etc/nginx/sites-available/oldbot.conf":
        "# botstack.deploy site: oldbot\nserver {\n    listen 127.0.0.1:8081;\n    server_name app.test;\n    return 204;\n}\n",
    "/etc/nginx/botstack/upstream-oldbot.conf": "# botstack.deploy upstream: oldbot\n",
    "/etc/nginx/botstack/upstream-gone.conf": "# botstack.deploy upstream: gone\n",
    "/etc/nginx/sites-available/shopbot.conf":
        "# botstack.deploy site: shopbot\nserver {\n    listen 127.0.0.1:8082;\n    server_name shop.test;\n    return 204;\n}\n",
    "/etc/nginx/botstack/upstream-shopbot.conf": "# botstack.deploy upstream: shopbot\n",
}


def plant_other_apps(host):
    for path, content in OTHER_APPS.items():
        host.check_output(f"printf '%s' {shlex.quote(content)} > {path}")
    host.check_output("mkdir -p /etc/nginx/botstack/upstream-oldbot.d && touch /etc/nginx/botstack/upstream-oldbot.d/a.conf"
                      " && ln -sf /etc/nginx/sites-available/oldbot.conf /etc/nginx/sites-enabled/oldbot.conf"
                      " && ln -sf /etc/nginx/sites-available/shopbot.conf /etc/nginx/sites-enabled/shopbot.conf")


def test_a_new_alias_re_issues_the_certificate_with_both_names(host, ephemeral_dir, pebble_root):
    """A changed name list gets a certificate for the new list; an unchanged one issues nothing. The same run
    removes what a renamed app left (plant_other_apps) and keeps another app's site."""
    import json
    from conftest import play_recap, run_playbook

    plant_other_apps(host)
    host.run("grep -q 'www.app.test' /etc/hosts || echo '127.0.0.1 www.app.test' >> /etc/hosts")
    playbook = ephemeral_dir / "alias.yml"
    role_vars = {"nginx_server_name": "app.test", "nginx_server_aliases": ["www.app.test"], "nginx_tls_mode": "acme",
                 "nginx_acme_email": "ops@botstack.test", "nginx_acme_directory": "https://localhost:14000/dir",
                 "nginx_acme_ca_bundle": "/etc/pebble/ca.crt", "nginx_static_root": "/srv/upstream"}
    playbook.write_text(json.dumps([{"name": "Alias", "hosts": "all", "become": True,
                                     "roles": [{"role": "botstack.deploy.nginx", "vars": role_vars}]}]))
    first = run_playbook(playbook)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "re-issue it for a changed list of names" in first.stdout and "changed: [" in first.stdout
    names = host.check_output("openssl s_client -connect 127.0.0.1:443 -servername www.app.test </dev/null 2>/dev/null"
                              " | openssl x509 -noout -ext subjectAltName")
    assert "DNS:app.test" in names and "DNS:www.app.test" in names, names
    for gone in ("/etc/nginx/sites-available/oldbot.conf", "/etc/nginx/sites-enabled/oldbot.conf",
                 "/etc/nginx/botstack/upstream-oldbot.conf", "/etc/nginx/botstack/upstream-oldbot.d",
                 "/etc/nginx/botstack/upstream-gone.conf"):
        assert not host.file(gone).exists, gone
    try:
        assert host.file("/etc/nginx/sites-enabled/shopbot.conf").is_symlink
        assert host.file("/etc/nginx/botstack/upstream-shopbot.conf").exists
        assert host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8082/").stdout == "204"
        again = run_playbook(playbook)
        assert play_recap(again.stdout)[host.backend.host]["changed"] == 0, again.stdout[-3000:]
    finally:
        host.run("rm -f /etc/nginx/sites-enabled/shopbot.conf /etc/nginx/sites-available/shopbot.conf "
                 "/etc/nginx/botstack/upstream-shopbot.conf && systemctl reload nginx")


def test_rejected_config_is_rolled_back_and_nginx_keeps_serving(host, ephemeral_dir, pebble_root):
    before = host.file("/etc/nginx/sites-available/botstack.conf").sha256sum
    assert_role_rejects("nginx", {"nginx_server_name": "app.test", "nginx_acme_email": "ops@botstack.test",
                                  "nginx_acme_directory": "https://localhost:14000/dir",
                                  "nginx_acme_ca_bundle": "/etc/pebble/ca.crt", "nginx_static_root": "/srv/upstream",
                                  "nginx_server_extra": ["bogus_directive on;"]},
                        "nginx -t rejected the new configuration", ephemeral_dir, allow_changes=True)
    assert host.file("/etc/nginx/sites-available/botstack.conf").sha256sum == before
    assert host.run("nginx -t").rc == 0
    assert host.check_output(CURL + " -o /dev/null -w '%{http_code}' https://app.test/static/health") == "200"


def test_an_entry_left_unloaded_by_a_killed_run_is_loaded_by_the_retry(host, ephemeral_dir, pebble_root):
    """A switch killed between writing the upstream entry and reloading nginx: the retry reloads."""
    import json
    from conftest import play_recap, run_playbook

    entry = host.check_output("ls /etc/nginx/botstack/upstream-botstack.d/*.conf")
    name = pathlib.PurePosixPath(entry).stem
    host.run("mkdir -p /srv/green && echo green > /srv/green/health")
    host.run("systemctl is-active -q upstream-green || systemd-run --unit upstream-green "
             "/usr/bin/python3 -m http.server 8002 --bind 127.0.0.1 --directory /srv/green")
    host.run("for i in $(seq 50); do curl -sf http://127.0.0.1:8002/health && break; sleep 0.1; done")

    def switch(port, reload=True):
        playbook = ephemeral_dir / "switch.yml"
        playbook.write_text(json.dumps([{"name": "Switch", "hosts": "all", "gather_facts": False, "tasks": [
            {"name": "Point the upstream entry", "botstack.deploy.nginx_upstream_server": {
                "dir": "/etc/nginx/botstack/upstream-botstack.d", "name": name, "address": "127.0.0.1",
                "port": port, "reload": reload}}]}]))
        run = run_playbook(playbook)
        assert run.returncode == 0, run.stdout[-3000:]
        return play_recap(run.stdout)[host.backend.host]["changed"]

    try:
        # The killed run wrote the entry and never reloaded: nginx still routes to 8001.
        assert switch(8002, reload=False) == 1
        assert host.check_output(CURL + " https://app.test/health") == "health from the app"
        assert switch(8002) == 1
        assert host.check_output(CURL + " https://app.test/health") == "green"
        assert switch(8002) == 0
    finally:
        switch(8001)
        host.run("systemctl stop upstream-green")
    assert host.check_output(CURL + " https://app.test/health") == "health from the app"


def test_a_certificate_from_another_acme_server_is_issued_again_from_the_configured_one(host, pebble_root):
    """certbot's lineage records the ACME server it came from: switching the directory (staging to production;
    here another URL of the same Pebble) issues the certificate again at once, a repeat changes nothing, and
    switching back issues it again."""
    converge = molecule_path("MOLECULE_SCENARIO_DIRECTORY") / "converge.yml"
    first, other = "https://localhost:14000/dir", "https://127.0.0.1:14000/dir"

    def serial():
        return host.check_output("openssl x509 -noout -serial -in /etc/letsencrypt/live/app.test/cert.pem")

    def server():
        return host.check_output("sed -n 's/^server = //p' /etc/letsencrypt/renewal/app.test.conf")

    before = serial()
    assert server() == first
    try:
        switched = run_playbook(converge, "-e", f"nginx_acme_directory={other}")
        assert switched.returncode == 0, switched.stdout[-3000:]
        assert server() == other and serial() != before
        again = run_playbook(converge, "-e", f"nginx_acme_directory={other}")
        assert again.returncode == 0 and play_recap(again.stdout)["nginx-host"]["changed"] == 0, again.stdout[-3000:]
    finally:
        back = run_playbook(converge)
    assert back.returncode == 0 and server() == first, back.stdout[-3000:]
    assert host.check_output(CURL + " https://app.test/static/health") == "health from the app"


@pytest.mark.parametrize(("role_vars", "fragment"), [
    ({"nginx_tls_mode": "self_signed"}, "nginx_tls_mode is self_signed, so nginx_server_name must be a domain name"),
    ({"nginx_server_name": "app.test", "nginx_acme_email": "not-an-email"}, "nginx_acme_email must be an email address"),
    ({"nginx_server_name": "app.test", "nginx_acme_email": "a@b.test", "nginx_rate_limit": "lots"}, "must look like"),
    ({"nginx_server_name": "app.test", "nginx_acme_email": "a@b.test",
      "nginx_content_security_policy": "default-src 'self'\nX-Evil: 1"}, "must be one line"),
    ({"nginx_server_name": "app.test", "nginx_acme_email": "a@b.test", "nginx_webhook_trusted_sources": ["149.154.160.1"]},
     "nginx_webhook_trusted_sources must list networks"),
])
def test_bad_input_is_rejected_before_anything_changes(role_vars, fragment, ephemeral_dir):
    assert_role_rejects("nginx", role_vars, fragment, ephemeral_dir)
