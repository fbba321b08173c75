#!/usr/bin/env python3
"""Synthetic spoken instructions with rule-checkable answers, and their scorer (InSerter).

    python recipes/inserter/instruct.py train --n 20000 --seed 1 --out train.jsonl
    python recipes/inserter/instruct.py benchmark --n-per-family 30 --seed 1 --out bench.jsonl
    python recipes/inserter/instruct.py score --items bench.jsonl --responses responses.jsonl

The small-scale reproduction of "InSerter: Speech Instruction Following with Unsupervised
Interleaved Pre-training" needs instructions a few-million-parameter English LM can learn
on CPU, whose answers a rule can check (IFEval-style, no external judge), and which
espeak-ng can read aloud. Each *family* is one rule ("say apple three times" -> "apple
apple apple"; "what number comes after seven" -> "eight"; ...) with

- a sampler of slot values and the canonical reference answer (the training target, and a
  response its own checker accepts);
- a checker, lenient about surrounding whitespace, punctuation, a trailing period and
  (where the rule does not ask for a case) letter case, strict about what the rule demands
  (the count, the case, list membership and distinctness, no extra words);
- wordings split into TRAIN templates (``training_pairs``; fourteen per family, varied in
  syntax -- questions, imperatives, polite forms, the slot early or late -- so that a small
  LM learns the rule rather than a phrasing) and three TEST templates (``benchmark``): no
  benchmark instruction can be produced by a training template (``template_regex`` checks
  it), and every benchmark wording differs from every training wording in more than
  function words.

One family (``HELD_OUT``, the last letter of a word) is never produced by the training
generator; the benchmark marks its items ``unseen_family=True`` and ``score`` reports it
apart from the seen families.

Instructions are lowercase English words only (numbers as words, no digits or symbols),
at most ``MAX_INSTRUCTION_WORDS`` words, so that they synthesise to a few seconds of
speech. Everything is deterministic given the seed. Prompt framing ("instruction: ...
answer:") belongs to the model code, not here.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELD_OUT = "last_letter"
"""The family the training generator never produces (benchmark only, scored apart)."""

MAX_INSTRUCTION_WORDS = 15
"""Longest instruction, in words (a few seconds of synthesised speech)."""

# ---------------------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------------------

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
                "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
"""Numbers as words; ``NUMBER_WORDS[k]`` is k."""

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
"""Weekdays in order (sunday wraps to monday)."""

WORDS = ("apple", "table", "river", "garden", "window", "pencil", "rabbit", "bottle",
         "carpet", "doctor", "flower", "guitar", "hammer", "island", "jacket", "kitten",
         "lemon", "mirror", "orange", "pocket", "rocket", "silver", "tomato", "turtle",
         "wallet", "yellow", "basket", "candle", "dragon", "forest", "planet", "shadow",
         "spider", "ticket", "winter", "button", "castle", "monkey", "pepper", "summer",
         "cloud", "house", "zebra", "violin", "umbrella", "queen")
"""Common nouns for the word rules (repeat, case, letters, spelling, order, counting)."""

CATEGORIES: dict[str, tuple[str, ...]] = {
    "colours": ("red", "blue", "green", "yellow", "orange", "purple", "pink", "brown",
                "black", "white", "grey"),
    "animals": ("dog", "cat", "cow", "horse", "pig", "sheep", "goat", "duck", "lion",
                "tiger", "bear", "mouse", "rabbit", "fox", "wolf", "monkey", "elephant",
                "zebra", "giraffe", "frog", "bird", "fish", "chicken", "deer", "owl",
                "snake", "donkey", "camel"),
    "fruits": ("apple", "banana", "orange", "pear", "grape", "lemon", "peach", "plum",
               "mango", "cherry", "strawberry", "melon", "kiwi", "lime", "apricot",
               "pineapple", "watermelon", "coconut", "fig", "raspberry"),
    "vegetables": ("carrot", "potato", "onion", "pea", "bean", "cabbage", "lettuce",
                   "pepper", "cucumber", "broccoli", "spinach", "corn", "celery", "garlic",
                   "leek", "pumpkin", "radish", "turnip", "beet", "tomato"),
    "days of the week": DAYS,
}
"""List-rule categories (as spoken in the instruction) and their single-word members."""

_SPELLING_VARIANTS = {"gray": "grey"}
"""Other spellings a list answer may use, mapped to the member they name."""

PLURALS: dict[str, tuple[str, ...]] = {
    "cat": ("cats",), "dog": ("dogs",), "book": ("books",), "tree": ("trees",),
    "house": ("houses",), "box": ("boxes",), "bus": ("buses",), "glass": ("glasses",),
    "church": ("churches",), "dish": ("dishes",), "baby": ("babies",),
    "city": ("cities",), "party": ("parties",), "story": ("stories",),
    "knife": ("knives",), "leaf": ("leaves",), "wolf": ("wolves",), "child": ("children",),
    "mouse": ("mice",), "foot": ("feet",), "tooth": ("teeth",), "man": ("men",),
    "woman": ("women",), "goose": ("geese",), "person": ("people", "persons"),
    "sheep": ("sheep",), "fish": ("fish", "fishes"), "deer": ("deer",), "ox": ("oxen",),
    "potato": ("potatoes",), "tomato": ("tomatoes",), "hero": ("heroes",),
    "half": ("halves",), "wife": ("wives",), "fox": ("foxes",), "key": ("keys",),
}
"""Singular -> accepted plurals, the canonical one first."""

ANTONYM_PAIRS = (
    ("big", "small"), ("hot", "cold"), ("up", "down"), ("fast", "slow"),
    ("happy", "sad"), ("old", "new"), ("old", "young"), ("day", "night"),
    ("open", "closed"), ("light", "dark"), ("light", "heavy"), ("tall", "short"),
    ("long", "short"), ("wet", "dry"), ("full", "empty"), ("early", "late"),
    ("hard", "soft"), ("hard", "easy"), ("good", "bad"), ("rich", "poor"),
    ("loud", "quiet"), ("left", "right"), ("in", "out"), ("black", "white"),
    ("first", "last"), ("strong", "weak"), ("thick", "thin"), ("high", "low"),
    ("near", "far"), ("push", "pull"), ("clean", "dirty"), ("top", "bottom"),
    ("inside", "outside"), ("win", "lose"), ("buy", "sell"), ("true", "false"),
    ("always", "never"), ("before", "after"), ("large", "small"), ("love", "hate"),
)
"""Antonym pairs (symmetric); a word's canonical opposite is its first partner here."""

_GREATER = ("bigger", "larger", "greater")
_LESS = ("smaller", "less")
RELATIONS = _GREATER + _LESS
"""Comparatives of the yes/no number rule."""


def _opposites(word: str) -> tuple[str, ...]:
    """Every accepted opposite of ``word``, the canonical one first."""
    out: list[str] = []
    for a, b in ANTONYM_PAIRS:
        partner = b if a == word else a if b == word else None
        if partner is not None and partner not in out:
            out.append(partner)
    return tuple(out)


ANTONYM_WORDS = tuple(dict.fromkeys(w for pair in ANTONYM_PAIRS for w in pair))
"""Words the opposite rule asks about."""

_SINGULAR_OF = {p: s for s, plurals in PLURALS.items() for p in plurals if p != s}
"""Irregular and regular plurals of the plural table, back to their singular."""

# ---------------------------------------------------------------------------------------
# Response normalisation
# ---------------------------------------------------------------------------------------

_EDGE = " \t\r\n.,!?;:\"'`()[]"
_SEPARATORS = re.compile(r"[\s,;]+")


def _tokens(response: str, separators: re.Pattern = _SEPARATORS) -> list[str]:
    """Words of a response: split on whitespace/commas, each stripped of edge punctuation."""
    if not isinstance(response, str):
        return []
    return [t for t in (t.strip(_EDGE) for t in separators.split(response)) if t]


def _single(response: str) -> str | None:
    """The one word of a one-word response (case kept), else None."""
    tokens = _tokens(response)
    return tokens[0] if len(tokens) == 1 else None


def _is_word(response: str, accepted: Iterable[str]) -> bool:
    """Whether the response is exactly one of the accepted words (any letter case)."""
    word = _single(response)
    return word is not None and word.lower() in set(accepted)


# ---------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------

Slots = dict[str, str]


@dataclass(frozen=True, kw_only=True)
class Family:
    """One rule: its wordings, how to draw an instance, and how to check a response."""

    name: str
    """Family name (the ``family`` of its items)."""
    train_templates: tuple[str, ...]
    """Wordings of the training generator, with ``{slot}`` placeholders."""
    test_templates: tuple[str, ...]
    """Wordings of the benchmark only; none can produce a training wording."""
    draw: Callable[[random.Random], tuple[Slots, str]]
    """Random slot values and the canonical reference answer for them."""
    accepts: Callable[[Slots, str], bool]
    """Whether a response obeys the rule for these slot values."""


def _draw_repeat(rng: random.Random) -> tuple[Slots, str]:
    word, k = rng.choice(WORDS), rng.randint(2, 5)
    return {"word": word, "count": NUMBER_WORDS[k]}, " ".join([word] * k)


def _accept_repeat(s: Slots, response: str) -> bool:
    k = NUMBER_WORDS.index(s["count"])
    return [t.lower() for t in _tokens(response)] == [s["word"]] * k


def _draw_upper(rng: random.Random) -> tuple[Slots, str]:
    word = rng.choice(WORDS)
    return {"word": word}, word.upper()


def _accept_upper(s: Slots, response: str) -> bool:
    return _single(response) == s["word"].upper()  # case-sensitive: the rule is the case


def _draw_next_number(rng: random.Random) -> tuple[Slots, str]:
    k = rng.randint(0, len(NUMBER_WORDS) - 2)
    return {"number": NUMBER_WORDS[k]}, NUMBER_WORDS[k + 1]


def _accept_next_number(s: Slots, response: str) -> bool:
    return _is_word(response, [NUMBER_WORDS[NUMBER_WORDS.index(s["number"]) + 1]])


def _draw_previous_number(rng: random.Random) -> tuple[Slots, str]:
    k = rng.randint(1, len(NUMBER_WORDS) - 1)
    return {"number": NUMBER_WORDS[k]}, NUMBER_WORDS[k - 1]


def _accept_previous_number(s: Slots, response: str) -> bool:
    return _is_word(response, [NUMBER_WORDS[NUMBER_WORDS.index(s["number"]) - 1]])


def _draw_list(rng: random.Random) -> tuple[Slots, str]:
    category, k = rng.choice(tuple(CATEGORIES)), rng.randint(2, 4)
    return ({"count": NUMBER_WORDS[k], "category": category},
            ", ".join(rng.sample(CATEGORIES[category], k)))


def _member(item: str, members: tuple[str, ...]) -> str | None:
    """The category member an answer item names (plurals and variant spellings allowed)."""
    item = _SPELLING_VARIANTS.get(item, item)
    candidates = [item, _SINGULAR_OF.get(item)]
    if item.endswith("ies"):
        candidates.append(item[:-3] + "y")
    if item.endswith("es"):
        candidates.append(item[:-2])
    if item.endswith("s"):
        candidates.append(item[:-1])
    return next((c for c in candidates if c in members), None)


def _accept_list(s: Slots, response: str) -> bool:
    items = [t.lower() for t in _tokens(response) if t.lower() != "and"]
    found = [_member(t, CATEGORIES[s["category"]]) for t in items]
    k = NUMBER_WORDS.index(s["count"])
    return len(found) == k and None not in found and len(set(found)) == k


def _draw_first_letter(rng: random.Random) -> tuple[Slots, str]:
    word = rng.choice(WORDS)
    return {"word": word}, word[0]


def _accept_first_letter(s: Slots, response: str) -> bool:
    return _is_word(response, [s["word"][0]])


def _draw_last_letter(rng: random.Random) -> tuple[Slots, str]:
    word = rng.choice(WORDS)
    return {"word": word}, word[-1]


def _accept_last_letter(s: Slots, response: str) -> bool:
    return _is_word(response, [s["word"][-1]])


def _draw_spell(rng: random.Random) -> tuple[Slots, str]:
    word = rng.choice(WORDS)
    return {"word": word}, " ".join(word)


_LETTER_SEPARATORS = re.compile(r"[\s,;.\-]+")


def _accept_spell(s: Slots, response: str) -> bool:
    letters = [t.lower() for t in _tokens(response, _LETTER_SEPARATORS)]
    return all(len(t) == 1 for t in letters) and "".join(letters) == s["word"]


def _draw_plural(rng: random.Random) -> tuple[Slots, str]:
    word = rng.choice(tuple(PLURALS))
    return {"word": word}, PLURALS[word][0]


def _accept_plural(s: Slots, response: str) -> bool:
    return _is_word(response, PLURALS[s["word"]])


def _draw_opposite(rng: random.Random) -> tuple[Slots, str]:
    word = rng.choice(ANTONYM_WORDS)
    return {"word": word}, _opposites(word)[0]


def _accept_opposite(s: Slots, response: str) -> bool:
    return _is_word(response, _opposites(s["word"]))


def _draw_reverse(rng: random.Random) -> tuple[Slots, str]:
    words = rng.sample(WORDS, rng.randint(2, 3))
    return {"words": " ".join(words)}, " ".join(reversed(words))


def _accept_reverse(s: Slots, response: str) -> bool:
    return [t.lower() for t in _tokens(response)] == s["words"].split()[::-1]


def _draw_count_words(rng: random.Random) -> tuple[Slots, str]:
    k = rng.randint(2, 6)
    return {"phrase": " ".join(rng.sample(WORDS, k))}, NUMBER_WORDS[k]


def _accept_count_words(s: Slots, response: str) -> bool:
    return _is_word(response, [NUMBER_WORDS[len(s["phrase"].split())]])


def _draw_compare(rng: random.Random) -> tuple[Slots, str]:
    a, b = rng.sample(range(1, len(NUMBER_WORDS)), 2)
    relation = rng.choice(RELATIONS)
    return ({"a": NUMBER_WORDS[a], "relation": relation, "b": NUMBER_WORDS[b]},
            _compare_answer(a, relation, b))


def _compare_answer(a: int, relation: str, b: int) -> str:
    return "yes" if (a > b if relation in _GREATER else a < b) else "no"


def _accept_compare(s: Slots, response: str) -> bool:
    a, b = NUMBER_WORDS.index(s["a"]), NUMBER_WORDS.index(s["b"])
    return _is_word(response, [_compare_answer(a, s["relation"], b)])


def _draw_next_day(rng: random.Random) -> tuple[Slots, str]:
    k = rng.randrange(len(DAYS))
    return {"day": DAYS[k]}, DAYS[(k + 1) % len(DAYS)]


def _accept_next_day(s: Slots, response: str) -> bool:
    return _is_word(response, [DAYS[(DAYS.index(s["day"]) + 1) % len(DAYS)]])


def _draw_add(rng: random.Random) -> tuple[Slots, str]:
    a, b = rng.randint(1, 10), rng.randint(1, 10)
    return {"a": NUMBER_WORDS[a], "b": NUMBER_WORDS[b]}, NUMBER_WORDS[a + b]


def _accept_add(s: Slots, response: str) -> bool:
    return _is_word(response, [NUMBER_WORDS[NUMBER_WORDS.index(s["a"])
                                            + NUMBER_WORDS.index(s["b"])]])


FAMILIES: tuple[Family, ...] = (
    Family(name="repeat", draw=_draw_repeat, accepts=_accept_repeat,
           train_templates=("say {word} {count} times",
                            "repeat the word {word} {count} times",
                            "please say {word} {count} times",
                            "can you say {word} {count} times",
                            "say the word {word} exactly {count} times",
                            "repeat {word} {count} times",
                            "i would like you to say {word} {count} times",
                            "{count} times say the word {word}",
                            "could you repeat {word} {count} times for me",
                            "tell me the word {word} {count} times",
                            "let me hear {word} {count} times",
                            "write {word} {count} times in a row",
                            "say {word} {count} times one after another",
                            "i need you to say {word} {count} times"),
           test_templates=("i want to hear {word} {count} times",
                           "give me the word {word} {count} times in a row",
                           "tell me {word} {count} times please")),
    Family(name="uppercase", draw=_draw_upper, accepts=_accept_upper,
           train_templates=("say {word} in capital letters",
                            "write the word {word} in upper case",
                            "give me {word} in capital letters",
                            "please write {word} in all capitals",
                            "write {word} using capital letters",
                            "write {word} in upper case letters",
                            "can you write {word} in capitals",
                            "{word} in capital letters please",
                            "show me {word} in block letters",
                            "type {word} in capitals",
                            "i want the word {word} in upper case",
                            "put the word {word} in capital letters",
                            "give me the word {word} written in capital letters",
                            "write {word} all in capitals"),
           test_templates=("how do you write {word} in block capitals",
                           "type the word {word} all in upper case letters",
                           "i need {word} written in capitals")),
    Family(name="next_number", draw=_draw_next_number, accepts=_accept_next_number,
           train_templates=("what number comes after {number}",
                            "which number follows {number}",
                            "say the number after {number}",
                            "what is the next number after {number}",
                            "tell me the number that comes after {number}",
                            "what number is right after {number}",
                            "give me the number after {number}",
                            "start at {number} and count up one",
                            "tell me what is one more than {number}",
                            "what number comes one after {number}",
                            "can you say the number after {number}",
                            "which number do you say after {number}",
                            "please tell me what number follows {number}",
                            "after {number} what number comes next"),
           test_templates=("name the number right after {number}",
                           "which number is one more than {number}",
                           "if you count up from {number} what comes next")),
    Family(name="previous_number", draw=_draw_previous_number,
           accepts=_accept_previous_number,
           train_templates=("what number comes before {number}",
                            "which number is before {number}",
                            "say the number before {number}",
                            "what is the number just before {number}",
                            "tell me the number that comes before {number}",
                            "what number is right before {number}",
                            "give me the number before {number}",
                            "start at {number} and count down one",
                            "tell me what is one less than {number}",
                            "what number comes one before {number}",
                            "can you say the number before {number}",
                            "which number do you say before {number}",
                            "please tell me what number comes before {number}",
                            "which number comes just before {number}"),
           test_templates=("name the number right before {number}",
                           "which number is one less than {number}",
                           "if you count down from {number} what comes next")),
    Family(name="list_category", draw=_draw_list, accepts=_accept_list,
           train_templates=("name {count} {category}",
                            "list {count} {category}",
                            "tell me {count} {category}",
                            "give me {count} different {category}",
                            "can you name {count} {category}",
                            "please name {count} {category}",
                            "say {count} {category}",
                            "{count} examples of {category} please",
                            "can you list {count} {category} for me",
                            "let me hear {count} {category}",
                            "name any {count} {category}",
                            "could you tell me {count} different {category}",
                            "think of {count} {category} and say them",
                            "i would like a list of {count} {category}"),
           test_templates=("i would like to hear {count} {category}",
                           "what are {count} examples of {category}",
                           "please come up with {count} {category}")),
    Family(name="first_letter", draw=_draw_first_letter, accepts=_accept_first_letter,
           train_templates=("what is the first letter of {word}",
                            "which letter does {word} start with",
                            "say the first letter of the word {word}",
                            "tell me the first letter of {word}",
                            "what letter does the word {word} begin with",
                            "{word} starts with what letter",
                            "give me the first letter of the word {word}",
                            "what letter is at the start of {word}",
                            "can you tell me the first letter of {word}",
                            "which letter comes first in {word}",
                            "the first letter of {word} is what",
                            "name the letter that {word} begins with",
                            "please say the first letter of {word}",
                            "what is the opening letter of the word {word}"),
           test_templates=("the word {word} starts with which letter",
                           "give me the opening letter of {word}",
                           "with what letter does {word} begin")),
    Family(name="spell", draw=_draw_spell, accepts=_accept_spell,
           train_templates=("spell {word}",
                            "spell the word {word}",
                            "how do you spell {word}",
                            "please spell {word} letter by letter",
                            "can you spell {word} for me",
                            "spell out {word}",
                            "say the letters of {word} one by one",
                            "what letters make up {word}",
                            "tell me how to spell {word}",
                            "how is {word} spelled",
                            "give me the spelling of {word}",
                            "spell the word {word} letter by letter",
                            "list the letters of {word} in order",
                            "split the word {word} up into single letters"),
           test_templates=("what are the letters in {word}",
                           "say each letter of {word} one at a time",
                           "break {word} into its letters")),
    Family(name="plural", draw=_draw_plural, accepts=_accept_plural,
           train_templates=("what is the plural of {word}",
                            "say the plural of {word}",
                            "give me the plural form of {word}",
                            "what do you call more than one {word}",
                            "tell me the plural of the word {word}",
                            "what is the plural form of the word {word}",
                            "make {word} into a plural",
                            "{word} in the plural is what",
                            "how do you say more than one {word}",
                            "if you have one {word} what are two called",
                            "can you tell me the plural of {word}",
                            "what is more than one {word} called",
                            "please give the plural of {word}",
                            "the plural of {word} is what"),
           test_templates=("how do you say {word} when there are many",
                           "one {word} two what",
                           "make the word {word} plural")),
    Family(name="opposite", draw=_draw_opposite, accepts=_accept_opposite,
           train_templates=("what is the opposite of {word}",
                            "say the opposite of {word}",
                            "give me the opposite of the word {word}",
                            "what word means the opposite of {word}",
                            "tell me the opposite of {word}",
                            "give me an antonym of {word}",
                            "say a word that is the opposite of {word}",
                            "the opposite of {word} is what",
                            "can you tell me the opposite of {word}",
                            "which word is the opposite of {word}",
                            "what is the opposite word for {word}",
                            "please say the opposite of {word}",
                            "tell me a word meaning the reverse of {word}",
                            "what word is opposite to {word}"),
           test_templates=("name a word that means the reverse of {word}",
                           "what is the antonym of {word}",
                           "{word} is the opposite of what")),
    Family(name="reverse_words", draw=_draw_reverse, accepts=_accept_reverse,
           train_templates=("say {words} in reverse order",
                            "reverse the order of these words {words}",
                            "repeat {words} backwards",
                            "say these words backwards {words}",
                            "put {words} in reverse order",
                            "change the order of {words} so the last comes first",
                            "say {words} starting from the last word",
                            "{words} backwards please",
                            "can you say {words} backwards",
                            "read these words in reverse order {words}",
                            "give me {words} in backwards order",
                            "reverse these words {words}",
                            "flip {words} around",
                            "say the words {words} from the end to the start"),
           test_templates=("turn the order of {words} around",
                           "read {words} from last to first",
                           "flip the order of the words {words}")),
    Family(name="count_words", draw=_draw_count_words, accepts=_accept_count_words,
           train_templates=("how many words are in {phrase}",
                            "count the words in {phrase}",
                            "how many words does {phrase} have",
                            "tell me how many words are in the phrase {phrase}",
                            "count how many words there are in {phrase}",
                            "how many words are there in {phrase}",
                            "{phrase} what is its word count",
                            "say how many words {phrase} has",
                            "in the phrase {phrase} how many words are there",
                            "can you count the words in {phrase}",
                            "the number of words in {phrase} is what",
                            "count the words please {phrase}",
                            "how many words do you hear in {phrase}",
                            "{phrase} has how many words in it"),
           test_templates=("what is the number of words in {phrase}",
                           "give me the word count of {phrase}",
                           "the phrase {phrase} has how many words")),
    Family(name="compare", draw=_draw_compare, accepts=_accept_compare,
           train_templates=("is {a} {relation} than {b}",
                            "tell me if {a} is {relation} than {b}",
                            "answer yes or no is {a} {relation} than {b}",
                            "is the number {a} {relation} than {b}",
                            "say yes or no {a} is {relation} than {b}",
                            "check if it is true that {a} is {relation} than {b}",
                            "i think {a} is {relation} than {b} am i right",
                            "{a} is {relation} than {b} yes or no",
                            "can you tell me if {a} is {relation} than {b}",
                            "would it be right to say {a} is {relation} than {b}",
                            "is the number {a} {relation} than the number {b}",
                            "please answer yes or no is {a} {relation} than {b}",
                            "answer with yes or no {a} is {relation} than {b}",
                            "is {a} really {relation} than {b}"),
           test_templates=("would you say {a} is {relation} than {b}",
                           "yes or no is it true that {a} is {relation} than {b}",
                           "do you think {a} is {relation} than {b}")),
    Family(name="next_day", draw=_draw_next_day, accepts=_accept_next_day,
           train_templates=("what day comes after {day}",
                            "which day follows {day}",
                            "what is the day after {day}",
                            "say the day that comes after {day}",
                            "if today is {day} what day is tomorrow",
                            "tell me the day after {day}",
                            "which day comes after {day}",
                            "what day follows {day}",
                            "today is {day} so what day is tomorrow",
                            "what is the next day after {day}",
                            "after {day} comes which day",
                            "it is {day} today what day is it tomorrow",
                            "can you say the day after {day}",
                            "{day} comes before which day"),
           test_templates=("name the day right after {day}",
                           "{day} is followed by which day",
                           "what day will it be tomorrow if it is {day} today")),
    Family(name="add", draw=_draw_add, accepts=_accept_add,
           train_templates=("what is {a} plus {b}",
                            "add {a} and {b}",
                            "what do you get when you add {a} and {b}",
                            "say the sum of {a} and {b}",
                            "how much is {a} plus {b}",
                            "{a} plus {b} is how much",
                            "add {a} to {b}",
                            "tell me the total when you add {a} and {b}",
                            "can you add {a} and {b} for me",
                            "put {a} and {b} together and say the total",
                            "{a} and {b} added together make what",
                            "how many is {a} plus {b}",
                            "please add {a} and {b}",
                            "what number is {a} plus {b}"),
           test_templates=("if you put {a} and {b} together how many is that",
                           "what is the total of {a} and {b}",
                           "{a} added to {b} makes what")),
    Family(name="last_letter", draw=_draw_last_letter, accepts=_accept_last_letter,
           train_templates=("what is the last letter of {word}",
                            "which letter does {word} end with",
                            "say the last letter of the word {word}",
                            "tell me the last letter of {word}",
                            "what letter does the word {word} finish with",
                            "{word} ends with what letter",
                            "give me the last letter of the word {word}",
                            "what letter is at the end of {word}",
                            "can you tell me the last letter of {word}",
                            "which letter comes last in {word}",
                            "the last letter of {word} is what",
                            "name the letter that {word} ends with",
                            "please say the last letter of {word}",
                            "what is the final letter of the word {word}"),
           test_templates=("the word {word} ends with which letter",
                           "give me the final letter of {word}",
                           "with what letter does {word} end")),
)
"""Every rule family; ``HELD_OUT`` names the one training never sees."""

FAMILY_BY_NAME = {f.name: f for f in FAMILIES}
"""Family name -> Family."""

SEEN_FAMILIES = tuple(f.name for f in FAMILIES if f.name != HELD_OUT)
"""Families the training generator produces."""

# ---------------------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class InstructItem:
    """One instruction with its rule, slot values and canonical reference answer."""

    id: str
    """Unique id (``train-000042``; ``<family>-007`` in the benchmark)."""
    family: str
    """Rule family name (a key of ``FAMILY_BY_NAME``); the checker follows it."""
    instruction: str
    """The instruction: lowercase words only, speakable by a TTS engine."""
    answer: str
    """Canonical reference answer (the training target; passes ``check``)."""
    slots: tuple[tuple[str, str], ...]
    """Slot values the instruction was rendered from, as (name, value) pairs."""
    template: int
    """Index of the wording in the family's train (training) or test (benchmark) templates."""
    unseen_family: bool = False
    """True for the held-out family, which training never produces."""

    @property
    def slot_dict(self) -> dict[str, str]:
        """The slot values as a dict."""
        return dict(self.slots)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (slots as an object)."""
        return {"id": self.id, "family": self.family, "instruction": self.instruction,
                "answer": self.answer, "slots": dict(self.slots), "template": self.template,
                "unseen_family": self.unseen_family}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InstructItem:
        """Inverse of ``to_dict``."""
        return cls(id=str(d["id"]), family=str(d["family"]), instruction=str(d["instruction"]),
                   answer=str(d["answer"]),
                   slots=tuple((str(k), str(v)) for k, v in dict(d["slots"]).items()),
                   template=int(d["template"]), unseen_family=bool(d["unseen_family"]))


def _make(item_id: str, family: Family, template: int, templates: tuple[str, ...],
          rng: random.Random) -> InstructItem:
    slots, answer = family.draw(rng)
    return InstructItem(id=item_id, family=family.name,
                        instruction=templates[template].format(**slots), answer=answer,
                        slots=tuple(slots.items()), template=template,
                        unseen_family=family.name == HELD_OUT)


def training_pairs(n: int, seed: int) -> list[InstructItem]:
    """``n`` training items: seen families (uniformly) in training wordings only.

    Instructions may repeat (some families have few distinct instances); the held-out
    family never appears.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"inserter-train:{seed}")
    items = []
    for i in range(n):
        family = FAMILY_BY_NAME[rng.choice(SEEN_FAMILIES)]
        template = rng.randrange(len(family.train_templates))
        items.append(_make(f"train-{i:06d}", family, template, family.train_templates, rng))
    return items


def benchmark(n_per_family: int, seed: int) -> list[InstructItem]:
    """Up to ``n_per_family`` items per family (held-out one included), test wordings only.

    Instruction texts are distinct across the whole benchmark; a family with fewer
    distinct instances than asked (``next_day``: 7 days x 3 wordings) gives what it has.
    Each family draws from its own seeded stream, so adding a family leaves the others'
    items unchanged.
    """
    if n_per_family < 0:
        raise ValueError(f"n_per_family must be >= 0, got {n_per_family}")
    seen_text: set[str] = set()
    items: list[InstructItem] = []
    for family in FAMILIES:
        rng = random.Random(f"inserter-benchmark:{seed}:{family.name}")
        count = 0
        for _ in range(max(200, 50 * n_per_family)):  # rejection sampling of duplicates
            if count == n_per_family:
                break
            template = rng.randrange(len(family.test_templates))
            item = _make(f"{family.name}-{count:03d}", family, template,
                         family.test_templates, rng)
            if item.instruction not in seen_text:
                seen_text.add(item.instruction)
                items.append(item)
                count += 1
    return items


def check(item: InstructItem, response: str) -> bool:
    """Whether ``response`` obeys the item's rule (see the module docstring for leniency)."""
    family = FAMILY_BY_NAME.get(item.family)
    if family is None:
        raise KeyError(f"item {item.id}: unknown family {item.family!r}")
    return isinstance(response, str) and bool(family.accepts(item.slot_dict, response))


def template_regex(template: str) -> re.Pattern:
    """A regex matching every instruction ``template`` can produce from this vocabulary.

    Each slot matches only values its samplers can draw, so a wording that merely shares
    words with the template (``spell {word}`` vs ``spell the word apple``) does not match.
    """
    def alt(words: Iterable[str]) -> str:
        return "(?:" + "|".join(sorted(set(words), key=len, reverse=True)) + ")"

    single = alt(WORDS + tuple(PLURALS) + ANTONYM_WORDS)
    patterns = {"word": single, "number": alt(NUMBER_WORDS), "count": alt(NUMBER_WORDS),
                "a": alt(NUMBER_WORDS), "b": alt(NUMBER_WORDS), "day": alt(DAYS),
                "relation": alt(RELATIONS), "category": alt(CATEGORIES),
                "words": f"{alt(WORDS)}(?: {alt(WORDS)})*",
                "phrase": f"{alt(WORDS)}(?: {alt(WORDS)})*"}
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(p) if i % 2 == 0 else patterns[p] for i, p in enumerate(parts))
    return re.compile(regex)


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


def _tally(correct: int, total: int) -> dict[str, Any]:
    return {"correct": correct, "total": total,
            "accuracy": correct / total if total else None}


def score(items: Sequence[InstructItem],
          responses: Mapping[str, str] | Sequence[str]) -> dict[str, Any]:
    """Rule-checked accuracy of ``responses`` on ``items``.

    Args:
        items: the benchmark items.
        responses: by item id (a missing id counts as wrong), or one per item in order.

    Returns:
        ``{"seen", "unseen", "all": {"correct", "total", "accuracy"}, "families":
        {name: {"correct", "total", "accuracy", "unseen_family"}}, "missing": int}``;
        ``seen`` covers the trained families, ``unseen`` the held-out one; an accuracy
        over no items is None.
    """
    if not isinstance(responses, Mapping):
        if len(responses) != len(items):
            raise ValueError(f"{len(responses)} responses for {len(items)} items")
        responses = {item.id: r for item, r in zip(items, responses, strict=True)}
    families: dict[str, list[int]] = {}
    groups = {"seen": [0, 0], "unseen": [0, 0], "all": [0, 0]}
    unseen_of: dict[str, bool] = {}
    missing = 0
    for item in items:
        response = responses.get(item.id)
        missing += response is None
        ok = response is not None and check(item, response)
        unseen_of[item.family] = item.unseen_family
        for tally in (families.setdefault(item.family, [0, 0]), groups["all"],
                      groups["unseen" if item.unseen_family else "seen"]):
            tally[0] += ok
            tally[1] += 1
    return {**{k: _tally(*v) for k, v in groups.items()},
            "families": {name: {**_tally(*v), "unseen_family": unseen_of[name]}
                         for name, v in families.items()},
            "missing": missing}


def format_table(scores: Mapping[str, Any]) -> str:
    """The scores of ``score`` as a plain-text table (one row per family, then totals)."""
    def row(name: str, t: Mapping[str, Any]) -> str:
        acc = "-" if t["accuracy"] is None else f"{100 * t['accuracy']:.1f}"
        return f"{name:<22} {t['correct']:>7} {t['total']:>6} {acc:>9}"

    lines = [f"{'family':<22} {'correct':>7} {'total':>6} {'accuracy':>9}", "-" * 47]
    fams = scores["families"]
    for name in sorted(fams, key=lambda n: (fams[n]["unseen_family"], n)):
        lines.append(row(name + (" (unseen)" if fams[name]["unseen_family"] else ""),
                         fams[name]))
    lines += ["-" * 47, row("seen families", scores["seen"]),
              row("unseen family", scores["unseen"]), row("all", scores["all"])]
    if scores["missing"]:
        lines.append(f"({scores['missing']} items had no response and count as wrong)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def write_jsonl(path: str | Path, items: Iterable[InstructItem]) -> Path:
    """Write one item per line (``InstructItem.to_dict``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
    return path


def _read_lines(path: str | Path) -> Iterable[tuple[int, dict]]:
    from speechfm.errors import DataError

    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{n}: expected a JSON object")
            yield n, record


def read_jsonl(path: str | Path) -> list[InstructItem]:
    """Items written by ``write_jsonl``.

    Raises:
        DataError: a line that is not an item (the message gives file and line).
    """
    from speechfm.errors import DataError

    items = []
    for n, record in _read_lines(path):
        try:
            items.append(InstructItem.from_dict(record))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}:{n}: not an instruction item ({e!r})") from None
    return items


def read_responses(path: str | Path) -> dict[str, str]:
    """``{id: response}`` from JSONL lines ``{"id": ..., "response": ...}``.

    Raises:
        DataError: a malformed line or an id given twice.
    """
    from speechfm.errors import DataError

    out: dict[str, str] = {}
    for n, record in _read_lines(path):
        if not isinstance(record.get("id"), str) or not isinstance(record.get("response"), str):
            raise DataError(f"{path}:{n}: expected string fields 'id' and 'response'")
        if record["id"] in out:
            raise DataError(f"{path}:{n}: a second response for {record['id']!r}")
        out[record["id"]] = record["response"]
    return out


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("benchmark", help="write the benchmark (test wordings, all families)")
    b.add_argument("--n-per-family", type=int, default=30)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--out", required=True)
    t = sub.add_parser("train", help="write training pairs (train wordings, seen families)")
    t.add_argument("--n", type=int, default=20000)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--out", required=True)
    s = sub.add_parser("score", help="score responses against benchmark items")
    s.add_argument("--items", required=True, help="benchmark JSONL")
    s.add_argument("--responses", required=True, help='JSONL lines {"id":..., "response":...}')
    s.add_argument("--json", help="also write the scores here as JSON")
    args = p.parse_args(argv)

    if args.command == "benchmark":
        items = benchmark(args.n_per_family, args.seed)
        write_jsonl(args.out, items)
        unseen = sum(i.unseen_family for i in items)
        print(f"wrote {len(items)} benchmark items ({unseen} of the unseen family "
              f"{HELD_OUT!r}) to {args.out}")
    elif args.command == "train":
        items = training_pairs(args.n, args.seed)
        write_jsonl(args.out, items)
        print(f"wrote {len(items)} training pairs to {args.out}")
    else:
        scores = score(read_jsonl(args.items), read_responses(args.responses))
        print(format_table(scores))
        if args.json:
            Path(args.json).write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
