"""ShapesWorld language: the fixed vocabularies and the caption, noun and QA templates.

Everything here is a pure function of a sampled scene (see world.py), so captions can be
generated without rendering a single pixel. The vocabularies are fixed tuples: action class
ids are indices into ACTIONS (written to `actions.txt`) and QA answers are entries of ANSWERS
(written to `answers.txt`).

Templates:
  segment caption  "the red circle moves left"
  clip caption     "a red circle moves left while a blue square grows, then the red circle
                   shrinks", "an orange star appears, then it turns white": first mention
                   "a/an X", later ones "the X", or "it" right after a single-actor phase of
                   the same object; ", then " joins phases, " while " concurrent actions
  nouns            distinct actor names in order of mention, at most MAX_NOUNS
  questions        "how many objects are there?", "what colour is the object that <verb>?",
                   "what shape is the object that <verb>?", "what does the <noun> do?"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Sequence, Tuple

if TYPE_CHECKING:  # world.py imports this module for the vocabularies.
  from data_pipelines.shapesworld import world

COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
SHAPES = ("circle", "square", "triangle", "star", "diamond")
# Class id = index. "change colour" turns the object into another palette colour.
ACTIONS = (
  "move left",
  "move right",
  "move up",
  "move down",
  "grow",
  "shrink",
  "appear",
  "disappear",
  "change colour",
)
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six")
NOTHING = "nothing"
ANSWERS = COLOURS + SHAPES + ACTIONS + (NOTHING,) + NUMBER_WORDS
# The S-ViLM grounding loss uses K = 2 nouns per caption (SPEC section 1).
MAX_NOUNS = 2
NOUN_PROMPT = "a video of a {noun}"

_VERBS = {
  "move left": "moves left",
  "move right": "moves right",
  "move up": "moves up",
  "move down": "moves down",
  "grow": "grows",
  "shrink": "shrinks",
  "appear": "appears",
  "disappear": "disappears",
}


def object_name(colour: str, shape: str) -> str:
  """The noun phrase of an object, e.g. "red circle" (also its `object_names` entry)."""
  return f"{colour} {shape}"


def verb_phrase(action: str, new_colour: str | None = None) -> str:
  """Third-person verb phrase: "moves left", "grows", "turns blue" (change colour)."""
  if action == "change colour":
    if new_colour is None:
      raise ValueError("change colour needs the new colour")
    return f"turns {new_colour}"
  return _VERBS[action]


def _segment_verb(segment: world.Segment) -> str:
  return verb_phrase(segment.action, segment.colour)


def indefinite(name: str) -> str:
  """ "a red circle", "an orange star"."""
  return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _name(scene: world.Scene, obj: int) -> str:
  return object_name(scene.objects[obj].colour, scene.objects[obj].shape)


def segment_captions(scene: world.Scene) -> List[str]:
  """One stand-alone caption per segment: "the red circle moves left"."""
  return [f"the {_name(scene, s.obj)} {_segment_verb(s)}" for s in scene.segments]


def clip_caption(scene: world.Scene) -> Tuple[str, List[str], List[int]]:
  """The clip caption with its nouns.

  Returns (caption, nouns, noun_object): nouns are the distinct names of the acting objects
  in order of first mention (at most MAX_NOUNS) and noun_object[k] is the object index of
  nouns[k]. Objects keep their initial name in every mention: a colour change is the last
  thing an object does, so no later phrase has to name it by its new colour.
  """
  parts = []
  mentioned: List[int] = []
  previous = None
  for segment in scene.segments:
    name = _name(scene, segment.obj)
    concurrent = previous is not None and segment.start == previous.start
    if previous is None:
      subject = indefinite(name)
    elif (
      not concurrent
      and segment.obj == previous.obj
      and sum(s.start == previous.start for s in scene.segments) == 1
    ):
      subject = "it"  # only after a single-actor phase, where "it" is unambiguous
    elif segment.obj in mentioned:
      subject = f"the {name}"
    else:
      subject = indefinite(name)
    if segment.obj not in mentioned:
      mentioned.append(segment.obj)
    joiner = "" if previous is None else (" while " if concurrent else ", then ")
    parts.append(f"{joiner}{subject} {_segment_verb(segment)}")
    previous = segment
  noun_object = mentioned[:MAX_NOUNS]
  return "".join(parts), [_name(scene, o) for o in noun_object], noun_object


# The type of each question template, by its opening words: the video_qa task reports its
# accuracy per type (svilm/evaluators/video_qa.py).
QUESTION_TYPES = (
  ("how many ", "count"),
  ("what colour ", "colour"),
  ("what shape ", "shape"),
  ("what does ", "action"),
)


def qa_pairs(scene: world.Scene) -> List[Tuple[str, str]]:
  """Question-answer pairs whose answer is unambiguous; every answer is in ANSWERS.

  Order: the count question; then for each distinct segment verb done by exactly one object
  (in segment order) its colour and shape questions (colour skipped for "turns <colour>",
  whose answer would depend on the frame); then "what does the <name> do?" for each object
  that acts at most once (answer: its action class name, or "nothing").
  """
  num_objects = len(scene.objects)
  pairs = [("how many objects are there?", NUMBER_WORDS[num_objects - 1])]
  actors_by_verb = {}
  for segment in scene.segments:
    actors_by_verb.setdefault(_segment_verb(segment), []).append(segment)
  for verb, segments in actors_by_verb.items():
    if len({s.obj for s in segments}) != 1:
      continue
    obj = scene.objects[segments[0].obj]
    if segments[0].action != "change colour":
      pairs.append((f"what colour is the object that {verb}?", obj.colour))
    pairs.append((f"what shape is the object that {verb}?", obj.shape))
  for index in range(num_objects):
    actions = [s.action for s in scene.segments if s.obj == index]
    if len(actions) <= 1:
      answer = actions[0] if actions else NOTHING
      pairs.append((f"what does the {_name(scene, index)} do?", answer))
  return pairs


def tokenizer_texts(
  caption: str, segment_caps: Sequence[str], nouns: Sequence[str], qa: Sequence[Tuple[str, str]]
) -> List[str]:
  """The sentences of one video that the tokenizer is trained on (prompted nouns included)."""
  texts = [caption, *segment_caps, *nouns, *(NOUN_PROMPT.format(noun=n) for n in nouns)]
  for question, answer in qa:
    texts += [question, answer]
  return texts
