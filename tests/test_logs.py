"""Log lines: JSON objects with the ``extra`` fields, or text with key=value pairs."""

from __future__ import annotations

import json
import logging

from orchestrator import logs


def record(**extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord(
        {"name": "orchestrator.polling", "levelname": "INFO", "levelno": 20, "msg": "status %s"}
    )
    rec.args = ("queued",)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_message_and_extras() -> None:
    line = logs.JsonFormatter().format(record(run_id="run_1", action="status"))
    data = json.loads(line)
    assert data["message"] == "status queued"
    assert data["logger"] == "orchestrator.polling"
    assert data["level"] == "INFO"
    assert data["run_id"] == "run_1"
    assert data["action"] == "status"


def test_json_lines_survive_values_json_cannot_hold() -> None:
    data = json.loads(logs.JsonFormatter().format(record(calls={"b", "a"}.__class__)))
    assert "calls" in data


def test_text_lines_append_extras() -> None:
    line = logs.TextFormatter().format(record(run_id="run_1"))
    assert line.endswith("status queued run_id=run_1")
