"""PII scrub: planted items of every type inside real chat sentences, and hard negatives that must survive.

Run with `pytest -s` to see the per-type precision/recall table.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import random
import re
import string
import time
import uuid
from pathlib import Path

import phonenumbers
import polars as pl
import pytest

from pipeline import schema
from pipeline.pii_detectors import luhn_ok
from pipeline.privacy import landed_scrub_step, scrub_frame, scrub_step, scrub_text
from pipeline.privacy_config import PII_TYPES

# Used when ../shared/data is absent, so the planted-set test still runs on a fresh clone.
FALLBACK_SENTENCES = [
    "Hey, how was your weekend at the lake?",
    "I just finished reading that book you told me about and loved it.",
    "My roommate keeps leaving dishes in the sink and it drives me crazy.",
    "Do you want to grab lunch after class tomorrow?",
    "The hike up to the waterfall was harder than I expected.",
    "I think the new season of that show is even better than the first.",
    "We should totally plan a road trip this summer.",
    "Honestly I could eat tacos every single day.",
    "My sister just got engaged, so the whole family is excited.",
    "What kind of music have you been listening to lately?",
    "I tried making bread for the first time and it came out flat.",
    "The library is so quiet during finals week, it is kind of eerie.",
    "Have you ever been skiing up in the mountains here?",
    "I am thinking about switching my major to computer science.",
    "That movie had the best soundtrack I have heard in years.",
    "My dog learned how to open the back door by himself.",
    "It rained all day so we stayed in and played board games.",
    "I need to find a better way to wake up in the morning.",
    "The concert last night was loud but so much fun.",
    "Would you rather live by the ocean or in the mountains?",
    "I started running again and my legs are sore.",
    "We are having a potluck on Sunday if you want to come.",
    "My favorite holiday is probably Thanksgiving because of the food.",
    "I keep forgetting to water my plants and they look sad.",
    "The professor gave us an extra week for the project, thankfully.",
    "Let me know what you think about the idea when you get a chance.",
    "I have never tried sushi but everyone says I should.",
    "Our team finally won a game after losing five in a row.",
    "Sometimes I just want to sit outside and read for hours.",
    "Send me the details and I will take a look tonight.",
]

_SUSPECT = re.compile(r"[0-9@]|://|www\.", re.IGNORECASE)


def _carriers_from_shared(data_dir: Path, n: int, rng: random.Random) -> list[str]:
    with gzip.open(data_dir / "chitchat_dataset.json.gz", "rt") as f:
        convs = json.load(f)
    # Carriers hold no digit, '@' or link, so any placeholder in the output comes from what we planted.
    msgs = [
        m["text"]
        for c in convs.values()
        for turn in c["messages"]
        for m in turn
        if 25 <= len(m["text"]) <= 200 and not _SUSPECT.search(m["text"])
    ]
    return rng.sample(msgs, n)


# --- planted generators --------------------------------------------------------------------------

FIRST = [
    "anna",
    "ben",
    "carlos",
    "dana",
    "eli",
    "fatima",
    "george",
    "hana",
    "ivan",
    "julia",
    "kofi",
    "lena",
    "mike",
]
LAST = ["smith", "nguyen", "garcia", "okafor", "muller", "tanaka", "rossi", "kim", "dubois", "silva"]
DOMAINS = [
    "gmail.com",
    "mail.example.co.uk",
    "cs.byu.edu",
    "outlook.com",
    "eng.corp.example.org",
    "yahoo.fr",
    "proton.me",
]


def _emails(rng: random.Random, n: int) -> list[str]:
    out = []
    for i in range(n):
        f, last = rng.choice(FIRST), rng.choice(LAST)
        local = [
            f"{f}.{last}",
            f"{f}+{rng.choice(['news', 'shop', 'tag42'])}",
            f"{f}_{last}{rng.randint(1, 99)}",
            f"{f[0]}{last}",
            f"{f}.{last}+{rng.choice(['a', 'work'])}",
            f"{f.upper()}.{last.capitalize()}",
        ][i % 6]
        out.append(f"{local}@{rng.choice(DOMAINS)}")
    return out


def _nanp(rng: random.Random) -> tuple[str, str, str]:
    if rng.random() < 0.4:
        return "555", "010", f"{rng.randint(0, 99):02d}{rng.randint(0, 99):02d}"  # fictional 555-01xx
    return str(rng.randint(201, 989)), str(rng.randint(201, 989)), f"{rng.randint(0, 9999):04d}"


def _phones(rng: random.Random, n: int) -> list[str]:
    intl_regions = ["GB", "FR", "DE", "IN", "JP", "AU", "BR", "ES", "MX", "NG", "IT", "KR"]
    out = []
    for i in range(n):
        kind = i % 10
        if kind < 7:
            a, e, s = _nanp(rng)
            out.append(
                [
                    f"+1 ({a}) {e}-{s}",
                    f"{a}.{e}.{s}",
                    f"({a}) {e}-{s}",
                    f"{a}-{e}-{s}",
                    f"1-{a}-{e}-{s}",
                    f"+1 {a} {e} {s}",
                    f"{a}{e}{s}",
                ][kind]
            )
        else:
            region = rng.choice(intl_regions)
            ex = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
            nat = str(ex.national_number)
            ex.national_number = int(nat[:-3] + f"{rng.randint(0, 999):03d}")
            out.append(phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.INTERNATIONAL))
    return out


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable")


def _group(digits: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, i = [], 0
    for s in sizes:
        parts.append(digits[i : i + s])
        i += s
    return sep.join(parts)


def _card_numbers(rng: random.Random, n: int) -> list[tuple[str, tuple[int, ...]]]:
    kinds = [
        (lambda: "4", 16, (4, 4, 4, 4)),  # Visa
        (lambda: str(rng.randint(51, 55)), 16, (4, 4, 4, 4)),  # Mastercard
        (lambda: str(rng.randint(2221, 2720)), 16, (4, 4, 4, 4)),  # Mastercard 2-series
        (lambda: rng.choice(["34", "37"]), 15, (4, 6, 5)),  # Amex
        (lambda: "6011", 16, (4, 4, 4, 4)),  # Discover
    ]
    out = []
    for i in range(n):
        prefix, length, sizes = kinds[i % len(kinds)]
        out.append((_luhn_complete(prefix(), length, rng), sizes))
    return out


def _cards(rng: random.Random, n: int) -> list[str]:
    return [_group(d, sizes, ["", " ", "-"][i % 3]) for i, (d, sizes) in enumerate(_card_numbers(rng, n))]


def _ips(rng: random.Random, n: int) -> list[str]:
    out = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            out.append(str(ipaddress.IPv4Address(rng.randint(0x01000000, 0xDFFFFFFF))))
        elif kind == 1:
            out.append(f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
        elif kind == 2:
            out.append(f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0/{rng.choice([8, 16, 24])}")
        elif kind == 3:
            out.append(ipaddress.IPv6Address(rng.getrandbits(128)).exploded)
        elif kind == 4:
            tail = ":".join(f"{rng.randint(1, 0xFFFF):x}" for _ in range(3))
            out.append(f"2001:db8::{tail}" if i % 12 < 6 else f"fe80::{tail}%eth0")
        else:
            out.append("::ffff:" + str(ipaddress.IPv4Address(rng.randint(0x01000000, 0xDFFFFFFF))))
    return out


def _token(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    while True:
        t = "".join(rng.choice(alphabet) for _ in range(n))
        if any(c.isdigit() for c in t) and any(c.isalpha() for c in t):
            return t


def _urls(rng: random.Random, n: int) -> list[str]:
    hosts = [
        "app.example.com",
        "api.service.io",
        "www.shop-online.net",
        "portal.example.org",
        "cdn.files.example.com",
    ]
    out = []
    for i in range(n):
        h = rng.choice(hosts)
        kind = i % 9
        out.append(
            [
                f"https://{h}/reset?token={_token(rng, 32, string.hexdigits.lower())}",
                f"https://{h}/v1/data?api_key={_token(rng, 24)}&format=json",
                f"http://{h}/login?lang=en&session={_token(rng, 20)}",
                f"https://{h}/img/cat.png?exp=1700000000&sig={_token(rng, 40)}",
                f"www.{h.split('.', 1)[1]}/order?id={rng.randint(10000, 99999999)}",
                f"https://{h}/u/{uuid.UUID(int=rng.getrandbits(128))}",
                f"https://{h}/s/{_token(rng, 22)}",
                f"https://docs.example.com/document/d/{_token(rng, 44)}/edit",
                f"https://{h}/account?user_id={rng.randint(100, 999999)}&ref=mail",
            ][kind]
        )
    return out


def _handles(rng: random.Random, n: int) -> list[str]:
    out = []
    for i in range(n):
        f, last = rng.choice(FIRST), rng.choice(LAST)
        out.append(["@" + f + last, f"@{f}_{last}", f"@{f}.{last}", f"@{f.capitalize()}{rng.randint(1, 999)}"][i % 4])
    return out


def hard_negatives(rng: random.Random) -> list[str]:
    """Strings that look like PII but are not; each must survive the scrub verbatim."""
    fixed = [
        "in 1999", "back in 2019-2020", "from 2014-2016", "$1,299.99", "$12,500,000", "about 45 dollars",
        "at 10:30", "around 10:30:45", "7:45pm", "on 12/25/2019", "on 2019-05-12", "v1.2.3.4",
        "version 1.2.3.4", "version 2.4.1", "Python 3.11.4", "1.2.3", "3.14159", "a score of 21-14",
        "1 2 3 4 5 6 7 8 9 10", "4 8 15 16 23 42", "1,000,000", "1000000", "zip 84604",
        "ISBN 978-0-306-40615-7",
        "99.9%", "a 16:9 screen", "@ 5pm", "@5pm", "meet @ the park", "chitchat @ byu", "5 @ 3",
        "https://en.wikipedia.org/wiki/Provo,_Utah", "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
        "www.byu.edu", "https://www.theverge.com/2017/10/30/16569402/ai-generate-fake-faces",
        "http://www.imdb.com/title/tt2872732/", "https://example.com/blog/how-to-train-your-dragon-2",
        "https://news.example.org/2021/03/15/story?page=2&lang=en", "http://localhost:8080/",
        "room 3105", "flight 1234", "800 2200 300", "100.0000", "999.9999%", "9998017 * 9997647",
        "12354548514555", "0011010010110100101", "1980-1982", "3:2", "24/7", "x86_64", "COVID-19",
    ]  # fmt: skip
    # Luhn-failing 16-digit numbers (a valid card with its check digit changed), in each layout
    bad_cards = []
    for i, (digits, sizes) in enumerate(_card_numbers(rng, 80)):
        if len(digits) != 16:
            continue
        wrong = digits[:-1] + str((int(digits[-1]) + rng.randint(1, 9)) % 10)
        assert not luhn_ok(wrong)
        bad_cards.append(_group(wrong, sizes, ["", " ", "-"][i % 3]))
    years = [f"in {rng.randint(1900, 2030)}" for _ in range(20)]
    prices = [f"${rng.randint(1, 9999)}.{rng.randint(0, 99):02d}" for _ in range(20)]
    times = [f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d}" for _ in range(20)]
    return fixed + bad_cards + years + prices + times


def _plant(carrier: str, item: str, rng: random.Random) -> str:
    words = carrier.split()
    k = rng.randint(0, len(words))
    wrapped = rng.choice(["{}", "{}.", "{},", "({})", "{}!", "{}?"]).format(item)
    return " ".join(words[:k] + [wrapped] + words[k:])


def build_planted(carriers: list[str], seed: int = 7) -> pl.DataFrame:
    rng = random.Random(seed)
    items = (
        [("EMAIL", x) for x in _emails(rng, 100)]
        + [("PHONE", x) for x in _phones(rng, 120)]
        + [("CARD", x) for x in _cards(rng, 100)]
        + [("IP", x) for x in _ips(rng, 96)]
        + [("URL", x) for x in _urls(rng, 90)]
        + [("HANDLE", x) for x in _handles(rng, 60)]
        + [("NONE", x) for x in hard_negatives(rng)]
    )
    rows = [
        {"doc_id": i, "kind": kind, "item": item, "text": _plant(carriers[i % len(carriers)], item, rng)}
        for i, (kind, item) in enumerate(items)
    ]
    return pl.DataFrame(rows)


def _placeholder_counts(text: str) -> dict[str, int]:
    return {t: text.count(f"[{t}]") for t in PII_TYPES}


def evaluate(planted: pl.DataFrame, scrubbed: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, float]]:
    tp = {t: 0 for t in PII_TYPES}
    fp = {t: 0 for t in PII_TYPES}
    fn = {t: 0 for t in PII_TYPES}
    survived_neg = 0
    n_neg = 0
    leaked: list[str] = []
    for kind, item, out in zip(planted["kind"], planted["item"], scrubbed["text"]):
        got = _placeholder_counts(out)
        for t in PII_TYPES:
            want = 1 if kind == t else 0
            hit = min(got[t], want)
            tp[t] += hit
            fp[t] += got[t] - hit
            fn[t] += want - hit
        if kind == "NONE":
            n_neg += 1
            survived_neg += item in out and sum(got.values()) == 0
        elif item in out:
            leaked.append(item)
    table = pl.DataFrame(
        {
            "pii_type": list(PII_TYPES),
            "planted": [tp[t] + fn[t] for t in PII_TYPES],
            "tp": [tp[t] for t in PII_TYPES],
            "fp": [fp[t] for t in PII_TYPES],
            "fn": [fn[t] for t in PII_TYPES],
        }
    ).with_columns(
        precision=pl.col("tp") / (pl.col("tp") + pl.col("fp")),
        recall=pl.col("tp") / (pl.col("tp") + pl.col("fn")),
    )
    summary = {"hard_negative_survival": survived_neg / n_neg, "n_negatives": n_neg, "leaked": leaked}
    return table, summary


def _check_planted(carriers: list[str]) -> None:
    planted = build_planted(carriers)
    n_items = planted.filter(pl.col("kind") != "NONE").height
    assert n_items >= 500
    out, counts = scrub_frame(planted)
    table, summary = evaluate(planted, out)
    with pl.Config(tbl_rows=20, float_precision=3):
        print(f"\nPII scrub on {n_items} planted items + {summary['n_negatives']} hard negatives")
        print(table)
        print(f"hard negatives surviving verbatim: {summary['hard_negative_survival']:.3f}")
    # nothing planted may survive into prompts
    assert summary["leaked"] == [], f"planted PII survived: {summary['leaked'][:10]}"
    for row in table.iter_rows(named=True):
        assert row["recall"] >= 0.99, (
            f"{row['pii_type']} recall {row['recall']:.3f} (planted item scrubbed under another type?)"
        )
        assert row["precision"] >= 0.95, f"{row['pii_type']} precision {row['precision']:.3f}"
    assert summary["hard_negative_survival"] >= 0.95
    # the counts frame agrees with the placeholders in the text
    placed = {t: sum(s.count(f"[{t}]") for s in out["text"]) for t in PII_TYPES}
    assert dict(zip(counts["pii_type"], counts["items"])) == placed
    # the audit column lists exactly the planted type on positive rows
    pos = out.with_columns(planted["kind"].alias("kind")).filter(pl.col("kind") != "NONE")
    assert (pos["pii_types"].list.first() == pos["kind"]).all()


def test_planted_pii_fallback_sentences() -> None:
    _check_planted(FALLBACK_SENTENCES)


def test_planted_pii_real_sentences(shared_data: Path) -> None:
    carriers = _carriers_from_shared(shared_data, 800, random.Random(3))
    _check_planted(carriers)


def test_real_traffic_is_fast_and_rarely_touched(shared_data: Path) -> None:
    with gzip.open(shared_data / "chitchat_dataset.json.gz", "rt") as f:
        convs = json.load(f)
    texts = [m["text"] for c in convs.values() for turn in c["messages"] for m in turn]
    df = pl.DataFrame({"text": texts})
    t0 = time.perf_counter()
    out, counts = scrub_frame(df)
    secs = time.perf_counter() - t0
    touched = out.filter(pl.col("pii_types").list.len() > 0).height
    print(f"\nscrubbed {len(texts)} real messages in {secs:.2f}s; {touched} rows touched")
    print(counts)
    assert secs < 30
    # real chat holds a handful of emails, phones and handles; far more would mean false hits
    assert 0 < touched < 0.001 * len(texts)
    by_type = dict(zip(counts["pii_type"], counts["items"]))
    assert by_type["EMAIL"] >= 1 and by_type["PHONE"] >= 1 and by_type["HANDLE"] >= 1


@pytest.mark.parametrize(
    "text,expected",
    [
        ("call me at +1 (555) 010-2345 tonight", "call me at [PHONE] tonight"),
        ("mail ann.lee+shop@mail.example.co.uk.", "mail [EMAIL]."),
        ("card 4111-1111-1111-1111 ok", "card [CARD] ok"),
        ("card 4111-1111-1111-1112 ok", "card 4111-1111-1111-1112 ok"),
        ("from ::ffff:192.0.2.128 and 10.0.0.1.", "from [IP] and [IP]."),
        ("see https://x.example.com/reset?token=abc123", "see [URL]"),
        (
            "see https://www.youtube.com/watch?v=dQw4w9WgXcQ",
            "see https://www.youtube.com/watch?v=dQw4w9WgXcQ",
        ),
        ("ping @jo_m and meet @ 5pm", "ping [HANDLE] and meet @ 5pm"),
        ("v1.2.3.4 ships, 1.2.3.4 leaks", "v1.2.3.4 ships, [IP] leaks"),
        ("https://a.example.com/?email=x@y.com", "[URL]"),
        ("read https://medium.com/@jane.doe/my-trip", "read [URL]"),
        ("http://10.0.0.1/admin", "http://[IP]/admin"),
    ],
)
def test_scrub_text_examples(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


def test_scrub_frame_nulls_other_columns_and_counts() -> None:
    df = pl.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "body": [None, "plain words", "a@b.io and @someone", "call 212-555-0199 or 212-555-0198"],
        }
    )
    out, counts = scrub_frame(df, text_col="body")
    assert out.columns == ["id", "body", "pii_types"]
    assert out["id"].to_list() == [1, 2, 3, 4]
    assert out["body"].to_list() == [None, "plain words", "[EMAIL] and [HANDLE]", "call [PHONE] or [PHONE]"]
    assert out["pii_types"].to_list() == [[], [], ["EMAIL", "HANDLE"], ["PHONE"]]
    got = {r["pii_type"]: (r["items"], r["rows"]) for r in counts.iter_rows(named=True)}
    assert got["PHONE"] == (2, 1) and got["EMAIL"] == (1, 1) and got["HANDLE"] == (1, 1) and got["CARD"] == (0, 0)
    with pytest.raises(ValueError, match="text_col"):
        scrub_frame(df)
    empty_out, empty_counts = scrub_frame(df.clear(), text_col="body")
    assert empty_out.height == 0 and empty_counts["items"].sum() == 0


def test_scrub_step_drops_nothing_and_counts_pii_in_typed_counters():
    df = pl.DataFrame({"text": ["mail me at ann@example.com or ann2@example.com", "hello there", None]})
    step = scrub_step(df)
    assert step.kept.height == 3 and step.drops.height == 0 and step.drops.schema == schema.DROPS
    c = step.counters
    assert (c.rows_in, c.rows_kept, c.rows_with_pii, c.pii_items) == (3, 3, 1, 2)
    counts = step.tables["pii_counts"]
    assert counts.filter(pl.col("pii_type") == "EMAIL")["items"].item() == 2
    assert "[EMAIL]" in step.kept["text"][0]


def test_landed_scrub_step_passes_on_what_ingest_scrubbed_and_scrubs_an_older_landing_table():
    df = pl.DataFrame({"text": ["mail me at ann@example.com or ann2@example.com", "hello there"]})
    at_ingest = scrub_step(df)
    counts = at_ingest.tables["pii_counts"].with_columns(day=pl.lit("2026-01-05"))
    # scrubbed at ingest: passed on as it is, with the counts ingest recorded (scrubbing again finds nothing)
    landed = landed_scrub_step(at_ingest.kept, counts)
    assert landed.kept.equals(at_ingest.kept) and landed.counters == at_ingest.counters
    assert landed.tables["pii_counts"].equals(at_ingest.tables["pii_counts"])
    assert scrub_step(at_ingest.kept).counters.pii_items == 0
    # a landing table written before ingest scrubbed holds raw text: it is scrubbed and counted here
    older = landed_scrub_step(df, None)
    assert older.kept.equals(at_ingest.kept) and older.counters.pii_items == 2
    with pytest.raises(ValueError, match="pii_counts"):
        landed_scrub_step(at_ingest.kept, None)
