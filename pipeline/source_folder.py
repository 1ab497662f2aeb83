"""The folder source: a day's files read within the day's and each file's byte limits.

A file is read by what it holds (`pipeline.file_sniff`), not by its name: gzip by its magic bytes, Parquet by
its own, text in UTF-8 or (by byte-order mark or zero bytes) UTF-16 / UTF-32, as JSON lines or as one JSON array
of records. What was read before a break or a limit stays read; the file's problem is one record at line 0,
and so is a file that holds no record at all (`empty_file`).
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from pipeline.bounded_lines import LineReader, parse_line
from pipeline.file_sniff import FileKind, open_text, sniff
from pipeline.folder_scan import FILE_REFUSED, scan_day
from pipeline.json_array import ArrayReader
from pipeline.maybe_gzip import open_maybe_gzip
from pipeline.source_config import Record, SourceConfig, jsonable


class _ByteBudget:
    """The decompressed bytes a day may still read (`max_day_bytes`), spent file by file."""

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg
        self.left = cfg.max_day_bytes

    def for_file(self) -> tuple[int, str]:
        """The bytes the next file may read, and the reason code when it reads more."""
        if self.cfg.max_file_bytes <= self.left:
            return self.cfg.max_file_bytes, "file_too_large"
        return self.left, "day_too_large"


def _why(e: BaseException) -> str:
    """An error's cause without the path it may carry (machine paths stay out of the lake)."""
    if isinstance(e, OSError) and e.strerror:
        return f"{type(e).__name__}: {e.strerror}"
    return f"{type(e).__name__}: {str(e)[:200]}"


def _file_record(label: str, code: str, detail: str) -> Record:
    return Record(label, 0, "", error=(code, detail))


def _open_failure(label: str, e: OSError) -> Record:
    if e.errno == errno.ELOOP:
        return _file_record(label, "symlink", "became a symbolic link after the day was scanned: refused, never read")
    return _file_record(label, "unreadable_file", f"cannot be opened: {_why(e)}")


def _read_text(path: Path, label: str, kind: FileKind, cfg: SourceConfig, budget: _ByteBudget) -> Iterator[Record]:
    limit, limit_code = budget.for_file()
    lines = 0
    records = 0
    unit = "records" if kind.format == "array" else "lines"
    try:
        f = open_text(path, kind.encoding)
    except OSError as e:
        yield _open_failure(label, e)
        return
    except Exception as e:  # a gzip stream broken in its first bytes
        yield _file_record(label, "unreadable_file", f"nothing could be read: {_why(e)}")
        return
    split = ArrayReader if kind.format == "array" else LineReader
    reader = split(f, cfg.max_line_bytes, limit)
    with f:
        try:
            for lineno, raw, length in reader:
                lines = lineno
                rec = parse_line(label, lineno, raw, length, cfg)
                if rec is not None:
                    records += 1
                    yield rec
        except Exception as e:  # any read error: what was read before it stays read
            budget.left -= reader.bytes_read
            if not reader.bytes_read:
                yield _file_record(label, "unreadable_file", f"nothing could be read: {_why(e)}")
                return
            yield _file_record(
                label,
                "truncated_file",
                f"{_why(e)} after {reader.bytes_read} bytes: the {lines} {unit} before the break are kept, "
                f"the incomplete one after them ({reader.pending} bytes) is dropped",
            )
            return
    budget.left -= reader.bytes_read
    if reader.over_limit:
        setting = "max_file_bytes" if limit_code == "file_too_large" else "max_day_bytes"
        yield _file_record(
            label,
            limit_code,
            f"longer than {limit} bytes decompressed ({setting}): the {lines} {unit} before the limit are kept, "
            "the rest of the file is not read",
        )
    elif not records:
        yield _file_record(label, "empty_file", _empty_detail(reader.bytes_read, kind))


def _empty_detail(size: int, kind: FileKind) -> str:
    if not size:
        return "no bytes (decompressed): nothing to read"
    what = "an empty JSON array" if kind.format == "array" else "only blank lines"
    return f"{size} bytes (decompressed) holding {what}: no record"


def _read_parquet(path: Path, label: str, cfg: SourceConfig, budget: _ByteBudget) -> Iterator[Record]:
    import pyarrow.parquet as pq

    limit, limit_code = budget.for_file()
    spent = 0
    row = 0
    stack = contextlib.ExitStack()
    try:
        pf = pq.ParquetFile(stack.enter_context(open_maybe_gzip(path, "rb", follow_symlinks=False)))
    except OSError as e:
        stack.close()
        yield _open_failure(label, e)
        return
    except Exception as e:  # not a Parquet file, or a broken footer
        stack.close()
        yield _file_record(label, "unreadable_file", f"not a readable Parquet file: {_why(e)}")
        return
    with stack:
        try:
            for group in range(pf.num_row_groups):
                # the row group's uncompressed size, known before it is decompressed
                size = pf.metadata.row_group(group).total_byte_size
                if spent + size > limit:
                    budget.left -= spent
                    setting = "max_file_bytes" if limit_code == "file_too_large" else "max_day_bytes"
                    yield _file_record(
                        label,
                        limit_code,
                        f"longer than {limit} bytes decompressed ({setting}): the {row} rows of the row groups "
                        "before the limit are kept, the rest of the file is not read",
                    )
                    return
                spent += size
                for batch in pf.iter_batches(batch_size=4096, row_groups=[group]):
                    for value in batch.to_pylist():
                        row += 1
                        # drop nulls so that an absent optional field reads the same as in JSONL
                        value = {k: jsonable(v) for k, v in value.items() if v is not None}
                        yield Record(label, row, "", value=value)
        except Exception as e:  # a corrupt page: the rows before it stay read
            budget.left -= spent
            code = "truncated_file" if row else "unreadable_file"
            yield _file_record(label, code, f"{_why(e)} after {row} rows: the rows before the break are kept")
            return
    budget.left -= spent
    if not row:
        yield _file_record(label, "empty_file", "a Parquet file with no rows: no record")


def read_folder(cfg: SourceConfig, day: date) -> Iterator[Record]:
    folder = Path(cfg.path)  # type: ignore[arg-type]
    scan = scan_day(folder, day)
    for label, code, detail in scan.refused:
        yield _file_record(label, code, detail)
    budget = _ByteBudget(cfg)
    for path in scan.files:
        label = path.relative_to(folder).as_posix()
        if budget.left <= 0:
            yield _file_record(label, "day_too_large", FILE_REFUSED["day_too_large"] + " (max_day_bytes)")
            continue
        try:
            kind = sniff(path)
        except OSError as e:
            if e.errno is None:  # not gzip after all, or a stream cut in its first bytes
                yield _file_record(label, "unreadable_file", f"nothing could be read: {_why(e)}")
            else:
                yield _open_failure(label, e)
            continue
        except Exception as e:  # a gzip stream broken in its first bytes
            yield _file_record(label, "unreadable_file", f"nothing could be read: {_why(e)}")
            continue
        if kind.format == "parquet":
            yield from _read_parquet(path, label, cfg, budget)
        else:
            yield from _read_text(path, label, kind, cfg, budget)
