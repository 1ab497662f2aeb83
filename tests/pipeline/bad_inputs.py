"""A folder-source day of bad input: one class of bad line or bad file per case, among good conversations.

`write_bad_day` writes the day and returns the cases, each with the reason code it must be quarantined
under and where (file and line; line 0 for a file-level row), plus how many records it holds.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

DAY = date(2026, 1, 5)
T = "2026-01-05T10:00:{:02d}Z"
LINES_FILE = f"day={DAY}/a-lines.jsonl"

# small limits, so a test needs megabytes, not gigabytes
LIMITS = {
    "max_line_bytes": 256 << 10,
    "max_file_bytes": 1 << 20,
    "max_day_bytes": 64 << 20,
    "max_json_depth": 64,
    "max_int_digits": 64,
}
BOMB_BYTES = 48 << 20  # one line, decompressed; far beyond max_file_bytes


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    file: str
    line: int
    records: int = 1
    span: int = 1  # lines it takes


def msg(cid, i, role, text, sec=None, **kw) -> dict:
    return {
        "conversation_id": cid,
        "turn_index": i,
        "role": role,
        "text": text,
        "ts": T.format(sec if sec is not None else i),
        "user_id": f"user-{cid}",
        **kw,
    }


def good_lines(cid: str) -> list[bytes]:
    return [
        json.dumps(m).encode()
        for m in (
            msg(cid, 0, "user", "hi there"),
            msg(cid, 1, "assistant", "hello! how are you?"),
            msg(cid, 2, "user", "great, thanks"),
        )
    ]


def _conversation(cid, user, messages, **meta) -> bytes:
    return json.dumps(
        {"conversation_id": cid, "user_id": user, "ts": T.format(0), **meta, "messages": messages}
    ).encode()


# (name, the line, its reason code, records it holds): each lands in quarantine under its code
LINE_CASES: list[tuple[str, bytes, str, int]] = [
    # the earlier classes
    ("unterminated JSON", b'{"conversation_id": "x", "role": "user", "text": "unterminated', "invalid_json", 1),
    (
        "Latin-1 byte",
        b'{"conversation_id": "x", "role": "user", "text": "caf\xe9", "ts": "2026-01-05T10:00:00Z"}',
        "invalid_utf8",
        1,
    ),
    ("no conversation_id", json.dumps({"role": "user", "text": "hi", "ts": T.format(1)}).encode(), "missing_field", 1),
    ("text is a number", json.dumps(msg("c-type", 0, "user", 42)).encode(), "wrong_type", 1),
    ("unknown role", json.dumps(msg("c-role", 0, "moderator", "I moderate")).encode(), "unknown_role", 1),
    ("whitespace text", json.dumps(msg("c-empty", 0, "user", "  \n\t ")).encode(), "empty_text", 1),
    ("text too long", json.dumps(msg("c-long", 0, "user", "x" * 20_001)).encode(), "text_too_long", 1),
    ("NUL in text", json.dumps(msg("c-ctrl", 0, "user", "nul \x00 inside")).encode(), "control_chars", 1),
    (
        "tomorrow's ts",
        json.dumps(msg("c-late", 0, "user", "hi") | {"ts": "2026-01-06T12:00:00Z"}).encode(),
        "ts_outside_day",
        1,
    ),
    ("unknown source", json.dumps(msg("c-src", 0, "user", "hi", source="partner")).encode(), "bad_value", 1),
    ("empty messages", json.dumps({"messages": []}).encode(), "empty_conversation", 1),
    # the newer classes
    ("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, "nesting_too_deep", 1),
    (
        "5,000-digit integer",
        b'{"conversation_id": "c-big", "role": "user", "text": "hi", "ts": "2026-01-05T10:00:00Z", "turn_index": '
        + b"7" * 5000
        + b"}",
        "int_too_long",
        1,
    ),
    ("lone surrogate in text", json.dumps(msg("c-sur", 0, "user", "broken \ud800 pair")).encode(), "lone_surrogate", 1),
    (
        "lone surrogate in an id",
        json.dumps(msg("c-sur2", 0, "user", "hi", character_id="pi\udfffrate")).encode(),
        "lone_surrogate",
        1,
    ),
    (
        "turn_index beyond Int32",
        json.dumps(msg("c-range", 2_147_483_653, "user", "hi", sec=0)).encode(),
        "out_of_range",
        1,
    ),
    (
        "null conversation_id (user a)",
        _conversation(None, "user-a", [{"role": "user", "content": "mine"}, {"role": "assistant", "content": "ok"}]),
        "empty_id",
        2,
    ),
    (
        "null conversation_id (user b)",
        _conversation(
            None, "user-b", [{"role": "user", "content": "mine too"}, {"role": "assistant", "content": "ok"}]
        ),
        "empty_id",
        2,
    ),
    ("blank conversation_id", json.dumps(msg("  ", 0, "user", "hi")).encode(), "empty_id", 1),
    ("blank user_id", json.dumps(msg("c-nouid", 0, "user", "hi") | {"user_id": ""}).encode(), "empty_id", 1),
    ("line over max_line_bytes", json.dumps(msg("c-huge", 0, "user", "y" * (512 << 10))).encode(), "line_too_long", 1),
    ("byte-order mark mid-file", b"\xef\xbb\xbf" + json.dumps(msg("c-bom", 0, "user", "hi")).encode(), "stray_bom", 1),
    # identifiers have a charset and a length
    ("NUL in conversation_id", json.dumps(msg("c-\x00nul", 0, "user", "hi")).encode(), "id_chars", 1),
    (
        "right-to-left override in character_id",
        json.dumps(msg("c-rlo", 0, "user", "hi", character_id="pi\u202erate")).encode(),
        "id_chars",
        1,
    ),
    ("ESC in surface", json.dumps(msg("c-esc", 0, "user", "hi", surface="app\x1b[31m")).encode(), "id_chars", 1),
    (
        "50,000-character character_id",
        json.dumps(msg("c-longid", 0, "user", "hi", character_id="p" * 50_000)).encode(),
        "id_too_long",
        1,
    ),
    (
        "30,000-character conversation_id",
        json.dumps(msg("c" * 30_000, 0, "user", "hi", user_id="user-long")).encode(),
        "id_too_long",
        1,
    ),
]
# classes that need several lines: (name, lines, code, how many of their records get it, records in all)
GROUP_CASES: list[tuple[str, list[bytes], str, int, int]] = [
    (
        "duplicate message id",
        [
            _conversation(
                "c-dup",
                "u9",
                [
                    {"id": "m1", "role": "user", "content": "first"},
                    {"id": "m1", "role": "assistant", "content": "same id"},
                    {"id": "m2", "role": "assistant", "content": "fine"},
                ],
            )
        ],
        "duplicate_message_id",
        1,
        3,
    ),
    (
        "timestamps out of order",
        [
            _conversation(
                "c-order",
                "u8",
                [
                    {"role": "user", "content": "one", "ts": T.format(30)},
                    {"role": "assistant", "content": "two", "ts": T.format(10)},
                    {"role": "assistant", "content": "three", "ts": T.format(40)},
                ],
            )
        ],
        "ts_out_of_order",
        1,
        3,
    ),
    (
        "no user turn",
        [
            json.dumps(msg("c-nouser", 0, "assistant", "anyone?")).encode(),
            json.dumps(msg("c-nouser", 1, "system", "be nice")).encode(),
        ],
        "no_user_turn",
        2,
        2,
    ),
    (
        "implicit turn_index past Int32",
        [
            json.dumps(msg("c-implicit", 2_147_483_647, "user", "the last index there is", sec=0)).encode(),
            json.dumps(
                {k: v for k, v in msg("c-implicit", 0, "user", "and one more", sec=1).items() if k != "turn_index"}
            ).encode(),
        ],
        "out_of_range",
        1,
        2,
    ),
    (
        "a message naming no user under an id two users send under",
        [
            json.dumps(msg("c-shared", 0, "user", "mine", user_id="user-a")).encode(),
            json.dumps(msg("c-shared", 0, "user", "mine too", user_id="user-b")).encode(),
            json.dumps({k: v for k, v in msg("c-shared", 1, "assistant", "whose?").items() if k != "user_id"}).encode(),
        ],
        "ambiguous_user",
        1,
        3,
    ),
]


def _gzip_cut(lines: list[bytes]) -> bytes:
    data = gzip.compress(b"\n".join(lines) + b"\n", mtime=0)
    return data[: len(data) * 2 // 3]  # cut mid-stream: no end-of-stream marker


def _gzip_bomb() -> bytes:
    import zlib

    head = b'{"conversation_id": "bomb", "role": "user", "ts": "2026-01-05T10:00:00Z", "text": "'
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    parts = [comp.compress(head)]
    block = b"a" * (1 << 20)
    for _ in range(BOMB_BYTES >> 20):
        parts.append(comp.compress(block))
    parts.append(comp.compress(b'"}\n') + comp.flush())
    return b"".join(parts)


def write_bad_day(folder: Path, outside: Path) -> tuple[list[Case], int]:
    """Writes the day under `folder` (and a file outside it, under `outside`); returns the cases and the
    number of records that must be accepted."""
    day_dir = folder / f"day={DAY}"
    day_dir.mkdir(parents=True)
    cases: list[Case] = []
    lines: list[bytes] = []
    accepted = 0
    for k in range(3):
        lines += good_lines(f"good-{k}")
        accepted += 3
    for name, line, code, n in LINE_CASES:
        lines.append(line)
        cases.append(Case(name, code, LINES_FILE, len(lines), n))
    for name, group, code, n_bad, n_all in GROUP_CASES:
        start = len(lines) + 1
        lines += group
        cases.append(Case(name, code, LINES_FILE, start, n_bad, len(group)))
        accepted += n_all - n_bad
    lines.append(b"")  # a blank line is layout, not a record
    (day_dir / "a-lines.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    # a gzip stream cut off: the lines before the break are kept
    cut = [line for k in range(200) for line in good_lines(f"gz-{k}")]
    (day_dir / "b-cut.jsonl.gz").write_bytes(_gzip_cut(cut))
    cases.append(Case("truncated gzip", "truncated_file", f"day={DAY}/b-cut.jsonl.gz", 0))
    (day_dir / "c-bomb.jsonl.gz").write_bytes(_gzip_bomb())
    cases.append(Case("gzip bomb", "file_too_large", f"day={DAY}/c-bomb.jsonl.gz", 0))
    big = [line for k in range(4_000) for line in good_lines(f"big-{k}")]
    (day_dir / "d-big.jsonl").write_bytes(b"\n".join(big) + b"\n")
    cases.append(Case("file over max_file_bytes", "file_too_large", f"day={DAY}/d-big.jsonl", 0))
    # a file is read by what it holds: plain text named .gz is read as it is
    (day_dir / "e-not-gzip.jsonl.gz").write_bytes(b"\n".join(good_lines("plain")))
    accepted += 3
    (day_dir / "e-empty.jsonl").write_bytes(b"")
    cases.append(Case("an empty file", "empty_file", f"day={DAY}/e-empty.jsonl", 0))
    (day_dir / "f-broken.parquet").write_bytes(b"PAR1" + os.urandom(256))
    cases.append(Case("broken Parquet", "unreadable_file", f"day={DAY}/f-broken.parquet", 0))
    (day_dir / "g-table.csv").write_text("conversation_id,role,text\nc1,user,hi\n")
    cases.append(Case("a .csv file", "unsupported_file", f"day={DAY}/g-table.csv", 0))
    (day_dir / "h-folder").mkdir()
    (day_dir / "h-folder" / "inner.jsonl").write_bytes(good_lines("inner")[0])
    cases.append(Case("a folder", "unsupported_file", f"day={DAY}/h-folder", 0))
    if hasattr(os, "mkfifo"):
        os.mkfifo(day_dir / "i-pipe.jsonl")  # opening it would block: it must never be opened
        cases.append(Case("a named pipe", "unsupported_file", f"day={DAY}/i-pipe.jsonl", 0))
    (day_dir / ".j-upload.jsonl").write_bytes(b"\n".join(good_lines("hidden")))
    cases.append(Case("a hidden file", "hidden_file", f"day={DAY}/.j-upload.jsonl", 0))
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "secret.jsonl"
    secret.write_bytes(b'{"user_id": "outside-user-77", "text": "outside secret"}\n')
    (day_dir / "k-outside.jsonl").symlink_to(secret)
    cases.append(Case("symlink outside the folder", "outside_source", f"day={DAY}/k-outside.jsonl", 0))
    (day_dir / "l-inside.jsonl").symlink_to(day_dir / "a-lines.jsonl")
    cases.append(Case("symlink inside the folder", "symlink", f"day={DAY}/l-inside.jsonl", 0))
    (folder / f"notes-{DAY}.txt").write_text("not traffic")
    cases.append(Case("a .txt file naming the day", "unsupported_file", f"notes-{DAY}.txt", 0))
    # a byte-order mark opening a file is its encoding's signature, not an error
    (day_dir / "m-bom.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join(good_lines("bom-first")))
    accepted += 3
    return cases, accepted
