"""The records of one JSON array (a `.json` dump, pretty-printed or not), read one by one in bounded chunks.

The array is never parsed whole: the reader follows strings and brackets to find where each top-level element
ends, keeps at most `max_record` + 1 bytes of an element, and stops after `max_bytes`, as `LineReader` does
for lines. Each element is then parsed alone (`pipeline.bounded_lines.parse_line`), under the same limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO

from pipeline.bounded_lines import read_chunk

_STRUCTURE = re.compile(rb'["\[\]{},]')
_IN_STRING = re.compile(rb'["\\]')
_BOM = b"\xef\xbb\xbf"


class ArrayReader:
    """Splits a stream holding one JSON array into its elements: (index from 1, the element's first
    `max_record` + 1 bytes, its whole length). Text before the opening bracket or after the closing one is an
    element of its own, which will not parse; an array cut off ends with the element that was being read."""

    def __init__(self, stream: IO[bytes], max_record: int, max_bytes: int):
        self.stream, self.max_record, self.max_bytes = stream, max_record, max_bytes
        self.bytes_read = 0
        self.over_limit = False
        self.pending = 0  # length of the element being read when reading stopped
        self._head = bytearray()
        self._index = 0

    def _add(self, data: bytes) -> None:
        if len(self._head) <= self.max_record:
            self._head += data[: self.max_record + 1 - len(self._head)]
        self.pending += len(data)

    def _element(self) -> tuple[int, bytes, int] | None:
        head, length = bytes(self._head), self.pending
        self._head.clear()
        self.pending = 0
        if not head.strip():
            return None  # `[]`, or a trailing comma
        self._index += 1
        return self._index, head, length

    def __iter__(self) -> Iterator[tuple[int, bytes, int]]:
        opened = closed = in_string = escaped = False
        depth = 0
        first = True
        while True:
            chunk = read_chunk(self)
            if not chunk:
                if self.over_limit:
                    return
                break
            if first:
                chunk = chunk.removeprefix(_BOM)
                first = False
            i, n = 0, len(chunk)
            while i < n:
                if not opened or closed:
                    # outside the array: only whitespace belongs here; anything else is an element of its own
                    at = chunk.find(b"[", i) if not opened else -1
                    stop = at if at >= 0 else n
                    if chunk[i:stop].strip():
                        self._add(chunk[i:stop])
                    if at >= 0:
                        if (element := self._element()) is not None:
                            yield element
                        opened = True
                    i = stop + 1 if at >= 0 else n
                    continue
                if in_string:
                    if escaped:
                        self._add(chunk[i : i + 1])
                        escaped, i = False, i + 1
                        continue
                    m = _IN_STRING.search(chunk, i)
                    if m is None:
                        self._add(chunk[i:])
                        break
                    self._add(chunk[i : m.end()])
                    i = m.end()
                    if m.group() == b"\\":
                        escaped = True
                    else:
                        in_string = False
                    continue
                m = _STRUCTURE.search(chunk, i)
                if m is None:
                    self._add(chunk[i:])
                    break
                c = m.group()
                if depth == 0 and c in (b",", b"]"):
                    self._add(chunk[i : m.start()])
                    if (element := self._element()) is not None:
                        yield element
                    closed = c == b"]"
                    i = m.end()
                    continue
                self._add(chunk[i : m.end()])
                i = m.end()
                if c == b'"':
                    in_string = True
                elif c in (b"[", b"{"):
                    depth += 1
                elif c in (b"]", b"}"):
                    depth = max(depth - 1, 0)
        if (element := self._element()) is not None:
            yield element
