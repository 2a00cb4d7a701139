"""Plain readers for local data files, line by line, used only after datasets fails on one:
they give back the good rows before the bad line and name that line exactly."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable, Iterator


class BadLine(ValueError):
    """A line that cannot be read; the message starts with "line N:"."""


def check_text(value: Any, line: int) -> None:
    """Strings with a lone surrogate (a "\\ud800" escape) parse in Python but cannot be written
    as UTF-8: catch them here rather than when the row's record is written."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadLine(f"line {line}: invalid text (a lone surrogate {value[exc.start]!r} escape)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, line)
            check_text(item, line)
    elif isinstance(value, list):
        for item in value:
            check_text(item, line)


def decode(raw: bytes, first_line: int = 1) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + raw.count(b"\n", 0, exc.start)
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise BadLine(f"line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column}); "
                      "save the file as UTF-8") from None


def json_lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            text = decode(raw, number)
            if not text.strip():
                continue  # blank lines are no rows, for datasets either
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                torn = "" if raw.endswith(b"\n") else "; the file ends mid-line"
                raise BadLine(f"line {number}: invalid JSON ({exc.msg}, column {exc.colno}{torn})") from None
            if not isinstance(row, dict):
                raise BadLine(f"line {number}: a JSON {type(row).__name__}, not an object of columns")
            check_text(row, number)
            yield row


def json_file(path: Path) -> Iterator[dict[str, Any]]:
    """A .json file: JSON lines (when it starts with an object, as datasets reads it) or one list of rows."""
    raw = path.read_bytes()
    if raw.lstrip()[:1] == b"{":
        yield from json_lines(path)
        return
    try:
        rows = json.loads(decode(raw))
    except json.JSONDecodeError as exc:
        raise BadLine(f"line {exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(rows, list):
        raise BadLine("line 1: the file is neither JSON lines nor a list of rows")
    for row in rows:
        check_text(row, 1)
        yield row


def csv_file(path: Path) -> Iterator[dict[str, Any]]:
    reader = csv.reader(io.StringIO(decode(path.read_bytes()), newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise BadLine(f"line {reader.line_num}: {len(fields)} fields where the header has {len(header)}")
            yield dict(zip(header, fields))
    except csv.Error as exc:
        raise BadLine(f"line {reader.line_num}: {exc} (an unterminated quote?)") from None


READERS: dict[str, Callable[[Path], Iterator[dict[str, Any]]]] = {
    ".jsonl": json_lines, ".json": json_file, ".csv": csv_file,
}
