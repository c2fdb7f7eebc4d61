"""Noun-phrase extraction for captions: the nouns that the spatial grounding loss prompts.

  extract_nouns("a man rides a brown horse on the beach")  ->  ["man", "brown horse", "beach"]

Two backends, chosen by `backend`:

- "spacy": the `noun_chunks` of spaCy's `en_core_web_sm` model, lower-cased, with leading
  determiners, possessives and quantifiers stripped and pronoun chunks dropped.
- "rules": a deterministic fallback that needs nothing installed (below).
- "auto" (the default): spaCy when both spaCy and `en_core_web_sm` import, otherwise rules.

The rule-based fallback, exactly. The caption is lower-cased and split into words (letters and
digits, with inner hyphens or apostrophes) and punctuation. Walking the words in order, a
phrase grows word by word and ends at:
  * punctuation, or any word of the fixed lists _STOP_WORDS (determiners, quantifiers and
    number words, pronouns, prepositions, conjunctions, auxiliaries, direction adverbs, a few
    common verbs in base form); the word itself is dropped;
  * a verb-looking word, once the phrase holds a word that is not in _ADJECTIVES: a word ending
    in "ing" or "ed" (longer than 4 letters), or in "s" but not "ss", "us" or "is" (the third
    person singular: "a man *rides*"). While the phrase holds only adjectives the word is its
    head noun instead ("brown *horses*"), unless it directly follows a pronoun or an
    auxiliary ("it *turns* red", "dogs are *playing*"), where it is dropped as a verb.
Phrases made only of adjectives ("turns *red*") are dropped, repeats keep their first
occurrence, and at most `max_nouns` phrases are returned. It suits short, present-tense
descriptive captions (WebVid, VideoCC, ShapesWorld); it misses nouns after a base-form verb
not in the lists ("they *film* a dog" gives "film" nothing, but "dog" still comes out).
"""

from __future__ import annotations

import functools
import re
from typing import List, Optional

BACKENDS = ("auto", "spacy", "rules")
SPACY_MODEL = "en_core_web_sm"

_DETERMINERS = """a an the this that these those some any each every another either neither
    no all both half such what which whose my your his her its our their one two three four
    five six seven eight nine ten several many much few more most other""".split()
_PRONOUNS = """i me you he him she it we us they them myself yourself himself herself itself
    ourselves themselves someone somebody something everyone everybody everything nobody
    nothing anyone anything who whom there here""".split()
_PREPOSITIONS = """on in at with to from of into onto over under above below behind beside
    besides between among around through across along near by for about against toward
    towards up down off out inside outside upon within without during before after until
    while like than via""".split()
_CONJUNCTIONS = "and or but then as when where if so because yet nor also".split()
_AUXILIARIES = """is are was were be been being am has have had do does did can could will
    would shall should may might must not n't isn't aren't doesn't don't""".split()
_ADVERBS = """left right away back again around together slowly quickly very too just still
    now first next finally forward backward backwards upward downward upwards downwards""".split()
# Base forms of verbs frequent in video captions that are seldom nouns; "-s" forms are caught
# by the suffix rule.
_VERBS = """run walk sit stand talk ride move grow shrink appear disappear change turn jump
    eat hold make go come use put take throw catch drive fall sing climb read write play
    stir pour wear open close push pull carry get give watch look cook dance swim""".split()
_STOP_WORDS = frozenset(
  _DETERMINERS + _PRONOUNS + _PREPOSITIONS + _CONJUNCTIONS + _AUXILIARIES + _ADVERBS + _VERBS
)
# Colour and size words: a phrase made only of these has not reached its head noun yet.
_ADJECTIVES = frozenset(
  """red blue green yellow purple orange black white brown grey gray pink
    golden silver dark light big small large little tiny huge young old tall short long new
    wooden empty""".split()
)
_SUBJECT_OR_AUX = frozenset(_PRONOUNS + _AUXILIARIES)
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*|[^\sa-z0-9]")


def _verb_like(word: str) -> bool:
  if len(word) > 4 and (word.endswith("ing") or word.endswith("ed")):
    return True
  return len(word) > 2 and word.endswith("s") and not word.endswith(("ss", "us", "is"))


def _rule_phrases(caption: str) -> List[str]:
  phrases, current = [], []

  def flush():
    if current and not all(w in _ADJECTIVES for w in current):
      phrases.append(" ".join(current))
    current.clear()

  previous = ""
  for word in _TOKEN_RE.findall(caption.lower()):
    if not word[0].isalnum() or word in _STOP_WORDS:
      flush()
    elif _verb_like(word) and (
      any(w not in _ADJECTIVES for w in current) or (not current and previous in _SUBJECT_OR_AUX)
    ):
      flush()
    else:
      current.append(word)
    previous = word
  flush()
  return phrases


@functools.lru_cache(maxsize=1)
def _spacy_model():
  """The loaded spaCy pipeline, or None when spaCy or its English model is missing."""
  try:
    import spacy  # pylint: disable=g-import-not-at-top

    return spacy.load(SPACY_MODEL, disable=["ner", "lemmatizer"])
  except (ImportError, OSError):  # OSError: spaCy is there but the model is not
    return None


def _spacy_phrases(nlp, caption: str) -> List[str]:
  phrases = []
  for chunk in nlp(caption).noun_chunks:
    if chunk.root.pos_ == "PRON":
      continue
    tokens = list(chunk)
    while tokens and (tokens[0].pos_ in ("DET", "NUM", "PRON") or tokens[0].dep_ == "poss"):
      tokens = tokens[1:]
    text = " ".join(t.text for t in tokens).lower().strip()
    if text:
      phrases.append(text)
  return phrases


def spacy_available() -> bool:
  """True when spaCy and its English model load (what backend='auto' then uses)."""
  return _spacy_model() is not None


def extract_nouns(
  caption: str, max_nouns: Optional[int] = None, backend: str = "auto"
) -> List[str]:
  """Distinct noun phrases of `caption`, lower-case, in order of first mention.

  Args:
    caption: any text; empty text gives [].
    max_nouns: keep only the first `max_nouns` phrases (None: all).
    backend: "auto", "spacy" or "rules" (see the module docstring).
  Raises:
    ImportError: backend="spacy" but spaCy or en_core_web_sm is not installed.
  """
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
  nlp = None if backend == "rules" else _spacy_model()
  if backend == "spacy" and nlp is None:
    raise ImportError(
      f"backend='spacy' needs spaCy and its {SPACY_MODEL} model: pip install "
      f"spacy && python -m spacy download {SPACY_MODEL}"
    )
  phrases = _spacy_phrases(nlp, caption) if nlp is not None else _rule_phrases(caption)
  distinct = list(dict.fromkeys(phrases))
  return distinct if max_nouns is None else distinct[:max_nouns]
