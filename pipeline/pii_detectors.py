"""The PII detectors: each returns the spans of its type it found in a text.

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

Detectors read the text's normalised view (`pipeline.pii_view`: NFKC, format characters left out, digits of
any script as ASCII), so full-width or Arabic-Indic digits and a `＠` are found as their ASCII forms.

Not covered (documented limits): obfuscated addresses ("john at gmail dot com"), street addresses,
names, national ids; phone numbers written with an international call prefix other than `+` or the
configured region's (e.g. `0044…` under region US).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import parse_qsl, urlsplit

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher

from pipeline.privacy_config import CARD, EMAIL, HANDLE, IP, PHONE, URL, PrivacyConfig

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
    """The Luhn checksum every payment card number carries; a decimal digit of any script counts as its value."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = unicodedata.decimal(ch)
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
        if 13 <= len(digits) <= 19 and unicodedata.decimal(digits[0]) in (2, 3, 4, 5, 6) and luhn_ok(digits):
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


def _matched_phones(text: str, offset: int, config: PrivacyConfig) -> list[Span]:
    spans = []
    for m in PhoneNumberMatcher(text, config.phone_region, leniency=Leniency.POSSIBLE):
        raw, start = m.raw_string, m.start
        if raw.startswith("(") and ")" not in raw:
            # "(+33 6 12 34 57 63)": the matcher takes the opening bracket of the prose along
            raw, start = raw[1:], start + 1
        if _accept_phone(raw, m.number):
            spans.append((offset + start, offset + m.end))
    return spans


def _digits_in(text: str, spans: list[Span], lo: int, hi: int) -> int:
    return sum(text[max(s, lo) : min(e, hi)].count(d) for s, e in spans for d in "0123456789")


def _unglued(text: str, hint: re.Match, spans: list[Span], config: PrivacyConfig) -> list[Span] | None:
    """A phone glued to a number before or after it ("+1 415 555 0177 0") reads as no phone, or as a shorter
    one, to the matcher: the hint's digit groups are tried in shorter runs, longest first, and the run that
    finds the most digits of a phone replaces what was found (None when none finds more)."""
    groups = list(_DIGIT_GROUPS_RE.finditer(text, hint.start(), hint.end()))
    have = _digits_in(text, spans, hint.start(), hint.end())
    for size in range(len(groups) - 1, 0, -1):
        for first in range(len(groups) - size + 1):
            run = groups[first : first + size]
            if sum(len(g.group()) for g in run) < 7:
                continue
            start, end = run[0].start(), run[-1].end()
            if start > 0 and text[start - 1] in "+(":
                start -= 1
            found = _matched_phones(text[start:end], start, config)
            if _digits_in(text, found, start, end) > have:
                return found
    return None


def _find_phones(text: str, config: PrivacyConfig) -> list[Span]:
    if not _PHONE_HINT_RE.search(text):
        return []
    spans = _matched_phones(text, 0, config)
    for hint in _PHONE_HINT_RE.finditer(text):
        inside = [(s, e) for s, e in spans if s < hint.end() and hint.start() < e]
        digits = sum(text.count(d, hint.start(), hint.end()) for d in "0123456789")
        if digits - _digits_in(text, inside, hint.start(), hint.end()) < 3:
            continue  # the hint is a phone, give or take a digit of prose
        unglued = _unglued(text, hint, inside, config)
        if unglued is not None:
            spans = [sp for sp in spans if sp not in inside] + unglued
    return spans


_HANDLE_RE = re.compile(r"(?<![\w@./+-])@[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")


def _find_handles(text: str, config: PrivacyConfig) -> list[Span]:
    if "@" not in text:
        return []
    return [m.span() for m in _HANDLE_RE.finditer(text) if m.end() - m.start() >= 3]


DETECTORS = {
    URL: _find_urls,
    EMAIL: _find_emails,
    IP: _find_ips,
    CARD: _find_cards,
    PHONE: _find_phones,
    HANDLE: _find_handles,
}
