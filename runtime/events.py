"""The event log: every state change an actor reports, in order, with its time.

Sinks receive each event as it is appended; `JsonlSink` writes `events.jsonl` and
keeps the SHA-256 of exactly the bytes written, which is what determinism is judged on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import IO, Any

Sink = Callable[[float, str, str, dict[str, Any]], None]


class EventLog:
    __slots__ = ("sinks", "count")

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = list(sinks)
        self.count = 0

    def append(self, time: float, source: str, kind: str, fields: dict[str, Any]) -> None:
        self.count += 1
        for sink in self.sinks:
            sink(time, source, kind, fields)


class JsonlSink:
    """Writes one JSON object per line (to `out`, if given) and hashes what it writes."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out
        self._hash = hashlib.sha256()
        self._dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode

    def __call__(self, time: float, source: str, kind: str, fields: dict[str, Any]) -> None:
        line = self._dumps({"t": round(time, 6), "src": source, "kind": kind, **fields}) + "\n"
        self._hash.update(line.encode())
        if self.out is not None:
            self.out.write(line)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()
