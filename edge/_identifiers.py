"""The checksums and format rules of identifiers the privacy detector finds: cards, IBANs, US SSNs.

Pure functions on strings, no I/O: a candidate the detector's patterns found is personal data only if
it passes its identifier's own rules, so a number that merely has the right length is not reported.
"""

from __future__ import annotations

import re

#: The length of an IBAN in each country of the ISO 13616 registry (SWIFT's IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

# Issuer identification numbers of the card networks (ISO/IEC 7812): banking and financial cards
# start with 3 to 6; Mastercard's 2-series is 2221 to 2720. Other Luhn-valid numbers (order numbers,
# ISBNs, tracking numbers) are not cards.
_CARD_ISSUER = re.compile(r"[3-6]|222[1-9]|22[3-9]\d|2[3-6]\d\d|27[01]\d|2720")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum of payment card numbers."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_valid(digits: str) -> bool:
    """Whether digits are a payment card number: 13 to 19 digits, a card issuer's prefix, Luhn."""
    return 13 <= len(digits) <= 19 and bool(_CARD_ISSUER.match(digits)) and luhn_valid(digits)


def iban_valid(iban: str) -> bool:
    """Whether `iban` (no spaces, any case) has its country's length and passes the mod-97 check."""
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    # ISO 7064 MOD 97-10: the first four characters to the end, letters as 10..35, remainder 1.
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def isbn_valid(isbn: str) -> bool:
    """Whether `isbn` (digits, a final X allowed in ISBN-10, no separators) passes an ISBN check digit."""
    if len(isbn) == 10 and isbn[:9].isdigit() and (isbn[9].isdigit() or isbn[9] in "Xx"):
        values = [int(c) for c in isbn[:9]] + [10 if isbn[9] in "Xx" else int(isbn[9])]
        return sum((10 - i) * v for i, v in enumerate(values)) % 11 == 0
    if len(isbn) == 13 and isbn.isdigit() and isbn.startswith(("978", "979")):
        return sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(isbn)) % 10 == 0
    return False


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """Whether the three parts of a US Social Security number can have been issued.

    The SSA never issues area 000, 666 or 900 to 999 (the 9xx are taxpayer numbers, not SSNs),
    group 00 or serial 0000.
    """
    return area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"
