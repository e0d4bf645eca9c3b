"""The one timestamp format of every record mfclip writes: UTC, ISO 8601, to the second."""

from __future__ import annotations

import datetime as dt


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
