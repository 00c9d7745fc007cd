"""``fleetcall.llm.base``'s token estimate: the fast word count is ``len(text.split())`` exactly."""

from __future__ import annotations

import random

from fleetcall.llm.base import count_tokens, count_words


def test_word_count_splits_on_exactly_what_str_split_splits_on() -> None:
    for code in range(0x110000):
        text = f"a{chr(code)}b{chr(code)}"
        assert count_words(text) == len(text.split()), hex(code)


def test_word_count_equals_split_on_random_text() -> None:
    rng = random.Random(12)
    alphabet = " \t\n\r\x0b\x0c\x1c\x1fab.\x00\x7f\xa0\u2003é"
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(14)))
        assert count_words(text) == len(text.split()), repr(text)
    for text in ("", " ", "x", "  lead", "trail  ", "one two  three\tfour\n", "a" * 999):
        assert count_words(text) == len(text.split()), repr(text)


def test_token_estimate_is_words_or_a_quarter_of_the_characters() -> None:
    assert count_tokens("") == 0
    assert count_tokens("a b c d e") == 5            # words win
    assert count_tokens("abcdefghijkl") == 3         # characters / 4 win
    assert count_tokens("x" * 4001) == 1001


def test_token_estimate_is_its_definition_on_random_text() -> None:
    # count_tokens skips the word count when the separators alone bound it: the bound must
    # never change the answer (texts ending or not in separators, runs of them, non-ASCII)
    rng = random.Random(13)
    for alphabet in ("ab ", "abc \t\n", " \t\n\r\x0b\x0c\x1c\x1fab.\x00\x7f", "ab é\u2003"):
        for _ in range(10_000):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(20)))
            assert count_tokens(text) == max(len(text.split()), (len(text) + 3) // 4), repr(text)
    for text in ("abc " * 50, "abc " * 50 + "d", " abc" * 50, "ab " * 50, "a  " * 50):
        assert count_tokens(text) == max(len(text.split()), (len(text) + 3) // 4), repr(text)
