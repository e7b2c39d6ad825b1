"""Reading TOML configuration with errors that say file, line and fix: the one reader of
scenario files and of the daemon's configuration."""

from __future__ import annotations

import datetime as dt
import difflib
import re
from typing import Any
from zoneinfo import ZoneInfo

from runtime.errors import ConfigError

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class TomlReader:
    """Validates one table of a parsed TOML file and knows where its keys are in the text,
    so every error names `FILE:LINE: field.path`, what is wrong and what is valid."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines = text.splitlines()

    def line_of(self, path: str) -> int:
        """Best-effort line of a dotted field path such as `tenants[1].servers[0].flavor`."""
        parts = re.findall(r"([A-Za-z_][\w-]*|\"[^\"]+\")(?:\[(\d+)\])?", path)
        start, end = 0, len(self.lines)
        if parts:
            head, index = parts[0][0].strip('"'), int(parts[0][1] or 0)
            headers = [i for i, line in enumerate(self.lines)
                       if re.match(rf"\s*\[\[?\s*{re.escape(head)}(\s*\]|\.)", line)]
            if headers:
                start = headers[min(index, len(headers) - 1)]
                nxt = [i for i, line in enumerate(self.lines) if i > start and re.match(r"\s*\[[^\]]", line)
                       and not re.match(rf"\s*\[\[?\s*{re.escape(head)}\.", line)]
                end = nxt[0] if nxt else len(self.lines)
            for name, idx in parts[1:] or parts[:1]:
                key = name.strip('"')
                pattern = re.compile(rf"(^|[\s{{,\"]){re.escape(key)}\"?\s*=")
                hits = [i for i in range(start, end) if pattern.search(self.lines[i])]
                if hits:
                    start = hits[min(int(idx or 0), len(hits) - 1)] if idx else hits[0]
        return start + 1

    def error(self, path: str, problem: str, valid: str = "") -> ConfigError:
        return ConfigError(f"{self.source}:{self.line_of(path)}: {path}", problem, valid)

    def table(self, value: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"must be a table, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                raise self.error(f"{path}.{key}", "unknown key", ", ".join(allowed))
        for key in required:
            if key not in value:
                raise self.error(path, f"missing required key {key!r}", ", ".join(allowed))
        return value

    def integer(self, value: Any, path: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(path, f"must be a whole number >= {minimum}, got {value!r}")
        return value

    def number(self, value: Any, path: str, minimum: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum \
                or value == float("inf"):
            raise self.error(path, f"must be a finite number >= {minimum}, got {value!r}")
        return float(value)

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, f"must be true or false, got {value!r}")
        return value

    def choice(self, value: Any, path: str, valid: list[str]) -> str:
        if value not in valid:
            close = difflib.get_close_matches(str(value), valid, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            shown = ", ".join(valid[:12]) + (f" ... ({len(valid)} in all)" if len(valid) > 12 else "")
            raise self.error(path, f"{value!r} is not valid{hint}", shown)
        return str(value)

    def duration(self, value: Any, path: str) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        text = str(value).replace(" ", "")
        if not re.fullmatch(r"(\d+(?:\.\d+)?[smhdw])+", text):
            raise self.error(path, f"{value!r} is not a duration",
                             'seconds as a number, or "90s", "30m", "6h", "30d", "2w", "3d12h"')
        return sum(float(n) * UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhdw])", text))

    def instant(self, value: Any, path: str, zone: str) -> dt.datetime:
        """A calendar instant: a date (midnight in the provider's zone) or an ISO date-time with offset."""
        if isinstance(value, dt.datetime):
            parsed = value
        elif isinstance(value, dt.date):
            parsed = dt.datetime.combine(value, dt.time(), ZoneInfo(zone))
        else:
            try:
                parsed = dt.datetime.fromisoformat(str(value))
            except ValueError:
                raise self.error(path, f"{value!r} is not a date", 'a date like 2026-03-01 or an instant like '
                                 '"2026-03-01T08:00:00+01:00"') from None
            if len(str(value)) == 10:
                parsed = parsed.replace(tzinfo=ZoneInfo(zone))
        if parsed.tzinfo is None:
            raise self.error(path, f"{value!r} has no UTC offset", 'a date, or an instant with its offset, e.g. '
                             '"2026-03-01T08:00:00+01:00"')
        return parsed
