"""The Markdown that chat bubbles show: a safe subset rendered by markdown-it-py, never raw HTML.

Emphasis, inline code, code blocks, lists and links; a line break in a message stays a line break.
HTML in a message is shown as text, and a link that is not http(s) or mailto is left as text
(markdown-it's own `validateLink` refuses `javascript:` and the like).
"""

from functools import cache

from markdown_it import MarkdownIt
from markupsafe import Markup

RULES = ["emphasis", "backticks", "escape", "newline", "link", "code", "fence", "list"]


def _link_open(renderer, tokens, index, options, env):
    """Links that pass no ranking on and give the new page no handle on this one."""
    tokens[index].attrSet("rel", "nofollow noopener")
    return renderer.renderToken(tokens, index, options, env)


@cache
def _parser():
    """The one parser of this process (its rules are set once)."""
    parser = MarkdownIt("zero", {"html": False, "breaks": True}).enable(RULES)
    parser.add_render_rule("link_open", _link_open)
    return parser


def render_markdown(text):
    """The HTML of a message's Markdown, safe to put in a page."""
    return Markup(_parser().render(text))
