"""Tests for data_pipelines/nouns.py: the rule-based fallback on hand-written captions."""

from __future__ import annotations

import pytest

from data_pipelines import nouns


@pytest.mark.parametrize(
  "caption, expected",
  [
    ("a man rides a brown horse on the beach", ["man", "brown horse", "beach"]),
    # ShapesWorld templates: colour + shape phrases, pronoun subjects and colour changes dropped.
    ("a red circle moves left, then a blue square grows", ["red circle", "blue square"]),
    (
      "a small green triangle appears while the large yellow star shrinks",
      ["small green triangle", "large yellow star"],
    ),
    ("a purple square turns red, then it moves up", ["purple square"]),
    # Auxiliary + participle, prepositions, plural subjects.
    ("Two dogs are playing with a ball in the park.", ["dogs", "ball", "park"]),
    ("the brown horses run along the river", ["brown horses", "river"]),
    ("a man playing guitar", ["man", "guitar"]),
    ("A chef slices tomatoes and onions in a kitchen", ["chef", "tomatoes", "onions", "kitchen"]),
    ("people walking on a busy street at night", ["people", "busy street", "night"]),
    ("he walks two dogs", ["dogs"]),
    # Repeats keep the first mention; empty text has no nouns.
    ("a cat sees a cat", ["cat"]),
    ("", []),
  ],
)
def test_rules_backend(caption, expected):
  assert nouns.extract_nouns(caption, backend="rules") == expected


def test_max_nouns_keeps_the_first():
  caption = "a chef slices tomatoes and onions in a kitchen"
  assert nouns.extract_nouns(caption, max_nouns=2, backend="rules") == ["chef", "tomatoes"]


def test_unknown_backend_is_an_error():
  with pytest.raises(ValueError, match="backend"):
    nouns.extract_nouns("a dog", backend="nltk")


def test_spacy_backend_without_spacy_says_how_to_install():
  if nouns.spacy_available():
    assert "dog" in nouns.extract_nouns("a brown dog runs", backend="spacy")[0]
  else:
    with pytest.raises(ImportError, match="en_core_web_sm"):
      nouns.extract_nouns("a dog", backend="spacy")
    # auto falls back to the rules when spaCy is missing.
    assert nouns.extract_nouns("a man rides a horse") == ["man", "horse"]
