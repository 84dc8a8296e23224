"""``strict_yaml.load``: PyYAML's reading, except that a repeated key is an error."""

from __future__ import annotations

import pytest
import yaml

from edgemem import strict_yaml


def test_reads_like_safe_load() -> None:
    text = "a: 1\nb: {c: [1, 2], d: null}\nlist:\n  - {x: 1}\n  - {x: 2}\n"
    assert strict_yaml.load(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' (line 3)"),
        ("top:\n  x: 1\n  y: 2\n  x: 1\n", "duplicate key 'x' (line 4)"),  # nested, even with the same value
        ("- {k: 1, k: 2}\n", "duplicate key 'k' (line 1)"),  # flow mapping inside a list
    ],
)
def test_a_repeated_key_is_an_error(text: str, message: str) -> None:
    assert yaml.safe_load(text) is not None  # PyYAML alone keeps the last value silently
    with pytest.raises(yaml.YAMLError, match=message.replace("(", r"\(").replace(")", r"\)")):
        strict_yaml.load(text)


def test_unsafe_tags_are_still_refused() -> None:
    with pytest.raises(yaml.YAMLError):
        strict_yaml.load("!!python/object/apply:os.system ['true']\n")
