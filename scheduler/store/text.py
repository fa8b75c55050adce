"""Which client strings the store can hold (no SQLAlchemy import: intake validation uses it)."""

from __future__ import annotations


def storable(text: str) -> bool:
    """Whether ``text`` can be stored as a database string: no NUL, no lone surrogate."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
