"""The recipes reproduce, exactly, the per-step losses of the trainer they replaced.

``data/reference_losses.json`` holds the first 50 per-step training losses of a tiny CTC
and a tiny transducer run recorded with ``speechfm.asr.train.train_asr`` before the recipe
platform (commit a3e0af1); ``reference_corpus.py`` has the corpus and the settings. The
same runs through ``recipes/ctc`` and ``recipes/transducer`` (the model overrides written
in the new config layout) must give the same 50 numbers, bit for bit: same weights
initialisation, data order, SpecAugment/dropout/volume draws, loss and update.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from reference_corpus import REFERENCE_RUNS  # noqa: E402

REFERENCE = json.loads((Path(__file__).parent / "data" / "reference_losses.json").read_text())

# The same runs, with the model overrides in the layout of the shared front end.
NEW_MODEL = {
    "ctc": {"encoder": {"specaugment": True, "conformer": {"dropout": 0.1}}},
    "transducer": {"encoder": {"conformer": {"conv_causal": True, "dropout": 0.1}},
                   "ctc_head": True},
}
RECIPE_CONFIG = {"ctc": "CtcConfig", "transducer": "TransducerConfig"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ctc", "transducer"])
def test_recipe_reproduces_the_old_trainer_losses(name, recipe, tone_corpus, tmp_path, monkeypatch):
    import speechfm.train.loop as loop
    from speechfm.config import config_from_dict

    module = recipe(name)
    cuts, tok = tone_corpus
    settings = dict(REFERENCE_RUNS[name]["old"], model=NEW_MODEL[name])
    config = config_from_dict(getattr(module, RECIPE_CONFIG[name]), dict(
        settings, train_cuts=str(cuts), dev_cuts=str(cuts), tokenizer=str(tok),
        exp_dir=str(tmp_path / name)))
    losses = []
    original = loop.train_step

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        losses.append(result.loss)
        return result

    monkeypatch.setattr(loop, "train_step", recording)
    threads = torch.get_num_threads()
    try:
        module.train(config)
    finally:
        torch.set_num_threads(threads)
    assert losses == REFERENCE["runs"][name]["losses"]
