"""module_utils.systemd.journal: the evidence of a run that just failed, even when journald is slow."""
from __future__ import annotations

from ansible_collections.botstack.deploy.plugins.module_utils import systemd

INVOCATION = "0123456789abcdef0123456789abcdef"


class FakeModule:
    """run_command answers with the journal as journald has ingested it so far."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def run_command(self, argv):
        self.calls.append(argv)
        return 0, self.answers.pop(0) if len(self.answers) > 1 else self.answers[0], ""


def test_lines_that_arrive_late_are_waited_for():
    module = FakeModule(["-- No entries --\n", "-- No entries --\n", "2026-11-23T10:00:00 host sh[1]: boom\n"])
    lines = systemd.journal(module, "app.service", {"InvocationID": INVOCATION}, 30)
    assert lines == ["2026-11-23T10:00:00 host sh[1]: boom"]
    assert len(module.calls) == 3
    assert "_SYSTEMD_INVOCATION_ID=" + INVOCATION in module.calls[0]


def test_a_run_without_output_gives_up_after_the_wait(monkeypatch):
    monkeypatch.setattr(systemd, "JOURNAL_WAIT", 0.3)
    module = FakeModule(["-- No entries --\n"])
    assert systemd.journal(module, "app.service", {"InvocationID": INVOCATION}, 30) == ["-- No entries --"]
    assert 1 < len(module.calls) <= 3


def test_present_lines_are_read_once():
    module = FakeModule(["-- Boot 1 --\n2026-11-23T10:00:00 host app[1]: started\n"])
    assert systemd.journal(module, "app.service", {"InvocationID": INVOCATION}, 30)[-1].endswith("started")
    assert len(module.calls) == 1
