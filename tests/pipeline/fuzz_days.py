"""Hypothesis strategies for a folder-source day of untrusted input, and the invariants every such day keeps.

A day is a few files; a file is records (canonical messages, conversations, any other JSON value) written as
JSON lines or a JSON array, in some encoding and line end, maybe gzipped, maybe cut off. Records carry planted
markers where the lake must never show them: raw user ids in user id fields (any JSON type, any spelling of
the key) and in conversation and message ids, PII in any script in text, labels and file names. Ids collide
across users and files on purpose.

`FUZZ_PROFILE` (env `FLYWHEEL_FUZZ`) picks the budget: `ci` (what `make test` runs) or `long` (`make fuzz`).
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

DAY = "2026-01-05"
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")

settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=3000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_PROFILE = os.environ.get("FLYWHEEL_FUZZ", "ci")
# a day run through the assets costs a second or two: a smaller share of the budget
ASSET_EXAMPLES = {"ci": 4, "long": 60}[FUZZ_PROFILE]

# ---- markers: what must never reach the lake or the run's events

RAW_USERS = [f"rawuser-{k}x" for k in range(4)]
PHONES = ["415-555-0132", "+1 415 555 0177", "(415) 555-0163"]
EMAILS = ["jane.roe@example.org", "sam+tag@mail.example.com"]


def _phone_forms(p: str) -> list[str]:
    return [p, p.translate(FULL_WIDTH), p.translate(ARABIC_INDIC)]


def _email_forms(e: str) -> list[str]:
    name, host = e.split("@")
    return [e, f"{name}＠{host}", f"{name[:2]}\u200b{name[2:]}@{host}"]


PII_MARKERS = [f for p in PHONES for f in _phone_forms(p)] + [f for e in EMAILS for f in _email_forms(e)]
MARKERS = RAW_USERS + PII_MARKERS
_ESCAPE = re.compile(r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})")


def _unescape(text: str) -> str:
    """`\\uXXXX` escapes (pairs included) as their characters: a marker written as escapes is still there."""

    def one(m: re.Match) -> str:
        if m.group(3):
            return chr(int(m.group(3), 16))
        hi, lo = int(m.group(1), 16), int(m.group(2), 16)
        return chr(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))

    return _ESCAPE.sub(one, text)


def markers_in(text: str) -> list[str]:
    """The planted markers `text` holds, as written or behind JSON escapes."""
    seen = text + "\n" + _unescape(text)
    return [m for m in MARKERS if m in seen]


# ---- records

pii = st.sampled_from(PII_MARKERS)
raw_user = st.sampled_from(RAW_USERS)
words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
sentence = st.one_of(
    st.sampled_from(["hi there", "how are you?", "fine thanks", "  ", "", "ok\tthen\nbye"]),
    words,
    st.builds(lambda a, m, b: f"{a} {m} {b}", st.sampled_from(["call me at", "mail", "reach"]), pii, words),
)
conversation_id = st.one_of(
    st.sampled_from(["x-collide", 4242, "4242", "c1", "", " ", None]),
    st.builds(lambda u: f"x-pii-{u}:session-1", raw_user),
    words,
    st.just("c" * 300),
)
message_id = st.one_of(st.none(), st.sampled_from(["m1", "m2", 7]), st.builds(lambda p: f"msg-{p}", pii), words)
label = st.one_of(st.none(), st.sampled_from(["pirate", "app", "gen-2"]), pii, words, st.just("p" * 300))
user_id = st.one_of(
    st.none(),
    raw_user,
    st.sampled_from([4242, "", "u-plain"]),
    st.lists(raw_user, min_size=1, max_size=2),
    st.builds(lambda u: {"id": u}, raw_user),
)
role = st.sampled_from(["user", "user", "assistant", "assistant", "system", "bot", None, 5])
ts = st.one_of(
    st.builds(lambda h, s: f"{DAY}T{h:02d}:00:{s:02d}Z", st.integers(0, 23), st.integers(0, 59)),
    st.sampled_from(["2026-01-06T12:00:00Z", "yesterday", 1_767_600_000, None, True]),
)
turn_index = st.one_of(
    st.none(), st.integers(0, 6), st.sampled_from([2**31 - 1, 2**31, -1, "3", 1.5, 10**70]), st.integers()
)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), words)
any_json = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3), max_leaves=8
)


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


message = st.builds(
    lambda cid, mid, r, text, t, ti, u, ch, sf, sb: _drop_none(
        {
            "conversation_id": cid,
            "message_id": mid,
            "role": r,
            "text": text,
            "ts": t,
            "turn_index": ti,
            "user_id": u,
            "character_id": ch,
            "surface": sf,
            "served_by": sb,
        }
    ),
    conversation_id,
    message_id,
    role,
    sentence,
    ts,
    turn_index,
    user_id,
    label,
    label,
    label,
)
conversation = st.builds(
    lambda cid, u, t, msgs, ch: _drop_none(
        {"conversation_id": cid, "user_id": u, "ts": t, "character_id": ch, "messages": msgs}
    ),
    conversation_id,
    user_id,
    ts,
    st.lists(
        st.one_of(
            st.builds(lambda r, c: {"role": r, "content": c}, role, sentence),
            st.builds(lambda r, c, mid: _drop_none({"role": r, "content": c, "id": mid}), role, sentence, message_id),
            any_json,
        ),
        max_size=4,
    ),
    label,
)
record = st.one_of(message, message, conversation, any_json)


@st.composite
def line_of(draw, rec) -> bytes:
    """One record as a JSON line, sometimes in a form a parser refuses: cut off, a bad byte, a key spelled with
    an escape or written twice."""
    text = json.dumps(rec, ensure_ascii=draw(st.booleans()))
    how = draw(st.sampled_from(["plain"] * 6 + ["cut", "bad_byte", "escaped_key", "duplicate_key"]))
    if how == "cut" and len(text) > 2:
        text = text[: draw(st.integers(1, len(text) - 1))]
    elif how == "escaped_key":
        text = text.replace('"user_id"', '"user\\u005fid"')
    elif how == "duplicate_key" and text.startswith("{") and len(text) > 2:
        text = '{"user_id": ' + json.dumps(draw(raw_user)) + ", " + text[1:]
    data = text.encode("utf-8", "surrogatepass")
    if how == "bad_byte":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff" + data[at:]
    return data


@dataclass
class FuzzFile:
    name: str
    data: bytes


NAMES = [
    "a.jsonl",
    "B.JSONL",
    "dump.json",
    "packed.jsonl.gz",
    f"{EMAILS[0]}.jsonl",
    "x\n**forged** [l](javascript:alert(1)).jsonl",
    "<img src=x onerror=alert(1)>.json",
]


@st.composite
def day_file(draw, index: int) -> FuzzFile:
    records = draw(st.lists(record, max_size=6))
    shape = draw(st.sampled_from(["lines", "lines", "array"]))
    if shape == "array":
        text = json.dumps(records, indent=draw(st.sampled_from([None, 2])), ensure_ascii=draw(st.booleans()))
        body = text.encode("utf-8", "surrogatepass")
    else:
        end = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
        body = end.join(draw(line_of(r)) for r in records) + draw(st.sampled_from([b"", end]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"]))
    if encoding != "utf-8":
        body = body.decode("utf-8", "surrogateescape").encode(encoding, "surrogatepass")
    if draw(st.booleans()):
        body = gzip.compress(body, mtime=0)
    if draw(st.integers(0, 7)) == 0 and body:
        body = body[: draw(st.integers(0, len(body) - 1))]  # cut off, gzip stream or text alike
    name = draw(st.sampled_from(NAMES))
    return FuzzFile(f"{index}-{name}", body)


def _good_file() -> FuzzFile:
    """Ordinary traffic among the fuzzed files, its users and PII planted too: a day is bad input among good."""
    lines = []
    for c in range(4):
        for i in range(4):
            text = ("hello there, how is it going?", f"call me at {PII_MARKERS[(c + i) % len(PII_MARKERS)]} ok")[i % 2]
            rec = {
                "conversation_id": f"x-collide-{c % 2}",
                "user_id": RAW_USERS[c],
                "role": ("user", "assistant")[i % 2],
                "text": text,
                "ts": f"{DAY}T10:0{c}:{i:02d}Z",
            }
            lines.append(json.dumps(rec, ensure_ascii=False).encode())
    return FuzzFile("good.jsonl", b"\n".join(lines) + b"\n")


day_files = st.integers(1, 4).flatmap(
    lambda n: st.tuples(*(day_file(i) for i in range(n))).map(lambda fs: (_good_file(), *fs))
)


def write_day(folder: Path, files) -> Path:
    day_dir = folder / f"day={DAY}"
    day_dir.mkdir(parents=True)
    for f in files:
        (day_dir / f.name).write_bytes(f.data)
    return day_dir
