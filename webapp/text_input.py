"""What a typed text may hold: control characters are dropped, and a text must show something."""

import unicodedata

# Tabs and line breaks are typing; every other control character (NUL, escape, ...) is not.
_KEPT_CONTROLS = {"\t", "\n", "\r"}
# Categories that show nothing on their own: controls, format characters (zero-width spaces and
# joiners), separators, combining marks, surrogates, private and unassigned code points.
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me"}


def clean(text):
    """The text without its control characters (tabs and line breaks stay)."""
    return "".join(c for c in text if c in _KEPT_CONTROLS or unicodedata.category(c) != "Cc")


def shows_something(text):
    """Whether the text has a character that can be seen."""
    return any(unicodedata.category(c) not in _INVISIBLE for c in text)
