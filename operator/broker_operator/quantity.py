"""Kubernetes resource quantities (``500m``, ``1Gi``, ``1e3``) as exact numbers.

The API server stores a quantity in its canonical form, not as written:
``0.5`` becomes ``500m``, ``1024Mi`` becomes ``1Gi``, ``1000k`` becomes
``1M``. Comparing the strings would see a difference on every resync; the
operator compares the values these strings denote instead.

Grammar (as the API documents it)::

    <quantity>        ::= <signedNumber><suffix>
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExponent> ::= e<signedNumber> | E<signedNumber>

The server keeps nano precision and rounds anything finer up, so values are
compared in whole nano-units, rounded up the same way.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_PATTERN = re.compile(
    rf"^(?P<number>{_NUMBER})"
    rf"(?:(?P<binary>[KMGTPE]i)|[eE](?P<exponent>{_NUMBER})|(?P<decimal>[numkMGTPE]?))$"
)
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_NANO = 10**9


class QuantityError(ValueError):
    """Not a Kubernetes quantity."""


@dataclass(frozen=True)
class Quantity:
    """A parsed quantity: its exact value, and that value in nano-units rounded up."""

    value: Fraction

    @property
    def nanos(self) -> int:
        return math.ceil(self.value * _NANO)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and self.nanos == other.nanos

    def __hash__(self) -> int:
        return hash(self.nanos)


def parse(text: str | int) -> Quantity:
    """The quantity ``text`` denotes, or :class:`QuantityError`."""
    if isinstance(text, bool):
        raise QuantityError(f"not a quantity: {text!r}")
    if isinstance(text, int):
        return Quantity(Fraction(text))
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise QuantityError(f"not a quantity: {text!r}")
    number = Fraction(match["number"])
    if match["binary"] is not None:
        return Quantity(number * 2 ** _BINARY[match["binary"]])
    if match["exponent"] is not None:
        exponent = Fraction(match["exponent"])
        if exponent.denominator != 1:
            raise QuantityError(f"not a whole exponent: {text!r}")
        if abs(exponent) > 1000:
            raise QuantityError(f"exponent out of range: {text!r}")
        return Quantity(number * Fraction(10) ** int(exponent))
    return Quantity(number * Fraction(10) ** _DECIMAL[match["decimal"]])


def same(a: object, b: object) -> bool:
    """True if ``a`` and ``b`` are quantities of the same value (``0.5`` and ``500m``)."""
    if not isinstance(a, str | int) or not isinstance(b, str | int):
        return False
    try:
        return parse(a) == parse(b)
    except QuantityError:
        return False
