"""Kubernetes resource quantities ("100Mi", "0.5", "250m", "1e3"): parsing, validation, formatting.

Exact arithmetic with `Decimal`; the grammar is apimachinery's `resource.Quantity`.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_SUFFIXES = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE](?P<exp>[+-]?\d+))?$"
)


class QuantityError(ValueError):
    """Not a valid Kubernetes quantity."""


def parse_quantity(text: str | int | float) -> Decimal:
    """The value of a quantity as an exact Decimal: `parse_quantity("1.5Gi")` -> 1610612736."""
    if isinstance(text, bool):
        raise QuantityError(f"{text!r} is not a quantity")
    if isinstance(text, int | float):
        if isinstance(text, float) and not math.isfinite(text):
            raise QuantityError(f"{text!r} is not a quantity")
        return Decimal(str(text))
    match = _QUANTITY.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise QuantityError(f"{text!r} is not a quantity (examples: 2, 500m, 1.5Gi, 100M)")
    try:
        number = Decimal(match.group("number"))
    except InvalidOperation:
        raise QuantityError(f"{text!r} is not a quantity") from None
    if match.group("exp") is not None:
        return number * Decimal(10) ** int(match.group("exp"))
    return number * _SUFFIXES[match.group("suffix") or ""]


def format_quantity(value: Decimal | int) -> str:
    """A canonical string for a value: integers plainly, fractions in milli-units when exact."""
    value = Decimal(value)
    if value == value.to_integral_value():
        return str(int(value))
    milli = value * 1000
    if milli == milli.to_integral_value():
        return f"{int(milli)}m"
    return str(value.normalize())


def ceil_div(value: Decimal, divisor: Decimal) -> int:
    """`value / divisor` rounded up, as the kubelet does for resourceFieldRef with a divisor."""
    return math.ceil(value / divisor)
