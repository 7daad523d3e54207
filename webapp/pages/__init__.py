"""The app's pages. Each module exposes `bp`, `TITLE` and `DESCRIPTION`; register a page by listing it here."""

from . import chat, scores, words

PAGES = (scores, chat, words)
