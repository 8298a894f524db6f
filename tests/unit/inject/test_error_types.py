"""The error types an LLM rewrite applied are read off its difference to the ground truth."""

from __future__ import annotations

import pytest

from bpo_data.inject.error_types import applied_error_types

CASES = [
    ("The bus is red with a white stripe.", "The bus is yellow with a white stripe.", ["attribute"]),
    ("Three", "Four", ["count"]),
    ("There are 2 dogs on the grass.", "There are 3 dogs on the grass.", ["count"]),
    ("A man rides a bicycle down the street.", "A man rides a motorcycle down the street.", ["object"]),
    ("No, there is no dog in the image.", "Yes, there is a dog in the image.", ["object"]),
    ("The cup is to the left of the laptop.", "The cup is to the right of the laptop.", ["position"]),
    ("The sign says OPEN.", "The sign says CLOSED.", ["text_number"]),
    ("Sunrise Bakery", "Sunset Bakery", ["text_number"]),
    ("The pizza costs $12.99 today.", "The pizza costs $14.49 today.", ["text_number"]),
    ("A small cat sleeps on the bed.", "A large cat sleeps on the bed.", ["attribute"]),
    ("The weather looks calm and pleasant.", "The weather looks stormy and grim.", ["other"]),
    (
        "Two red cars are parked on the left.",
        "Three blue cars are parked on the right.",
        ["attribute", "count", "position"],
    ),
]


@pytest.mark.parametrize(("original", "rewrite", "expected"), CASES)
def test_each_kind_of_change_is_named(original, rewrite, expected):
    assert applied_error_types(original, rewrite) == expected


def test_an_unchanged_answer_applied_nothing_and_a_first_capital_is_no_name():
    assert applied_error_types("A dog runs.", "A dog runs.") == []
    # "Yes"/"It" open sentences: their capitals say nothing about sign text
    assert applied_error_types("It is a dog.", "Yes, it is a cat.") == ["object"]
