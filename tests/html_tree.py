"""Served HTML as a tree of elements, so that tests compare what a page says, not how its markup is
written: text comes back unescaped, and `text` folds white space the way a browser shows it."""

from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
        "wbr"}


class Element:
    """One element: its tag, its attributes and its children (elements and strings)."""

    def __init__(self, tag, attrs):
        self.tag = tag
        self.attrs = {name: "" if value is None else value for name, value in attrs}
        self.children = []

    def __repr__(self):
        return f"<{self.tag} {self.attrs}>"

    def __getitem__(self, name):
        return self.attrs[name]

    def get(self, name, default=None):
        return self.attrs.get(name, default)

    @property
    def classes(self):
        return set(self.attrs.get("class", "").split())

    @property
    def elements(self):
        """The child elements, without the text between them."""
        return [child for child in self.children if isinstance(child, Element)]

    @property
    def raw_text(self):
        """All the text inside, as written, entities decoded."""
        return "".join(child if isinstance(child, str) else child.raw_text for child in self.children)

    @property
    def text(self):
        """The text inside with white space folded, as a browser shows it."""
        return " ".join(self.raw_text.split())

    def iter(self):
        """This element and every element inside it, in document order."""
        yield self
        for child in self.elements:
            yield from child.iter()

    def find_all(self, tag=None, class_=None, **attrs):
        """Every element inside (this one included) with that tag, class and attribute values."""
        return [element for element in self.iter()
                if (tag is None or element.tag == tag)
                and (class_ is None or class_ in element.classes)
                and all(element.get(name) == value for name, value in attrs.items())]

    def find(self, tag=None, class_=None, **attrs):
        """The first such element, or None."""
        found = self.find_all(tag, class_, **attrs)
        return found[0] if found else None


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", [])
        self.open = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, attrs)
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_startendtag(self, tag, attrs):
        self.open[-1].children.append(Element(tag, attrs))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        tags = [element.tag for element in self.open]
        assert tag in tags[1:], f"</{tag}> closes nothing that is open ({tags})"
        while self.open.pop().tag != tag:
            pass

    def handle_data(self, data):
        self.open[-1].children.append(data)


def parse(html):
    """The document or fragment `html` as a tree; its root holds the top-level elements."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def text_of(html):
    """What a document or fragment says, white space folded."""
    return parse(html).text
