"""upstream_entry: a balancer's first entry for an app host, named as the deploy role will name it."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.botstack.deploy.plugins.filter.upstream_entry import upstream_entry


def test_the_private_bind_address_then_ansible_host_then_the_name_marked_down_until_deployed():
    assert upstream_entry({"inventory_hostname": "app1", "app_bind_address": "10.0.0.11", "ansible_host": "203.0.113.5"}) \
        == {"name": "app1", "address": "10.0.0.11", "port": 8001, "down": True}
    assert upstream_entry({"inventory_hostname": "app2", "app_bind_address": "0.0.0.0", "ansible_host": "10.0.0.12"},
                          8101)["address"] == "10.0.0.12"
    assert upstream_entry({"inventory_hostname": "app3"})["address"] == "app3"
    assert upstream_entry({"inventory_hostname": "app4", "deploy_upstream_address": "app4.internal",
                           "app_bind_address": "10.0.0.14"})["address"] == "app4.internal"


def test_anything_but_a_hosts_variables_is_refused():
    with pytest.raises(AnsibleFilterError, match="hostvars"):
        upstream_entry("app1")
