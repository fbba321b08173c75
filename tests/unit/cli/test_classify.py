"""speechfm classify and speechfm.decode.classification: accuracy, confusion, predictions,
labels by field, and the errors a user meets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    """A tiny random classifier directory and a 6-clip manifest with text/speaker labels."""
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    from speechfm.models.ast import ast_mini, create_ast_model
    from speechfm.models.io import save_model_dir

    root = tmp_path_factory.mktemp("clf")
    torch.manual_seed(0)
    model = create_ast_model(ast_mini(num_classes=3))
    save_model_dir(root / "model", model, ast_mini(num_classes=3),
                   parts={"labels": ["hi", "lo", "mid"]})
    cuts = []
    rng = np.random.default_rng(0)
    for i in range(6):
        label = ["hi", "lo", "mid"][i % 3]
        path = root / f"c{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
        rec = Recording.from_file(path, recording_id=f"c{i}")
        sup = SupervisionSegment(id=f"c{i}", recording_id=f"c{i}", start=0.0,
                                 duration=rec.duration, text=label, speaker=f"s{i % 2}")
        cuts.append(MonoCut(id=f"c{i}", start=0.0, duration=rec.duration, channel=0,
                            recording=rec, supervisions=[sup]))
    CutSet.from_cuts(cuts).to_file(root / "cuts.jsonl.gz")
    return root


def test_classify_manifest_writes_consistent_outputs(clf, tmp_path, capsys):
    from speechfm.cli import main

    assert main([
        "classify", str(clf / "model"), "--cuts", str(clf / "cuts.jsonl.gz"),
        "--out-dir", str(tmp_path / "out")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert printed["accuracy"] == pytest.approx(results["accuracy"])
    rows = (tmp_path / "out" / "predictions.tsv").read_text().strip().splitlines()[1:]
    assert len(rows) == 6 == results["num_utts"]
    right = sum(r.split("\t")[1] == r.split("\t")[2] for r in rows)
    assert results["num_correct"] == right
    assert results["accuracy"] == pytest.approx(100.0 * right / 6)
    confusion = (tmp_path / "out" / "confusion.tsv").read_text().strip().splitlines()
    assert sum(int(v) for line in confusion[1:] for v in line.split("\t")[1:]) == 6


def test_classify_files_prints_top_k(clf, capsys):
    from speechfm.cli import main

    assert main(["classify", str(clf / "model"), str(clf / "c0.wav"), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(clf / "c0.wav")) and len(line.split("\t")) == 3


def test_speaker_labels_unknown_to_the_model_are_named(clf, tmp_path, capsys):
    from speechfm.cli import main

    rc = main(["classify", str(clf / "model"), "--cuts", str(clf / "cuts.jsonl.gz"),
               "--out-dir", str(tmp_path / "o"), "--label-field", "speaker"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "label 's0' is not one of the model's 3 classes" in err and "cut c0" in err


def test_evaluate_classifier_counts(clf):
    from speechfm.decode.classification import evaluate_classifier
    from speechfm.models.io import load_model_dir
    from speechfm.train.runner import load_cuts

    loaded = load_model_dir(clf / "model")
    cuts = load_cuts(clf / "cuts.jsonl.gz").to_eager()
    res = evaluate_classifier(loaded.module, cuts, ["hi", "lo", "mid"])
    assert res["num_utts"] == 6 and 0.0 <= res["accuracy"] <= 100.0
    assert res["loss"] > 0
    with pytest.raises(ValueError, match="label_field"):
        evaluate_classifier(loaded.module, cuts, ["hi"], label_field="lang")
