"""Scores as text: which submitted strings are scores, and how a score is shown and sent as JSON."""

import math
import re

# Plain decimal notation in ASCII digits only: float() alone would also take "nan", "inf", "1_000",
# "infinity", and the digits of every script ("١٢٣", "１２３").
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MAX_SCORE_CHARS = 64


class InvalidScore(ValueError):
    """A submitted score that is not a finite number."""


def parse_score(text, max_abs=1e15):
    """Return the number a submitted string means, or raise InvalidScore saying why it is refused."""
    text = (text or "").strip()
    if not text:
        raise InvalidScore("Enter a score: the box was empty.")
    if len(text) > MAX_SCORE_CHARS or not _NUMBER.fullmatch(text):
        raise InvalidScore("A score must be a number, such as 42 or -3.5.")
    value = float(text)
    if not math.isfinite(value) or abs(value) > max_abs:
        raise InvalidScore(f"That number is too large: scores go from {readable_score(-max_abs)} "
                           f"to {readable_score(max_abs)}.")
    return value + 0.0  # folds -0.0 into 0.0


def format_score(value):
    """Show integral scores without a trailing '.0'."""
    return str(int(value)) if value.is_integer() else repr(value)


def readable_score(value):
    """A score for a sentence, its thousands grouped: 1,000,000,000,000,000."""
    return f"{int(value):,}" if value.is_integer() else f"{value:,}"


def json_score(value):
    """Integral scores as JSON integers, the rest as floats."""
    return int(value) if value.is_integer() else value
