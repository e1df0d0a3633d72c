"""`orchestrator status`: counts per state, one job in full (reply and tool outputs), JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import cli, status_view
from orchestrator.store import base as store_base


@pytest.fixture(autouse=True)
def in_tmp(cli_in_tmp: Path) -> None:
    (cli_in_tmp / "config.yaml").write_text("worker: {sqlite_path: jobs.sqlite3}\n")


def test_status_json_for_the_queue_and_for_one_job(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["enqueue", "--assistant", "asst_1", "--message", "hi", "--count", "2"]) == 0
    first, _ = capsys.readouterr().out.split()
    assert cli.main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == {
        "queued": 2,
        "running": 0,
        "waiting_approval": 0,
        "succeeded": 0,
        "failed": 0,
    }
    assert {j["id"] for j in data["jobs"]} >= {first}
    assert cli.main(["status", first, "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["job"]["id"] == first
    assert one["job"]["state"] == "queued"
    assert one["job"]["spec"]["messages"] == [{"role": "user", "content": "hi"}]
    assert [h["message"] for h in one["history"]] == ["enqueued"]
    assert one["tool_outputs"] == {}


def test_one_job_shows_the_whole_reply_and_every_output() -> None:
    reply = "A long answer. " * 20
    job = store_base.Job(
        id="job_1",
        spec=store_base.CreateJob(assistant_id="asst_1"),
        state=store_base.JobState.SUCCEEDED,
        attempts=1,
        thread_id="thread_1",
        run_id="run_1",
        lease_owner=None,
        lease_expires_at=None,
        epoch=1,
        result=store_base.JobResult(status="completed", reply=reply, tool_calls=2),
        created_at=0.0,
        updated_at=0.0,
        queueing_lock=None,
    )
    outputs = {"call_a": '{"temperature": 21}', "call_b": "x" * 300}
    text = status_view.job_detail(job, [], outputs)
    assert reply.strip() in text  # not cut at the table's width
    assert '  call_a: {"temperature": 21}' in text
    assert "x" * 300 in text
    assert status_view.job_table([job]).count("…") == 1  # the table still cuts
