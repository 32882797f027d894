"""Word count: split every page in parallel, then count all the words.

Run it::

    dandelion run examples/wordcount.py -i pages=@README.md -i pages=@docs/index.rst
    python examples/wordcount.py
"""

import dandelion as dd


@dd.compute
def split(page: bytes) -> list[str]:
    """The words of one page."""
    return page.decode(errors="replace").split()


@dd.compute
def count(words: list[str]) -> int:
    """How many words there are."""
    return len(words)


@dd.composition
def word_count(pages: list[bytes]) -> int:
    """Fan out over pages (one ``split`` per page), fan in to one ``count``."""
    words = split(dd.each(pages))
    total = count(words)
    return total


if __name__ == "__main__":
    print(dd.run(word_count, pages=[b"the quick brown fox", b"jumps over", b"the lazy dog"]))
