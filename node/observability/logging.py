"""Logging set-up: one short line per event, human-readable or JSON lines.

Every line about a job starts with `request <id>:` (on-chain) or `off-chain job <id>` so it can be grepped; in JSON
lines that id is also a field (`request_id`, `job_id`), for log pipelines that filter on fields.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_JOB_ID = re.compile(r"^(?:request (?P<request_id>\d+)\b|off-chain job (?P<job_id>[0-9a-f]{32})\b)")


class JsonFormatter(logging.Formatter):
    """Formats a log record as one JSON object (time, level, logger, message, and `request_id` when the record has
    one)."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object on one line: `ts` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `msg`, plus
        `request_id` (int) or `job_id` (32 hex digits) when the message starts with one, and `exc` (the traceback)
        when the record carries an exception."""
        message = record.getMessage()
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": message,
        }
        found = _JOB_ID.match(message)
        if found is not None:
            if found["request_id"] is not None:
                entry["request_id"] = int(found["request_id"])
            else:
                entry["job_id"] = found["job_id"]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Sends every log line to stderr at `level` ("DEBUG", "INFO", ...; a bad name raises `ValueError`), as text
    (`time level logger: message`) or as JSON lines; replaces the root logger's handlers, and quiets the libraries
    that log every request to WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter (every HTTP request) drowns the node's own lines.
    for noisy in ("web3", "websockets", "aiohttp.access", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
