"""Human figures: SI prefixes with units, money without exponents, plurals, shifts."""

from __future__ import annotations

import pytest

from scheduler.review.units import money, plural, shift_hours, si


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (2.3e-5, "kWh", "23.0 mWh"),
        (0.2, "kWh", "200 Wh"),
        (1234.0, "g", "1.23 kg"),
        (0.000542, "g", "542 µg"),
        (0.0, "L", "0 L"),
        (None, "g", "-"),
        (-0.004, "g", "-4.00 mg"),
    ],
)
def test_si_scales_to_a_prefix_with_three_significant_figures(
    value: float | None, unit: str, text: str
) -> None:
    assert si(value, unit) == text


def test_money_never_prints_an_exponent() -> None:
    assert money(1.6e-6, "EUR") == "0.0000016 EUR"
    assert money(1234.5, "USD") == "1,234.50 USD"
    assert "e" not in money(6.31e-06)


def test_plural_and_shift_read_as_words() -> None:
    assert plural(1, "request") == "1 request"
    assert plural(2, "request") == "2 requests"
    assert shift_hours(9) == "+9 h later" and shift_hours(0.2) == "at once"
