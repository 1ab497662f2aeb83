"""What an input file holds, read from its first bytes rather than its name.

A folder source's file may be named anything: its compression (gzip), its format (Parquet, JSON lines, a JSON
array of records) and its encoding (UTF-8, or UTF-16 / UTF-32 with or without a byte-order mark) are taken from
the bytes. Text in another encoding is transcoded to UTF-8 as it is read, so the readers see UTF-8 bytes and
count their limits on them.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pipeline.maybe_gzip import open_maybe_gzip

PARQUET_MAGIC = b"PAR1"
_UTF8_BOM = b"\xef\xbb\xbf"
# the longer marks first: UTF-32 LE's opens with UTF-16 LE's
_BOMS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)
_HEAD = 1 << 16  # bytes looked at to tell JSON lines from a JSON array
_WHITESPACE = b" \t\r\n"
_EOL = re.compile(rb"\r\n?|\n")


def _encoding(head: bytes) -> tuple[str | None, int]:
    """The encoding the first bytes say (None: UTF-8), and the length of its byte-order mark. Without a mark, JSON
    text opens with an ASCII character, so the zero bytes around it tell UTF-16 and UTF-32 (RFC 4627)."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    if len(head) >= 4 and head[0] and not head[1] and not head[2] and not head[3]:
        return "utf-32-le", 0
    if len(head) >= 4 and not head[0] and not head[1] and not head[2] and head[3]:
        return "utf-32-be", 0
    if len(head) >= 2 and head[0] and not head[1]:
        return "utf-16-le", 0
    if len(head) >= 2 and not head[0] and head[1]:
        return "utf-16-be", 0
    return None, 0


class Utf8Stream:
    """A byte stream read as UTF-8 bytes, transcoded from `encoding` when it is another (strictly: a byte
    sequence the encoding cannot decode raises `UnicodeDecodeError`, as a broken gzip stream raises)."""

    def __init__(self, inner: IO[bytes], encoding: str | None, prefix: bytes = b""):
        self.inner = inner
        self.encoding = encoding
        self.decoder = codecs.getincrementaldecoder(encoding)("strict") if encoding else None
        self.error: UnicodeDecodeError | None = None
        self.eof = False
        self.buf = self._transcode(prefix, final=False) if prefix else b""

    def _transcode(self, data: bytes, final: bool) -> bytes:
        if self.decoder is None:
            return data
        pending = self.decoder.getstate()[0]
        try:
            return self.decoder.decode(data, final=final).encode("utf-8")
        except UnicodeDecodeError as e:
            # the text before the bad bytes is read; the error is raised once it has been
            self.error, self.eof = e, True
            return (pending + data)[: e.start].decode(self.encoding or "utf-8").encode("utf-8")

    def _fill(self, n: int) -> None:
        while not self.buf and not self.eof:
            chunk = self.inner.read1(n) if hasattr(self.inner, "read1") else self.inner.read(n)
            self.eof = not chunk
            self.buf = self._transcode(chunk, final=self.eof)
        if not self.buf and self.error is not None:
            raise self.error

    def read1(self, n: int = -1) -> bytes:
        n = n if n > 0 else 1 << 16
        self._fill(n)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read(self, n: int = -1) -> bytes:
        parts: list[bytes] = []
        want = n if n >= 0 else float("inf")
        got = 0
        while got < want:
            chunk = self.read1(int(min(want - got, 1 << 16)))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def peek(self, n: int) -> bytes:
        """Up to `n` bytes ahead, not consumed; fewer when the stream ends or cannot be decoded further."""
        ahead = bytearray(self.buf)
        self.buf = b""
        try:
            while len(ahead) < n and not self.eof:
                self._fill(n - len(ahead))
                ahead += self.buf
                self.buf = b""
        except (UnicodeDecodeError, EOFError, OSError):
            pass  # reading on raises it again, where the reader reports it
        self.buf = bytes(ahead)
        return self.buf[:n]

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> Utf8Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class FileKind:
    """How a file is read: `parquet`, `lines` (JSON lines) or `array` (one JSON array of records), and the
    text encoding (None: UTF-8)."""

    format: str
    encoding: str | None = None


def open_text(path: Path, encoding: str | None) -> Utf8Stream:
    """`path` as UTF-8 bytes: decompressed when gzipped, transcoded from `encoding`, its byte-order mark skipped.
    Never through a symbolic link."""
    f = open_maybe_gzip(path, "rb", follow_symlinks=False)
    try:
        head = f.read(4)
        skip = _encoding(head)[1] if encoding else 0
        return Utf8Stream(f, encoding, head[skip:])
    except BaseException:
        f.close()
        raise


def sniff(path: Path) -> FileKind:
    """What `path` holds, from its first bytes (decompressed). An error opening or decompressing it is raised."""
    with open_maybe_gzip(path, "rb", follow_symlinks=False) as f:
        head = f.read(4)
        if head == PARQUET_MAGIC:
            return FileKind("parquet")
        encoding, skip = _encoding(head)
        text = Utf8Stream(f, encoding, head[skip:]).peek(_HEAD)
    body = text.removeprefix(_UTF8_BOM).lstrip(_WHITESPACE)
    if not body.startswith(b"["):
        return FileKind("lines", encoding)
    # a line that is a whole list is a (wrong) JSON line; an array spread over lines, or a `.json` file, is read
    # record by record
    first_line, *rest = _EOL.split(body, maxsplit=1)
    whole_line = bool(rest) and first_line.rstrip(_WHITESPACE).endswith(b"]")
    json_name = path.name.lower().removesuffix(".gz").endswith(".json")
    return FileKind("array" if json_name or not whole_line else "lines", encoding)
