"""The PII types the scrubber knows and the settings it runs with."""

from __future__ import annotations

from dataclasses import dataclass, field

import phonenumbers

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
