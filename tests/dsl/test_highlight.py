"""The Pygments lexers highlight both notations and are found by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Error, Keyword, Name

from dandelion.dsl.highlight import DandelionLexer, DclLexer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.glob("*.dd")) + sorted(EXAMPLES.glob("*.dcl")) + \
    [Path(__file__).with_name("log_count.dd")]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_examples_highlight_without_error_tokens(path: Path) -> None:
    lexer = DandelionLexer() if path.suffix == ".dd" else DclLexer()
    tokens = list(lexer.get_tokens(path.read_text()))
    assert not [t for t in tokens if t[0] is Error]
    assert "".join(v for _, v in tokens) == path.read_text()


def test_keywords_and_functions_get_their_token_types() -> None:
    tokens = list(DandelionLexer().get_tokens("x = for each v in s :\n    f(v)\n"))
    kinds = {v: t for t, v in tokens}
    assert kinds["for"] in Keyword and kinds["each"] in Keyword
    assert kinds["f"] is Name.Function


def test_lexers_are_registered_as_pygments_plugins() -> None:
    assert isinstance(get_lexer_by_name("dd"), DandelionLexer)
    assert isinstance(get_lexer_by_name("dcl"), DclLexer)
    assert isinstance(get_lexer_for_filename("a.dd"), DandelionLexer)
