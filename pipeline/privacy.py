"""Scrub personal data from message text before it reaches the lake, prompts, embeddings or training sets.

Ingest runs `scrub_step` on accepted text before the landing table is written (and the same detectors on
quarantined payloads, `pipeline.redact`), so no table holds raw PII.

Each detected item is replaced by a typed placeholder (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[IP]`,
`[URL]`, `[HANDLE]`), so a reader still sees that something was there and of which kind.

Detectors, in the order they run (each sees the text the previous ones left, so a URL that holds
an email is one `[URL]`, not a URL with an `[EMAIL]` inside):

- URL: `http(s)://…` or `www.…` links that carry a secret or an identifier: a query/fragment
  parameter whose name reads like one (token, key, id, session, sig, auth, password, code, email…),
  credentials in the authority (`user:pass@host`), a `/@handle` path segment, or an opaque path
  segment (a UUID, 16+ hex digits, a 16+ character run mixing letters and digits, or 10+ digits).
  Plain links stay: they are content (a song, an article), not personal data.
- EMAIL: `local@domain.tld`, plus-tags and subdomains included.
- IP: IPv6 (validated by the standard library's `ipaddress`, zone ids and IPv4-mapped forms
  included) then IPv4 dotted quads. A dotted quad of valid octets is indistinguishable from an
  address, so bare `1.2.3.4` counts as an IP (privacy wins); one written as a version (`v1.2.3.4`,
  `version 1.2.3.4`) is kept, and three-part versions (`1.2.3`) never match.
- CARD: 13–19 digits, contiguous or grouped by single spaces/dashes (4-4-4-4, Amex 4-6-5, …), with
  an issuer prefix 2–6, that pass the Luhn checksum. A 16-digit number failing Luhn is not a card.
- PHONE: Google's libphonenumber (`phonenumbers.PhoneNumberMatcher`) at POSSIBLE leniency, so the
  reserved 555-01xx numbers and numbers of unassigned ranges still count, then filtered to cut the
  false hits POSSIBLE allows: a match is kept when it is written internationally (`+…`); a North
  American one (region US/CA/…) when its digit groups have a phone's shape (10 digits, 3-3-4,
  1-3-3-4, or a local `NNN-NNNN`); any other region's when libphonenumber calls it valid or it has
  9+ national digits in at most four groups. Bare runs of 7–9 digits ("1000000"), decimals
  ("999.9999"), lists ("4 8 15 16 23 42", "800 2200 300") and year ranges are not phones.
- HANDLE: `@name` mentions (a letter or underscore first; dots inside allowed), not `@ 5pm`,
  not `@5pm`, not the `@` of an email.

Not covered (documented limits): obfuscated addresses ("john at gmail dot com"), street addresses,
names, national ids; phone numbers written with an international call prefix other than `+` or the
configured region's (e.g. `0044…` under region US).

Speed: a vectorized pre-filter (polars/Rust regex) picks the rows that hold a digit, an `@`, `://`
or `www.`; only those run through the Python detectors, and within a row each detector first checks
a cheap condition. On chat traffic that is a small fraction of rows.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import phonenumbers
import polars as pl
from phonenumbers import Leniency, PhoneNumberMatcher

from pipeline import schema
from pipeline.step import StepCounters, StepResult

EMAIL, PHONE, CARD, IP, URL, HANDLE = "EMAIL", "PHONE", "CARD", "IP", "URL", "HANDLE"
# also the order in which the detectors run
PII_TYPES: tuple[str, ...] = (URL, EMAIL, IP, CARD, PHONE, HANDLE)

DEFAULT_URL_SECRET_WORDS: tuple[str, ...] = (
    "token", "key", "session", "sid", "sig", "secret", "auth", "passw", "pwd", "otp", "nonce",
    "email", "mail", "code", "ticket", "credential", "jwt", "hash",
)  # fmt: skip


@dataclass
class PrivacyConfig:
    types: tuple[str, ...] = field(
        default=PII_TYPES,
        metadata={"help": f"PII types to scrub, any of {PII_TYPES}. Types left out are kept verbatim."},
    )
    placeholder: str = field(
        default="[{type}]",
        metadata={
            "help": "Replacement text; `{type}` becomes the PII type (EMAIL, PHONE, ...). It must not "
            "contain digits or '@', so that a placeholder is never detected again."
        },
    )
    phone_region: str = field(
        default="US",
        metadata={
            "help": "Region (ISO 3166 alpha-2) whose national format numbers without a `+` are read in, "
            "e.g. US, GB, DE."
        },
    )
    url_secret_words: tuple[str, ...] = field(
        default=DEFAULT_URL_SECRET_WORDS,
        metadata={
            "help": "A URL query/fragment parameter whose lower-cased name contains one of these, or that "
            "is/ends in `id`, marks the URL as carrying a secret or identifier."
        },
    )
    url_opaque_min_len: int = field(
        default=16,
        metadata={
            "help": "A URL path segment at least this long mixing letters and digits (or all hex) reads "
            "as a token; shorter ones (slugs, `tt2872732`) stay."
        },
    )

    def __post_init__(self) -> None:
        self.types = tuple(self.types)
        unknown = [t for t in self.types if t not in PII_TYPES]
        if unknown:
            raise ValueError(f"PrivacyConfig.types has unknown PII types {unknown}; use a subset of {PII_TYPES}")
        if "{type}" not in self.placeholder:
            raise ValueError("PrivacyConfig.placeholder must contain '{type}', e.g. '[{type}]'")
        sample = self.placeholder.replace("{type}", "")
        if any(ch.isdigit() for ch in sample) or "@" in sample:
            raise ValueError("PrivacyConfig.placeholder must not contain digits or '@' (it would be re-detected)")
        try:
            self.placeholder.format(type=EMAIL)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"PrivacyConfig.placeholder {self.placeholder!r} is not a valid format string with only "
                "{type}; escape other braces as '{{' and '}}'"
            ) from exc
        self.phone_region = str(self.phone_region).upper()
        if self.phone_region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f"PrivacyConfig.phone_region {self.phone_region!r} is not a region libphonenumber knows; "
                "use an ISO 3166 alpha-2 code such as 'US' or 'GB'"
            )
        if self.url_opaque_min_len < 8:
            raise ValueError("PrivacyConfig.url_opaque_min_len must be >= 8 (shorter would flag ordinary slugs)")
        self.url_secret_words = tuple(w.lower() for w in self.url_secret_words)


# --- detectors -----------------------------------------------------------------------------------
# Each returns the spans it found in `text`; `scrub_text` replaces them right to left.

Span = tuple[int, int]

_URL_RE = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"'`]+")
_URL_TRAILING = ".,;:!?)]}'\""
_UUID_RE = re.compile(r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX_RE = re.compile(r"(?i)^[0-9a-f]{16,}$")
_LONG_DIGITS_RE = re.compile(r"^\d{10,}$")
_TOKEN_CHARS_RE = re.compile(r"^[A-Za-z0-9_\-=.~%+]+$")


def _opaque_segment(seg: str, min_len: int) -> bool:
    if not seg:
        return False
    if _UUID_RE.match(seg) or _HEX_RE.match(seg) or _LONG_DIGITS_RE.match(seg):
        return True
    if len(seg) < min_len or not _TOKEN_CHARS_RE.match(seg):
        return False
    # A slug is words joined by dashes; a token is one long run mixing letters and digits.
    for piece in re.split(r"[-_.~]", seg):
        if len(piece) >= min_len and any(c.isdigit() for c in piece) and any(c.isalpha() for c in piece):
            return True
    return False


def _secret_param(name: str, words: tuple[str, ...]) -> bool:
    n = name.lower()
    return n == "id" or (n.endswith("id") and len(n) <= 12) or any(w in n for w in words)


def _url_is_sensitive(url: str, config: PrivacyConfig) -> bool:
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
    except ValueError:
        return True  # unparseable links in chat are rare and likely mangled tokens: err toward privacy
    if "@" in parts.netloc:
        return True
    for query in (parts.query, parts.fragment):
        if "=" in query:
            for name, _ in parse_qsl(query, keep_blank_values=True):
                if _secret_param(name, config.url_secret_words):
                    return True
    segments = parts.path.split("/")
    # "/@jane" is a profile: the handle detector cannot see it inside a link
    return any(seg.startswith("@") or _opaque_segment(seg, config.url_opaque_min_len) for seg in segments)


def _find_urls(text: str, config: PrivacyConfig) -> list[Span]:
    if "://" not in text and "www." not in text.lower():
        return []
    spans = []
    for m in _URL_RE.finditer(text):
        start, end = m.span()
        while end > start and text[end - 1] in _URL_TRAILING:
            end -= 1
        if _url_is_sensitive(text[start:end], config):
            spans.append((start, end))
    return spans


_EMAIL_RE = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9][A-Za-z0-9._%+-]*"  # local part, plus-tags included
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"  # (sub)domains and TLD
)


def _find_emails(text: str, config: PrivacyConfig) -> list[Span]:
    if "@" not in text:
        return []
    return [m.span() for m in _EMAIL_RE.finditer(text)]


# a loose candidate (hex groups and colons, an optional dotted IPv4 tail and zone id) that the
# standard library then validates
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?"
    r"(?:%[A-Za-z0-9_]+)?(?![\w:]|\.\d)"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_RE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?:/(?:3[0-2]|[12]?\d))?(?!\w|\.\d)")
_VERSION_BEFORE_RE = re.compile(r"(?i)(?:\bv|\bversion\s*|\bver\.?\s*)$")


def _find_ips(text: str, config: PrivacyConfig) -> list[Span]:
    spans: list[Span] = []
    if text.count(":") >= 2:
        for m in _IPV6_RE.finditer(text):
            cand = m.group(0)
            groups = [g for g in cand.split("%")[0].split(":") if g]
            if len(groups) < 2 or not any(c.isdigit() for c in cand):
                continue
            try:
                ipaddress.IPv6Address(cand)
            except ValueError:
                continue
            spans.append(m.span())
    if text.count(".") >= 3:
        for m in _IPV4_RE.finditer(text):
            if any(s <= m.start() < e for s, e in spans):
                continue
            if _VERSION_BEFORE_RE.search(text, 0, m.start()):
                continue
            spans.append(m.span())
    return spans


_CARD_RE = re.compile(
    r"(?<![\d+.,/-])(?:"
    r"\d{4}([ -]?)\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?"  # 16-19 digits in fours (Visa, MC, Discover)
    r"|\d{4}([ -]?)\d{6}\2\d{4,5}"  # 14-15 digits 4-6-4/5 (Amex, Diners)
    r"|\d{13,19}"
    r")(?![\d]|[.,/-]\d)"
)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _find_cards(text: str, config: PrivacyConfig) -> list[Span]:
    spans = []
    for m in _CARD_RE.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits):
            spans.append(m.span())
    return spans


_PHONE_HINT_RE = re.compile(r"\d(?:[\s().+-]{0,3}\d){6,}")
_DIGIT_GROUPS_RE = re.compile(r"\d+")
_NANP_LOCAL_RE = re.compile(r"^[2-9]\d{2}-\d{4}$")
# digit-group shapes of North American numbers written without '+': 10 digits, 3-3-4, 1-3-3-4, 3-7;
# anything else ("800 2200 300", "4 8 15 16 23 42") is a list of numbers, not a phone
_NANP_SHAPES = {(10,), (11,), (3, 3, 4), (1, 3, 3, 4), (1, 10), (3, 7)}


def _accept_phone(raw: str, number: phonenumbers.PhoneNumber) -> bool:
    if raw.startswith("+"):
        return True
    shape = tuple(len(g) for g in _DIGIT_GROUPS_RE.findall(raw))
    if number.country_code == 1:
        if shape == (3, 4):
            return bool(_NANP_LOCAL_RE.match(raw))
        return shape in _NANP_SHAPES and len(str(number.national_number)) == 10
    if len(shape) > 5 or sum(n == 1 for n in shape) > 1:
        return False
    # long national numbers in a few groups read as phones even in ranges not (yet) assigned
    return phonenumbers.is_valid_number(number) or (len(str(number.national_number)) >= 9 and len(shape) <= 4)


def _find_phones(text: str, config: PrivacyConfig) -> list[Span]:
    if not _PHONE_HINT_RE.search(text):
        return []
    spans = []
    for m in PhoneNumberMatcher(text, config.phone_region, leniency=Leniency.POSSIBLE):
        raw, start = m.raw_string, m.start
        if raw.startswith("(") and ")" not in raw:
            # "(+33 6 12 34 57 63)": the matcher takes the opening bracket of the prose along
            raw, start = raw[1:], start + 1
        if _accept_phone(raw, m.number):
            spans.append((start, m.end))
    return spans


_HANDLE_RE = re.compile(r"(?<![\w@./+-])@[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")


def _find_handles(text: str, config: PrivacyConfig) -> list[Span]:
    if "@" not in text:
        return []
    return [m.span() for m in _HANDLE_RE.finditer(text) if m.end() - m.start() >= 3]


_DETECTORS = {
    URL: _find_urls,
    EMAIL: _find_emails,
    IP: _find_ips,
    CARD: _find_cards,
    PHONE: _find_phones,
    HANDLE: _find_handles,
}


def scrub_text_with_types(text: str, config: PrivacyConfig) -> tuple[str, dict[str, int]]:
    """`text` with every enabled PII type replaced, and how many items of each type were replaced."""
    found: dict[str, int] = {}
    for pii_type in PII_TYPES:
        if pii_type not in config.types:
            continue
        spans = _DETECTORS[pii_type](text, config)
        if not spans:
            continue
        placeholder = config.placeholder.format(type=pii_type)
        for start, end in sorted(spans, reverse=True):
            text = text[:start] + placeholder + text[end:]
        found[pii_type] = len(spans)
    return text, found


def scrub_text(text: str, config: PrivacyConfig | None = None) -> str:
    """`text` with every enabled PII type replaced by its placeholder."""
    return scrub_text_with_types(text, config or PrivacyConfig())[0]


# rows that can hold any PII type: a digit, an '@', or a link
_PREFILTER = r"[0-9@]|://|(?i:www\.)"


def scrub_frame(
    df: pl.DataFrame, config: PrivacyConfig | None = None, text_col: str = "text"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Scrub `df[text_col]` in place of the original text.

    Returns the frame with scrubbed text plus a `pii_types` column (sorted list of the types found in
    that row, empty when none), and a counts frame `(pii_type, items, rows)`: per enabled type, how
    many items were replaced and in how many rows. Null texts stay null. Row order is kept.
    """
    config = config or PrivacyConfig()
    if text_col not in df.columns:
        raise ValueError(f"scrub_frame: frame has no column {text_col!r} (columns: {df.columns}); pass text_col=")
    texts = df.get_column(text_col).cast(pl.Utf8)
    candidates = texts.str.contains(_PREFILTER).fill_null(False)
    idx = candidates.arg_true().to_list()
    new_texts = texts.to_list()
    types_per_row: list[list[str]] = [[] for _ in range(len(new_texts))]
    totals = {t: [0, 0] for t in PII_TYPES if t in config.types}
    for i in idx:
        scrubbed, found = scrub_text_with_types(new_texts[i], config)
        if found:
            new_texts[i] = scrubbed
            types_per_row[i] = sorted(found)
            for t, n in found.items():
                totals[t][0] += n
                totals[t][1] += 1
    out = df.with_columns(
        pl.Series(text_col, new_texts, dtype=pl.Utf8),
        pl.Series("pii_types", types_per_row, dtype=pl.List(pl.Utf8)),
    )
    counts = pl.DataFrame(
        {
            "pii_type": list(totals),
            "items": [v[0] for v in totals.values()],
            "rows": [v[1] for v in totals.values()],
        },
        schema={"pii_type": pl.Utf8, "items": pl.Int64, "rows": pl.Int64},
    )
    return out, counts


@dataclass(frozen=True)
class ScrubCounters(StepCounters):
    rows_with_pii: int
    pii_items: int


def scrub_step(df: pl.DataFrame, config: PrivacyConfig | None = None) -> StepResult[ScrubCounters]:
    """`scrub_frame` as a curation step: scrubbing replaces text and drops no row; the per-type counts are
    the `pii_counts` table."""
    scrubbed, counts = scrub_frame(df, config)
    counters = ScrubCounters(
        rows_in=df.height,
        rows_kept=scrubbed.height,
        rows_with_pii=int(scrubbed.filter(pl.col("pii_types").list.len() > 0).height),
        pii_items=int(counts["items"].sum()),
    )
    return StepResult(scrubbed, schema.empty(schema.DROPS), counters, tables={"pii_counts": counts})


def landed_scrub_step(
    df: pl.DataFrame, counts: pl.DataFrame | None, config: PrivacyConfig | None = None
) -> StepResult[ScrubCounters]:
    """`scrub_step` over the landing table, which ingest has normally scrubbed already.

    A frame with `pii_types` was scrubbed by `scrub_step` at ingest: it is passed on unchanged with the
    per-type `counts` ingest recorded (scrubbing it again would find nothing and report zeros). A frame
    without it was written before ingest scrubbed (or by hand) and may hold raw text: it is scrubbed now.
    """
    if "pii_types" not in df.columns:
        return scrub_step(df, config)
    if counts is None:
        raise ValueError("the landing table was scrubbed at ingest but its `pii_counts` are missing: re-run ingest")
    counts = counts.select("pii_type", "items", "rows").cast({"items": pl.Int64, "rows": pl.Int64})
    counters = ScrubCounters(
        rows_in=df.height,
        rows_kept=df.height,
        rows_with_pii=int(df.filter(pl.col("pii_types").list.len() > 0).height),
        pii_items=int(counts["items"].sum()),
    )
    return StepResult(df, schema.empty(schema.DROPS), counters, tables={"pii_counts": counts})
