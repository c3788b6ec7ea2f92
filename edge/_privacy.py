"""Finding personal data in a request, so that the SDK can keep it on the device.

It reports the kinds found, never the values. Each kind is a pattern, then its identifier's own rules:

- `email`: an address with a dotted domain;
- `iban`: a country's IBAN length and the ISO 13616 mod-97 check, spaces in groups allowed;
- `card`: 13 to 19 digits (spaces or dashes between groups), a card issuer's prefix and the Luhn check;
- `ssn`: a US Social Security number written AAA-GG-SSSS (or with spaces), or nine digits right after
  "SSN" / "social security number", with an area, group and serial the SSA can issue;
- `phone`: libphonenumber's (phonenumberslite) matcher: a number written with `+` and a country
  code (E.164 style) counts in any country when its length is possible there (the `POSSIBLE`
  leniency: validity lags behind numbering plans, and reserved ranges are "invalid"); a number in
  national format (`020 7946 0958`, `(415) 555-0132`, or `0049 ...` / `011 ...`) counts when valid
  (`VALID`) in one of `regions` (ISO 3166 codes). Candidates that are ISBNs, part of a version or an
  address (`124.0.6367.207`), or glued to letters (`ORD-2024-000123`) are not phones.

A span one kind claimed is not looked at again by the kinds after it (in the order above): a card
or an IBAN is not also a phone, an SSN is not a phone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

from hyrouter.edge._identifiers import IBAN_LENGTHS, card_valid, iban_valid, isbn_valid, luhn_valid, ssn_valid
from hyrouter.router._extras import import_extra
from hyrouter.router._wire import ChatMessage

__all__ = [
    "DEFAULT_KINDS",
    "DEFAULT_PHONE_REGIONS",
    "PersonalDataKind",
    "find_personal_data",
    "luhn_valid",
    "personal_data_in",
]

#: The kinds of personal data the detector knows.
PersonalDataKind = Literal["card", "email", "iban", "phone", "ssn"]
#: What counts as personal data unless the config says otherwise.
DEFAULT_KINDS: tuple[PersonalDataKind, ...] = ("card", "email", "iban", "phone", "ssn")
#: The regions whose national phone formats are recognised unless the config says otherwise.
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR")

_Span = tuple[int, int]

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Country code, check digits, then the BBAN in groups (printed in fours) with single spaces between.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){10,30}(?![A-Za-z0-9])")
# Digits with spaces or dashes between groups: 13 to 19 digits in all.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(
    r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])"
    r"|(?i:\bSSN|\bsocial security(?: number| no\.?)?)\W{0,5}(\d{3})(\d{2})(\d{4})\b"
)
# A book number: after "ISBN", or hyphenated in groups that end in a single check digit.
_ISBN_CONTEXT = re.compile(r"ISBN(?:-1[03])?:?\s*$", re.IGNORECASE)
_ISBN_GROUPS = re.compile(r"\d{1,5}-\d{1,7}-\d{1,7}-(?:\d{1,7}-)?[\dXx]")
_CODE_BEFORE = re.compile(r"(?:\w-|\d[./]|[A-Za-z])$")
_CODE_AFTER = re.compile(r"-\w|[./]\d|[A-Za-z]")
# No phone number has fewer than seven digits (with separators between them): most texts stop here,
# before libphonenumber is imported or run.
_SEVEN_DIGITS = re.compile(r"\d(?:[^\S\n]?[-./()]?[^\S\n]?\d){6}")


def _iban_spans(text: str) -> Iterator[_Span]:
    for match in _IBAN.finditer(text):
        candidate = match.group()
        country = candidate[:2].upper()
        # The pattern may run into the next word ("... 19 AND"): cut at the country's length, which
        # must fall at the end of a group.
        kept = 0
        for end, char in enumerate(candidate, 1):
            kept += char != " "
            if kept == IBAN_LENGTHS.get(country, -1):
                if (end == len(candidate) or candidate[end] == " ") and iban_valid(
                    candidate[:end].replace(" ", "")
                ):
                    yield match.start(), match.start() + end
                break


def _card_spans(text: str) -> Iterator[_Span]:
    for match in _CARD.finditer(text):
        if card_valid(re.sub(r"\D", "", match.group())):
            yield match.span()


def _ssn_spans(text: str) -> Iterator[_Span]:
    for match in _SSN.finditer(text):
        area, group, serial = match.group(1, 3, 4) if match.group(1) else match.group(5, 6, 7)
        if ssn_valid(area, group, serial):
            yield match.span()


def _phone_spans(text: str, regions: Sequence[str]) -> Iterator[_Span]:
    if not _SEVEN_DIGITS.search(text):
        return
    # lazy: its import and metadata cost only texts with seven digits or more
    phonenumbers = import_extra("phonenumbers", feature="the privacy check of phone numbers", extra="edge")

    # A number written with +country code is a phone where its length is possible in that country
    # (libphonenumber's validity lags behind numbering plans: reserved ranges such as the ones for
    # fiction are "invalid"); a national number must be valid in one of `regions`.
    searches = [("ZZ", phonenumbers.Leniency.POSSIBLE)]
    searches += [(region, phonenumbers.Leniency.VALID) for region in regions]
    for region, leniency in searches:
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=leniency):
            if not _looks_like_isbn(text, match.start, match.end) and not _inside_a_code(
                text, match.start, match.end
            ):
                yield match.start, match.end


def _inside_a_code(text: str, start: int, end: int) -> bool:
    """Whether a phone candidate is part of a longer code: a version or an address (1.2.3.4,
    124.0.6367.207, 192.168.1.20), or glued to letters (ORD-2024-000123, v2.0.1234567)."""
    if _CODE_BEFORE.search(text, max(0, start - 2), start) or _CODE_AFTER.match(text, end):
        return True
    groups = text[start:end].split(".")
    return len(groups) > 1 and (
        any(len(group) == 1 for group in groups)
        or (len(groups) == 4 and all(g.isdigit() and int(g) <= 255 for g in groups))
    )


def _looks_like_isbn(text: str, start: int, end: int) -> bool:
    """Whether a phone candidate is a book number (valid ISBN digits that also read as a phone number)."""
    candidate = text[start:end]
    check_x = re.match(r"-?[Xx]", text[end : end + 2])  # the matcher leaves an ISBN-10's X out
    candidate += check_x.group() if check_x else ""
    if not isbn_valid(re.sub(r"[^\dXx]", "", candidate)):
        return False
    return bool(_ISBN_CONTEXT.search(text, 0, start) or _ISBN_GROUPS.fullmatch(candidate))


def _email_spans(text: str) -> Iterator[_Span]:
    for match in _EMAIL.finditer(text):
        yield match.span()


def find_personal_data(
    text: str,
    kinds: Iterable[str] = DEFAULT_KINDS,
    regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
) -> list[str]:
    """The kinds of personal data in `text`, sorted: a subset of `kinds`.

    `regions` are the ISO 3166 regions whose national phone formats count (numbers with a `+`
    country code count whatever the region).
    """
    wanted = set(kinds)
    finders: dict[str, Callable[[str], Iterator[_Span]]] = {
        "email": _email_spans,
        "iban": _iban_spans,
        "card": _card_spans,
        "ssn": _ssn_spans,
        "phone": lambda t: _phone_spans(t, regions),
    }
    found: set[str] = set()
    claimed: list[_Span] = []
    for kind, spans in finders.items():
        # Kinds not wanted still claim their spans (an SSN is no phone even where SSNs don't count),
        # except phones, the last and the dearest.
        if kind == "phone" and kind not in wanted:
            continue
        for start, end in spans(text):
            if any(start < c_end and c_start < end for c_start, c_end in claimed):
                continue
            claimed.append((start, end))
            if kind in wanted:
                found.add(kind)
            if kind == "phone":
                break  # the last kind: one is enough
    return sorted(found)


def personal_data_in(
    messages: Sequence[ChatMessage],
    kinds: Iterable[str],
    regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
) -> list[str]:
    """The kinds of personal data in a conversation's messages (any role: history leaves too)."""
    return find_personal_data("\n".join(m.text for m in messages), kinds, regions)
