"""Lines of untrusted JSONL read under limits: bounded chunks, a byte cap counted decompressed, and a check of
nesting depth and integer length before a line is parsed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import IO

import numpy as np

from pipeline.source_config import Record, SourceConfig

_CHUNK = 1 << 16
_BOM = b"\xef\xbb\xbf"
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]")
_EOL = re.compile(rb"\r\n?|\n")


def read_chunk(reader) -> bytes:
    """The next chunk of `reader.stream` within `reader.max_bytes`, counted in `reader.bytes_read`; b"" at the end
    of the stream or at the limit, where `reader.over_limit` says whether more bytes followed. What was decompressed
    before a break in the stream is returned first."""
    room = reader.max_bytes - reader.bytes_read
    if room <= 0:
        reader.over_limit = bool(reader.stream.read(1))
        return b""
    chunk = reader.stream.read1(min(_CHUNK, room))
    reader.bytes_read += len(chunk)
    return chunk


class LineReader:
    """Splits a byte stream into lines, reading bounded chunks: a line is never held beyond `max_line` + 1
    bytes, and reading stops after `max_bytes` (a gzip bomb's single line is never decompressed whole). A line
    ends at LF, CRLF or a lone CR (old Mac files): JSON text holds none of them unescaped."""

    def __init__(self, stream: IO[bytes], max_line: int, max_bytes: int):
        self.stream, self.max_line, self.max_bytes = stream, max_line, max_bytes
        self.bytes_read = 0
        self.over_limit = False
        self.pending = 0  # length of the line being read when reading stopped

    def __iter__(self) -> Iterator[tuple[int, bytes, int]]:
        """(line number, the line's first `max_line` + 1 bytes at most, its whole length) for each line."""
        head = bytearray()
        lineno = 0
        skip_lf = False  # the last chunk ended in CR: a LF opening the next one ends the same line
        while True:
            chunk = read_chunk(self)
            if not chunk:
                if self.over_limit:
                    return
                break
            start = 1 if skip_lf and chunk[:1] == b"\n" else 0
            skip_lf = False
            while True:
                eol = _EOL.search(chunk, start)
                stop = eol.start() if eol else len(chunk)
                if len(head) <= self.max_line:
                    head += chunk[start : min(stop, start + self.max_line + 1 - len(head))]
                self.pending += stop - start
                if eol is None:
                    break
                lineno += 1
                yield lineno, bytes(head), self.pending
                head.clear()
                self.pending = 0
                start = eol.end()
                skip_lf = eol.group() == b"\r" and start == len(chunk)
        if self.pending:
            length, self.pending = self.pending, 0
            yield lineno + 1, bytes(head), length


class _IntTooLong(ValueError):
    pass


@lru_cache(maxsize=8)
def _bounded_decoder(max_digits: int) -> json.JSONDecoder:
    """A JSON decoder that refuses integers longer than `max_digits` before converting them."""

    def bounded_int(digits: str) -> int:
        n = len(digits.lstrip("-"))
        if n > max_digits:
            raise _IntTooLong(f"an integer has {n} digits, the limit is {max_digits}")
        return int(digits)

    return json.JSONDecoder(parse_int=bounded_int)


def _json_depth_over(text: str, limit: int) -> bool:
    """Whether objects and lists nest deeper than `limit`, found without recursing (brackets inside strings
    do not count)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode("ascii")
    steps = np.frombuffer(brackets, dtype=np.uint8)
    depth = np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1))
    return bool(depth.size) and int(depth.max()) > limit


def parse_line(label: str, lineno: int, raw: bytes, length: int, cfg: SourceConfig) -> Record | None:
    """One line as a Record (an error Record when it cannot be parsed); None for a blank line."""
    raw = raw.rstrip(b"\r")
    if length > cfg.max_line_bytes:
        shown = raw[: cfg.max_line_bytes].decode("utf-8", errors="replace")
        detail = f"the line has {length} bytes, the limit is {cfg.max_line_bytes} (max_line_bytes); not parsed"
        return Record(label, lineno, shown, error=("line_too_long", detail))
    if not raw.strip():
        return None  # blank lines are layout, not records
    if raw.startswith(_BOM):
        if lineno == 1:
            raw = raw[len(_BOM) :]  # a byte-order mark opening the file is its encoding's signature
        else:
            shown = raw.decode("utf-8", errors="backslashreplace")
            detail = "a byte-order mark opens a line inside the file (files concatenated with their marks?)"
            return Record(label, lineno, shown, error=("stray_bom", detail))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        shown = raw.decode("utf-8", errors="backslashreplace")
        return Record(label, lineno, shown, error=("invalid_utf8", f"byte {e.start}: {e.reason}"))
    if _json_depth_over(text, cfg.max_json_depth):
        detail = f"objects and lists nest deeper than {cfg.max_json_depth} levels (max_json_depth); not parsed"
        return Record(label, lineno, text, error=("nesting_too_deep", detail))

    try:
        value = _bounded_decoder(cfg.max_int_digits).decode(text)
    except _IntTooLong as e:
        return Record(label, lineno, text, error=("int_too_long", f"{e} (max_int_digits)"))
    except json.JSONDecodeError as e:
        return Record(label, lineno, text, error=("invalid_json", f"{e.msg} at column {e.colno}"))
    except RecursionError:
        return Record(label, lineno, text, error=("nesting_too_deep", "nested too deep to parse"))
    except ValueError as e:
        return Record(label, lineno, text, error=("invalid_json", str(e)[:200]))
    return Record(label, lineno, text, value=value)
