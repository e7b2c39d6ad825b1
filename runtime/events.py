"""The event log: every state change an actor reports, in order, with its time.

Sinks receive each event as it is appended; `JsonlSink` writes `events.jsonl` and
keeps the SHA-256 of exactly the bytes written, which is what determinism is judged on.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
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
        # json.dumps(sort_keys=True, separators=(",", ":")) builds this encoder anew on
        # every call; built once, it halves the cost of a line.
        make = getattr(json.encoder, "c_make_encoder", None)
        if make is not None:
            c_encode = make(None, None, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True)
            self._encode: Callable[[dict[str, Any]], str] = lambda obj: "".join(c_encode(obj, 0))
        else:  # a Python without the C accelerator: same bytes, slower
            self._encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode

    def __call__(self, time: float, source: str, kind: str, fields: dict[str, Any]) -> None:
        line = self._encode({"t": round(time, 6), "src": source, "kind": kind, **fields}) + "\n"
        self._hash.update(line.encode())
        if self.out is not None:
            self.out.write(line)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()
