"""Generated text for the offline language-model demo: a seeded toy language, and its tokenizer.

Two tasks (``TASKS``), over one small vocabulary of names, objects, colours and a few verbs:

- ``stories``: documents of short sentences. People are introduced with their things and the
  things' colours (``tom has a red ball . he also has a blue cup .``), meet each other, and their
  things are referred back to later (``the ball of tom is red .``, ``anna likes her green kite .``).
  Predicting the next word needs agreement (``he``/``she``, ``his``/``her`` follow the name's
  gender) and back-reference (the colour of a thing was stated earlier in the document: copying
  over a distance, which attention layers do).
- ``qa``: the post-training analogue, in another format: facts stated as in a story, then
  questions about them with their answers (``question : what colour is the ball of tom ? answer :
  red .``, ``question : who has the blue cup ? answer : tom .``).

Within a document every thing belongs to one person, so every question has one right answer.
Words, punctuation included, are separated by single spaces: the tokenizer (``write_tokenizer``)
is word-level over ``vocabulary()``. Generation uses Python's ``random.Random(seed)`` only, so a
task, seed and count give the same documents on every machine. Torch-free.
"""

from __future__ import annotations

import random
from pathlib import Path

TASKS = ("stories", "qa")

MALE_NAMES = ("tom", "ben", "max", "sam", "leo", "jack")
FEMALE_NAMES = ("anna", "lisa", "mia", "eva", "emma", "lucy")
OBJECTS = ("ball", "cup", "hat", "box", "kite", "book", "car", "bag")
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "pink", "brown")
VERBS = ("meets", "sees", "helps")
FUNCTION_WORDS = ("the", "a", "of", "is", "has", "also", "likes", "he", "she", "his", "her")
QA_WORDS = ("question", "answer", "what", "colour", "who", ":", "?")
PUNCTUATION = (".",)

# The tokenizer's special tokens, before the words: the end of a document, and unknown words.
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (EOS_TOKEN, UNK_TOKEN)


def vocabulary() -> list[str]:
    """Every word both tasks can produce, in a fixed order (the tokenizer's ids follow it)."""
    return [*FUNCTION_WORDS, *VERBS, *QA_WORDS, *PUNCTUATION, *MALE_NAMES, *FEMALE_NAMES, *OBJECTS, *COLOURS]


def _subject(name: str) -> str:
    return "he" if name in MALE_NAMES else "she"


def _possessive(name: str) -> str:
    return "his" if name in MALE_NAMES else "her"


def _facts(rng: random.Random) -> list[tuple[str, str, str]]:
    """(person, thing, colour) of one document: 2-4 people with 1-2 things each; no thing twice."""
    people = rng.sample(MALE_NAMES + FEMALE_NAMES, rng.randint(2, 4))
    things = iter(rng.sample(OBJECTS, len(OBJECTS)))
    return [(person, next(things), rng.choice(COLOURS)) for person in people for _ in range(rng.randint(1, 2))]


def _introductions(facts: list[tuple[str, str, str]]) -> list[str]:
    """``tom has a red ball .``; a person's second thing in the next sentence, by pronoun."""
    sentences, previous = [], None
    for person, thing, colour in facts:
        subject = f"{_subject(person)} also" if person == previous else person
        sentences.append(f"{subject} has a {colour} {thing} .")
        previous = person
    return sentences


def _story(rng: random.Random) -> str:
    facts = _facts(rng)
    sentences = _introductions(facts)
    people = list(dict.fromkeys(person for person, _, _ in facts))
    for _ in range(rng.randint(1, 2)):
        one, other = rng.sample(people, 2)
        sentences.append(f"{one} {rng.choice(VERBS)} {other} .")
    for person, thing, colour in rng.sample(facts, rng.randint(2, len(facts))):
        if rng.random() < 0.5:
            sentences.append(f"the {thing} of {person} is {colour} .")
        else:
            sentences.append(f"{person} likes {_possessive(person)} {colour} {thing} .")
    return " ".join(sentences)


def _questions_and_answers(rng: random.Random) -> str:
    facts = _facts(rng)
    sentences = _introductions(facts)
    for person, thing, colour in rng.sample(facts, rng.randint(1, min(3, len(facts)))):
        if rng.random() < 0.5:
            sentences.append(f"question : what colour is the {thing} of {person} ? answer : {colour} .")
        else:
            sentences.append(f"question : who has the {colour} {thing} ? answer : {person} .")
    return " ".join(sentences)


_GENERATORS = {"stories": _story, "qa": _questions_and_answers}


def documents(task: str, seed: int, n: int) -> list[str]:
    """``n`` documents of ``task`` (one of ``TASKS``), drawn by ``random.Random(seed)``."""
    if task not in _GENERATORS:
        raise ValueError(f"unknown generated-text task {task!r}; the tasks are {list(TASKS)}")
    rng = random.Random(seed)
    return [_GENERATORS[task](rng) for _ in range(n)]


def write_text(path: Path, task: str, seed: int, n: int) -> None:
    """The documents as a .txt file, separated by blank lines (what ``data.kind: text`` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(documents(task, seed, n)) + "\n", encoding="utf-8")


def write_tokenizer(directory: Path) -> None:
    """A word-level tokenizer over ``SPECIAL_TOKENS`` then ``vocabulary()`` (ids in that order),
    splitting on whitespace, saved by transformers' ``save_pretrained``: ``tokenizer.json`` and
    ``tokenizer_config.json`` (its ``eos_token`` ends each document in the token windows)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    ids = {word: index for index, word in enumerate([*SPECIAL_TOKENS, *vocabulary()])}
    tokenizer = Tokenizer(WordLevel(ids, unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, unk_token=UNK_TOKEN)
    fast.save_pretrained(str(directory))
