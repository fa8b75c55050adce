"""Human figures: SI prefixes with units, signed hours, plurals (CLI tables and the demo)."""

from __future__ import annotations

import math

_PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))


def si(value: float | None, unit: str, *, digits: int = 3) -> str:
    """``value`` with an SI prefix and ``digits`` significant figures: ``si(2.3e-5, "kWh")``
    gives ``"23 mWh"`` (a kilo-unit is rescaled to its base unit first), ``None`` gives ``-``.
    """
    if value is None or math.isnan(value):
        return "-"
    base, scale = (unit[1:], 1e3) if unit.startswith("k") and len(unit) > 1 else (unit, 1.0)
    x = value * scale
    if x == 0:
        return f"0 {base}"
    factor, prefix = next(((f, p) for f, p in _PREFIXES if abs(x) >= f), _PREFIXES[-1])
    scaled = x / factor
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(scaled)))))
    return f"{scaled:.{decimals}f} {prefix}{base}"


def money(value: float | None, currency: str = "") -> str:
    """An amount with its currency; sub-cent amounts keep two significant figures, no exponent."""
    if value is None:
        return "-"
    if value != 0 and abs(value) < 0.01:
        decimals = 1 - int(math.floor(math.log10(abs(value))))
        return f"{value:.{decimals}f} {currency}".rstrip()
    return f"{value:,.2f} {currency}".rstrip()


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 request``, ``2 requests`` (``words`` for irregular plurals)."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def shift_hours(hours: float) -> str:
    """A time shift in words: ``+9 h later``, ``at once``."""
    if abs(hours) < 0.5:
        return "at once"
    return f"{hours:+.0f} h later" if hours > 0 else f"{-hours:.0f} h earlier"
