"""Finding personal data in a request, so that the SDK can keep it on the device.

Deliberately simple and conservative: email addresses, phone numbers (7 to 15 digits, with the
usual separators, written as a number rather than a date or a sum), and payment card numbers (13 to
19 digits that pass the Luhn check). It reports the kinds found, never the values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from router._wire import ChatMessage

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Digits with spaces or dashes between groups: 13 to 19 digits in all.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# An optional +country code, optional (area) code, then groups of digits with separators.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d(?:[ .-]?\d){6,14}(?![\w])")


_ISO_DATE = re.compile(r"^\d{4}[-.]\d{1,2}[-.]\d{1,2}$")


def _looks_like_phone(candidate: str) -> bool:
    """A phone number is written as one: +country code, (area code), two separators or 10+ digits."""
    digits = re.sub(r"\D", "", candidate)
    if not 7 <= len(digits) <= 15 or len(set(digits)) == 1 or _ISO_DATE.match(candidate):
        return False
    separators = len(re.findall(r"\d[ .-]\(?\d", candidate))
    return candidate.startswith("+") or "(" in candidate or separators >= 2 or len(digits) >= 10


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum of payment card numbers."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_personal_data(text: str, kinds: Iterable[str] = ("email", "phone", "card")) -> list[str]:
    """The kinds of personal data in `text`, sorted: a subset of `kinds`."""
    wanted = set(kinds)
    found: set[str] = set()
    if "email" in wanted and _EMAIL.search(text):
        found.add("email")
    cards: list[tuple[int, int]] = []
    if "card" in wanted:
        for match in _CARD.finditer(text):
            digits = re.sub(r"\D", "", match.group())
            if 13 <= len(digits) <= 19 and luhn_valid(digits):
                found.add("card")
                cards.append(match.span())
    if "phone" in wanted:
        for match in _PHONE.finditer(text):
            if any(start <= match.start() < end for start, end in cards):
                continue  # a card number is not also a phone number
            if _looks_like_phone(match.group()):
                found.add("phone")
                break
    return sorted(found)


def personal_data_in(messages: Sequence[ChatMessage], kinds: Iterable[str]) -> list[str]:
    """The kinds of personal data in a conversation's messages (any role: history leaves too)."""
    return find_personal_data("\n".join(m.text for m in messages), kinds)
