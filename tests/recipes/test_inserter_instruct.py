"""recipes/inserter/instruct.py: the synthetic instructions and their rule-based benchmark.

Every family's reference answer passes its own checker; checkers accept harmless
punctuation/case variation and reject wrong content (count, case, category, duplicates,
numbers, extra words); generation is deterministic; benchmark wordings cannot come from a
training template; the held-out family never reaches training; scoring adds up; items
survive a JSONL round trip; the CLI writes, scores and prints a table.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes/inserter/instruct.py"


def _module():
    """recipes/inserter/instruct.py as a module (recipes are scripts, not a package)."""
    key = "_inserter_instruct"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod  # dataclasses look their module up while the class is built
        spec.loader.exec_module(mod)
    return sys.modules[key]


ins = _module()


def _item(family: str, **slots: str):
    """A hand-made item of ``family`` with these slot values (answer left empty)."""
    return ins.InstructItem(id="x", family=family, instruction="", answer="",
                            slots=tuple(slots.items()), template=0,
                            unseen_family=family == ins.HELD_OUT)


def test_families_and_templates():
    names = [f.name for f in ins.FAMILIES]
    assert len(names) == len(set(names)) >= 10
    assert ins.HELD_OUT in names and ins.HELD_OUT not in ins.SEEN_FAMILIES
    assert set(ins.SEEN_FAMILIES) | {ins.HELD_OUT} == set(names)
    for f in ins.FAMILIES:
        # many training wordings per rule (the LM must generalise to unseen ones), three
        # benchmark wordings each
        assert len(f.train_templates) >= 12 and len(f.test_templates) == 3, f.name
        assert len(set(f.train_templates)) == len(f.train_templates), f.name


@pytest.mark.parametrize("family", [f.name for f in ins.FAMILIES])
def test_reference_answers_pass_their_checker(family):
    fam = ins.FAMILY_BY_NAME[family]
    rng = random.Random(0)
    for _ in range(300):
        slots, answer = fam.draw(rng)
        assert fam.accepts(slots, answer), (family, slots, answer)
    items = [i for i in ins.benchmark(20, seed=3) if i.family == family]
    assert items and all(ins.check(i, i.answer) for i in items)
    assert all(ins.check(i, f"  {i.answer}.  ") for i in items)  # trailing period, spaces


CASES = [
    # (family, slots, response, accepted)
    ("repeat", {"word": "apple", "count": "three"}, "apple apple apple", True),
    ("repeat", {"word": "apple", "count": "three"}, "Apple, apple, apple.", True),
    ("repeat", {"word": "apple", "count": "three"}, "apple apple", False),
    ("repeat", {"word": "apple", "count": "three"}, "apple apple apple apple", False),
    ("repeat", {"word": "apple", "count": "three"}, "apple apple pear", False),
    ("repeat", {"word": "apple", "count": "three"}, "sure apple apple apple", False),
    ("uppercase", {"word": "apple"}, "APPLE", True),
    ("uppercase", {"word": "apple"}, " APPLE! ", True),
    ("uppercase", {"word": "apple"}, "apple", False),
    ("uppercase", {"word": "apple"}, "Apple", False),
    ("uppercase", {"word": "apple"}, "APPLE APPLE", False),
    ("uppercase", {"word": "apple"}, "APPLES", False),
    ("next_number", {"number": "seven"}, "eight", True),
    ("next_number", {"number": "seven"}, "Eight.", True),
    ("next_number", {"number": "seven"}, "nine", False),
    ("next_number", {"number": "seven"}, "it is eight", False),
    ("next_number", {"number": "nineteen"}, "twenty", True),
    ("previous_number", {"number": "seven"}, "six", True),
    ("previous_number", {"number": "seven"}, "eight", False),
    ("previous_number", {"number": "one"}, "zero", True),
    ("list_category", {"count": "three", "category": "colours"}, "red, blue, green", True),
    ("list_category", {"count": "three", "category": "colours"}, "Red, blue and gray.", True),
    ("list_category", {"count": "three", "category": "colours"}, "red blue", False),
    ("list_category", {"count": "three", "category": "colours"},
     "red, blue, green, pink", False),
    ("list_category", {"count": "three", "category": "colours"}, "red, red, blue", False),
    ("list_category", {"count": "three", "category": "colours"}, "grey, gray, red", False),
    ("list_category", {"count": "three", "category": "colours"}, "red, blue, apple", False),
    ("list_category", {"count": "two", "category": "animals"}, "dogs and mice", True),
    ("list_category", {"count": "two", "category": "animals"}, "dog, dogs", False),
    ("list_category", {"count": "two", "category": "fruits"}, "cherries, pears", True),
    ("list_category", {"count": "two", "category": "days of the week"},
     "monday, friday", True),
    ("list_category", {"count": "two", "category": "days of the week"},
     "monday, june", False),
    ("first_letter", {"word": "apple"}, "a", True),
    ("first_letter", {"word": "apple"}, "A.", True),
    ("first_letter", {"word": "apple"}, "e", False),
    ("first_letter", {"word": "apple"}, "the letter a", False),
    ("last_letter", {"word": "apple"}, "e", True),
    ("last_letter", {"word": "apple"}, "a", False),
    ("spell", {"word": "apple"}, "a p p l e", True),
    ("spell", {"word": "apple"}, "A-P-P-L-E.", True),
    ("spell", {"word": "apple"}, "a, p, p, l, e", True),
    ("spell", {"word": "apple"}, "apple", False),
    ("spell", {"word": "apple"}, "a p l e", False),
    ("spell", {"word": "apple"}, "ap p l e", False),
    ("plural", {"word": "mouse"}, "mice", True),
    ("plural", {"word": "mouse"}, "Mice.", True),
    ("plural", {"word": "mouse"}, "mouses", False),
    ("plural", {"word": "person"}, "persons", True),
    ("opposite", {"word": "hot"}, "cold", True),
    ("opposite", {"word": "hot"}, "warm", False),
    ("opposite", {"word": "short"}, "long", True),
    ("opposite", {"word": "short"}, "tall", True),
    ("opposite", {"word": "short"}, "tall long", False),
    ("reverse_words", {"words": "cat dog sun"}, "sun dog cat", True),
    ("reverse_words", {"words": "cat dog sun"}, "Sun, dog, cat.", True),
    ("reverse_words", {"words": "cat dog sun"}, "cat dog sun", False),
    ("reverse_words", {"words": "cat dog sun"}, "sun dog", False),
    ("count_words", {"phrase": "apple table river"}, "three", True),
    ("count_words", {"phrase": "apple table river"}, "four", False),
    ("compare", {"a": "nine", "relation": "bigger", "b": "four"}, "yes", True),
    ("compare", {"a": "nine", "relation": "bigger", "b": "four"}, "Yes.", True),
    ("compare", {"a": "nine", "relation": "bigger", "b": "four"}, "no", False),
    ("compare", {"a": "nine", "relation": "bigger", "b": "four"}, "yes no", False),
    ("compare", {"a": "nine", "relation": "less", "b": "four"}, "no", True),
    ("compare", {"a": "two", "relation": "smaller", "b": "twelve"}, "yes", True),
    ("next_day", {"day": "sunday"}, "monday", True),
    ("next_day", {"day": "sunday"}, "Monday.", True),
    ("next_day", {"day": "sunday"}, "saturday", False),
    ("add", {"a": "three", "b": "four"}, "seven", True),
    ("add", {"a": "three", "b": "four"}, "eight", False),
    ("add", {"a": "ten", "b": "ten"}, "twenty", True),
]


@pytest.mark.parametrize("family,slots,response,accepted", CASES)
def test_checker_hand_written(family, slots, response, accepted):
    assert ins.check(_item(family, **slots), response) is accepted


def test_every_family_has_hand_written_cases():
    covered = {c[0] for c in CASES}
    assert covered == {f.name for f in ins.FAMILIES}
    for family in covered:
        results = {c[3] for c in CASES if c[0] == family}
        assert results == {True, False}, family


def test_check_refuses_non_strings_and_unknown_families():
    item = _item("next_number", number="seven")
    assert ins.check(item, None) is False
    assert ins.check(item, "") is False
    with pytest.raises(KeyError, match="nope"):
        ins.check(_item("nope"), "x")


def test_determinism():
    assert ins.training_pairs(300, seed=1) == ins.training_pairs(300, seed=1)
    assert ins.training_pairs(300, seed=1) != ins.training_pairs(300, seed=2)
    assert ins.benchmark(10, seed=1) == ins.benchmark(10, seed=1)
    assert ins.benchmark(10, seed=1) != ins.benchmark(10, seed=2)
    # a prefix of a longer run is the shorter run
    assert ins.training_pairs(500, seed=4)[:300] == ins.training_pairs(300, seed=4)


def test_instructions_are_speakable_and_short():
    items = ins.training_pairs(3000, seed=5) + ins.benchmark(30, seed=5)
    for item in items:
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", item.instruction), item.instruction
        assert len(item.instruction.split()) <= ins.MAX_INSTRUCTION_WORDS, item.instruction
    for f in ins.FAMILIES:
        for t in f.train_templates + f.test_templates:
            assert re.fullmatch(r"[a-z {}]+", t), t


def _skeleton(template: str) -> str:
    return re.sub(r"\{\w+\}", "{}", template)


def test_train_and_test_templates_are_disjoint():
    train = [t for f in ins.FAMILIES for t in f.train_templates]
    test = [t for f in ins.FAMILIES for t in f.test_templates]
    skeletons = [_skeleton(t) for t in train + test]
    assert len(set(skeletons)) == len(skeletons)  # no wording is used twice anywhere

    bench = ins.benchmark(30, seed=7)
    train_items = ins.training_pairs(3000, seed=7)
    train_res = [ins.template_regex(t) for t in train]
    test_res = [ins.template_regex(t) for t in test]
    # each item matches its own template (the regexes are not vacuous) ...
    for item in bench[:100]:
        own = ins.FAMILY_BY_NAME[item.family].test_templates[item.template]
        assert ins.template_regex(own).fullmatch(item.instruction)
    # ... but no benchmark instruction can be produced by any training template
    for item in bench:
        assert not any(r.fullmatch(item.instruction) for r in train_res), item.instruction
    # and no training instruction by any test template
    for text in {i.instruction for i in train_items}:
        assert not any(r.fullmatch(text) for r in test_res), text
    # the same holds rendering every training template with each benchmark item's slots
    for item in bench:
        for t in train:
            if set(re.findall(r"\{(\w+)\}", t)) <= set(item.slot_dict):
                assert t.format(**item.slot_dict) != item.instruction


FILLER = {"a", "an", "the", "of", "to", "in", "for", "with", "please", "me", "you", "can",
          "could", "i", "it", "is", "are", "do", "does", "that", "this", "these", "and",
          "so", "just"}
"""Function and politeness words: a benchmark wording must differ in more than these."""


def test_benchmark_wordings_differ_in_more_than_filler_words():
    def core(template):
        return tuple(w for w in _skeleton(template).split() if w not in FILLER)

    train = {core(t): t for f in ins.FAMILIES for t in f.train_templates}
    for f in ins.FAMILIES:
        for t in f.test_templates:
            assert core(t) not in train, (t, train.get(core(t)))


def test_every_training_wording_is_used():
    items = ins.training_pairs(20000, seed=1)
    used = {(i.family, i.template) for i in items}
    assert used == {(f.name, k) for f in ins.FAMILIES if f.name != ins.HELD_OUT
                    for k in range(len(f.train_templates))}


def test_held_out_family_only_in_benchmark():
    train = ins.training_pairs(5000, seed=11)
    assert ins.HELD_OUT not in {i.family for i in train}
    assert {i.family for i in train} == set(ins.SEEN_FAMILIES)
    assert not any(i.unseen_family for i in train)
    bench = ins.benchmark(30, seed=11)
    unseen = [i for i in bench if i.unseen_family]
    assert unseen and {i.family for i in unseen} == {ins.HELD_OUT}
    assert {i.family for i in bench} == {f.name for f in ins.FAMILIES}


def test_benchmark_ids_and_texts_unique():
    bench = ins.benchmark(30, seed=1)
    assert len({i.id for i in bench}) == len(bench)
    assert len({i.instruction for i in bench}) == len(bench)
    counts = {f.name: sum(i.family == f.name for i in bench) for f in ins.FAMILIES}
    assert counts["next_day"] == 7 * 3  # all there is: seven days x three wordings
    assert all(n == 30 for name, n in counts.items() if name != "next_day")


def test_score_arithmetic():
    items = [
        ins.InstructItem(id="a", family="next_number", instruction="", answer="eight",
                         slots=(("number", "seven"),), template=0),
        ins.InstructItem(id="b", family="next_number", instruction="", answer="two",
                         slots=(("number", "one"),), template=0),
        ins.InstructItem(id="c", family="uppercase", instruction="", answer="APPLE",
                         slots=(("word", "apple"),), template=0),
        ins.InstructItem(id="d", family="last_letter", instruction="", answer="e",
                         slots=(("word", "apple"),), template=0, unseen_family=True),
        ins.InstructItem(id="e", family="last_letter", instruction="", answer="r",
                         slots=(("word", "river"),), template=0, unseen_family=True),
    ]
    s = ins.score(items, {"a": "eight", "b": "three", "c": "APPLE.", "d": "e"})
    assert s["seen"] == {"correct": 2, "total": 3, "accuracy": pytest.approx(2 / 3)}
    assert s["unseen"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    assert s["all"] == {"correct": 3, "total": 5, "accuracy": 0.6}
    assert s["missing"] == 1
    assert s["families"]["next_number"] == {"correct": 1, "total": 2, "accuracy": 0.5,
                                            "unseen_family": False}
    assert s["families"]["last_letter"]["unseen_family"] is True
    # responses in item order give the same result
    assert ins.score(items, ["eight", "three", "APPLE.", "e", "x"])["all"]["correct"] == 3
    with pytest.raises(ValueError):
        ins.score(items, ["eight"])
    empty = ins.score(items[:3], [i.answer for i in items[:3]])
    assert empty["unseen"]["accuracy"] is None and empty["seen"]["accuracy"] == 1.0
    table = ins.format_table(s)
    assert "last_letter (unseen)" in table and "66.7" in table


def test_jsonl_round_trip(tmp_path):
    items = ins.benchmark(3, seed=2) + ins.training_pairs(5, seed=2)
    path = ins.write_jsonl(tmp_path / "sub" / "items.jsonl", items)
    assert ins.read_jsonl(path) == items
    first = json.loads(path.read_text().splitlines()[0])
    assert isinstance(first["slots"], dict) and set(first) >= {"id", "instruction", "answer"}

    from speechfm.errors import DataError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        ins.read_jsonl(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "response": "x"}\n{"id": "a", "response": "y"}\n')
    with pytest.raises(DataError, match="second response"):
        ins.read_responses(dup)


def test_cli(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*args):
        res = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                             text=True, env=env, timeout=120)
        assert res.returncode == 0, res.stderr
        return res.stdout

    bench, train = tmp_path / "bench.jsonl", tmp_path / "train.jsonl"
    assert "benchmark items" in run("benchmark", "--n-per-family", "4", "--seed", "1",
                                    "--out", str(bench))
    assert "200 training pairs" in run("train", "--n", "200", "--seed", "1",
                                       "--out", str(train))
    items = ins.read_jsonl(bench)
    assert items == ins.benchmark(4, seed=1)
    assert ins.read_jsonl(train) == ins.training_pairs(200, seed=1)
    # answer the seen families right and the unseen one wrong
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(
        json.dumps({"id": i.id, "response": "zzz" if i.unseen_family else i.answer}) + "\n"
        for i in items))
    out = run("score", "--items", str(bench), "--responses", str(responses),
              "--json", str(tmp_path / "scores.json"))
    lines = out.splitlines()
    assert lines[0].split() == ["family", "correct", "total", "accuracy"]
    assert re.search(r"^seen families\s+\d+\s+\d+\s+100\.0$", out, re.M)
    assert re.search(r"^unseen family\s+0\s+4\s+0\.0$", out, re.M)
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["unseen"]["accuracy"] == 0.0 and scores["seen"]["accuracy"] == 1.0
