"""Key validation."""

from __future__ import annotations

import pytest

from simrecorder import InvalidKeyError
from simrecorder._keys import MAX_KEY_LENGTH, parent_keys, validate_key


@pytest.mark.parametrize(
    "key", ["a", "a/b/c", "neurons/v", "x y", "ünï/cødé", "a.b", "..a", "a..b"]
)
def test_valid_keys(key):
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("", "empty"),
        ("a//b", "empty part"),
        ("a/", "empty part"),
        ("/etc/x", "absolute"),
        ("..", "'..'"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a/./b", "'.'"),
        ("nul\x00byte", "control"),
        ("new\nline", "control"),
        ("x" * (MAX_KEY_LENGTH + 1), "characters"),
        (b"bytes", "str"),
        (None, "str"),
        (7, "str"),
    ],
)
def test_invalid_keys_name_the_problem(key, words):
    with pytest.raises(InvalidKeyError, match=words):
        validate_key(key)


def test_longest_key_is_accepted():
    key = "k" * MAX_KEY_LENGTH
    assert validate_key(key) == key


def test_parent_keys():
    assert parent_keys("a") == []
    assert parent_keys("a/b/c") == ["a", "a/b"]
