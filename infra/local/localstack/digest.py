"""What the stack logged as going wrong, printed when `exec`'s command fails.

CI shows a failed run's output, not the stack's log files (they are removed with the
run's other files), so a test that timed out waiting for the pipeline would otherwise
say only that it waited. The digest names each function's errors and the
event pump's invocations that did not end `ok` or took 10 s or more, last ones first in each log, a few per
log, each line cut short: enough to tell a lost or failing invocation from a slow one.
The logs hold no card data, ID numbers, codes or tokens (the functions never log them).
"""

from __future__ import annotations

import json
from pathlib import Path

LINES_PER_LOG = 6
# An invocation this slow holds up its whole shard (one per stream locally).
SLOW_MS = 10_000
LINE_CHARS = 400


def _trouble(name: str, line: str) -> bool:
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    if not isinstance(entry, dict):
        return False
    level = str(entry.get("level", "")).upper()
    if name != "pump":
        # Warnings are the tests' own doing (refused callbacks, failing banks): noise here.
        return level == "ERROR"
    if level in ("ERROR", "WARN"):
        return True
    # The pump's invocation lines carry an outcome and a duration instead of a level.
    if entry.get("outcome") not in (None, "ok"):
        return True
    ms = entry.get("ms")
    return isinstance(ms, (int, float)) and ms >= SLOW_MS


def digest(logs: list[tuple[str, Path]]) -> list[str]:
    """Lines to print: per log with trouble, its count and its last few such lines."""
    out: list[str] = []
    for name, path in logs:
        if not (name == "pump" or name.startswith("fn-")):
            continue
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        bad = [line for line in lines if _trouble(name, line)]
        if not bad:
            continue
        out.append(f"{name}: {len(bad)} lines of trouble, the last {min(len(bad), LINES_PER_LOG)}:")
        for line in bad[-LINES_PER_LOG:]:
            cut = line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + "…"
            out.append(f"  {cut}")
    return out
