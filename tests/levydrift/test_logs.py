"""Structured logs: every record becomes one JSON line, whatever its ``extra`` holds."""

from __future__ import annotations

import io
import json
import logging

import pytest

from levydrift.logs import JsonLineFormatter


@pytest.fixture
def log_to_buffer() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    logger = logging.getLogger("test-logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.handlers.clear()


@pytest.mark.parametrize(("extra", "expected"), [
    ({"window_ends": {0: 1999, 1: 2042}}, {"0": 1999, "1": 2042}),  # the trainer's partitions
    ({"window_ends": {(0, 1): "x"}}, {"(0, 1)": "x"}),
    ({"window_ends": {"big": 2**70}}, {"big": 2**70}),
])
def test_any_extra_becomes_one_json_line_never_a_logging_error(
        log_to_buffer: tuple[logging.Logger, io.StringIO], capsys: pytest.CaptureFixture[str],
        extra: dict, expected: dict) -> None:
    logger, stream = log_to_buffer
    logger.info("training started", extra=extra)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["message"] == "training started"
    assert entry["window_ends"] == expected
    assert "Logging error" not in capsys.readouterr().err


def test_secret_looking_keys_are_masked(log_to_buffer: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log_to_buffer
    logger.info("connecting", extra={"sasl.password": "hunter2", "bootstrap": "b:9092"})
    entry = json.loads(stream.getvalue())
    assert entry["sasl.password"] == "***" and entry["bootstrap"] == "b:9092"


def test_kafka_client_logs_go_where_the_logs_are_configured_to(tmp_path) -> None:
    """librdkafka logs through Python logging: with the logs in a file, a client that cannot
    reach its broker writes nothing raw to the terminal."""
    import subprocess
    import sys

    script = f"""
from confluent_kafka import Producer
from levydrift.kafka import producer_config
from levydrift.logs import configure
from levydrift.settings import KafkaSettings
configure("INFO", open({str(tmp_path / "out.log")!r}, "a"))
producer = Producer(producer_config(KafkaSettings(bootstrap_servers="127.0.0.1:1")))
producer.produce("t", b"x")
producer.flush(3)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    entries = [json.loads(line) for line in (tmp_path / "out.log").read_text().splitlines()]
    assert any(entry["logger"] == "librdkafka" and "rdkafka#producer" in entry["message"]
               for entry in entries), entries
