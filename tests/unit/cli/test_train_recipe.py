"""speechfm train: the recipe comes from --recipe or the config's model_size prefix."""

from __future__ import annotations

import pytest

from speechfm.cli.train import recipe_script
from speechfm.errors import SpeechfmError


@pytest.mark.parametrize(("size", "recipe"), [("ctc_small", "ctc"), ("ast_tiny", "ast_adapters"),
                                              ("classifier_kws", "ast_adapters"),
                                              ("transducer_tiny", "transducer"),
                                              ("speech_lm_small", "inserter"),
                                              ("speech_lm_tiny", "inserter")])
def test_recipe_from_model_size(tmp_path, size, recipe):
    conf = tmp_path / "c.yaml"
    conf.write_text(f"model_size: {size}\n")
    assert recipe_script(str(conf), None, []).parent.name == recipe
    conf.write_text("model_size: ast_tiny\n")  # an override picks the size too
    assert recipe_script(str(conf), None, [f"model_size={size}"]).parent.name == recipe


def test_no_size_or_unknown_recipe(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("max_steps: 3\n")
    with pytest.raises(SpeechfmError, match="no model_size"):
        recipe_script(str(conf), None, [])
    with pytest.raises(SpeechfmError, match="no recipe 'nosuch'"):
        recipe_script(str(conf), "nosuch", [])
