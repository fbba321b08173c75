"""recipes/w2v_bert end to end on real speech (60 FSDD clips of the training speakers,
transcripts unused): both self-supervised tasks learn, the codebook stays in use, the
export embeds through speechfm.load and starts a CTC fine-tuning through init_from, and
a killed run resumes exactly."""

from __future__ import annotations

import pytest
import torch

import speechfm
from speechfm.config import config_from_dict
from speechfm.errors import SpeechfmError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fsdd_cuts(shared_data, tmp_path_factory):
    from lhotse import CutSet, Recording

    from speechfm.data.corpora.fsdd import fsdd_items
    from speechfm.data.manifest import make_cut

    items = [i for i in fsdd_items(shared_data / "fsdd") if i.split == "train"][:300:5]
    cuts = CutSet.from_cuts(
        make_cut(i.id, Recording.from_file(i.path, recording_id=i.id), text=i.text,
                 language="en", speaker=i.speaker) for i in items).resample(16000)
    path = tmp_path_factory.mktemp("fsdd_ssl") / "cuts.jsonl.gz"
    cuts.to_file(path)
    return path


def _config(recipe, cuts, exp, **kw):
    settings = dict(train_cuts=str(cuts), dev_cuts=str(cuts), model_size="w2v_bert_tiny",
                    max_duration=8, num_workers=0, save_every=150, valid_every=150,
                    log_every=1, progress=False, num_threads=1, exp_dir=str(exp), seed=1,
                    optimizer={"lr": 3e-3}, scheduler={"kind": "constant", "warmup_steps": 0},
                    model={"quantizer": {"temperature_decay": 0.98}}, max_steps=300)
    settings.update(kw)
    return config_from_dict(recipe("w2v_bert").W2vBertConfig, settings)


@pytest.mark.slow
def test_pretraining_learns_exports_embeds_and_fine_tunes(recipe, fsdd_cuts, tmp_path):
    from speechfm.train import read_scalars

    result = recipe("w2v_bert").train(_config(recipe, fsdd_cuts, tmp_path / "ssl"))
    curves = {k: [v for _, v in vals] for k, vals in read_scalars(tmp_path / "ssl").items()}

    def early_late(tag):
        values = curves[tag]
        n = len(values) // 4
        return sum(values[:n]) / n, sum(values[-n:]) / n

    for tag in ("train/contrastive_loss", "train/mlm_loss"):
        early, late = early_late(tag)
        assert late < 0.8 * early, (tag, early, late)
    for tag in ("train/contrastive_acc", "train/mlm_acc"):
        early, late = early_late(tag)
        assert late > early + 0.1, (tag, early, late)
    # 16 codes: the codebook stays in use (no collapse)
    assert min(curves["train/code_perplexity"][-20:]) > 4.0
    assert {"valid/contrastive_acc", "valid/mlm_acc"} <= set(curves)
    assert result.summary["family"] == "w2v_bert"

    model = speechfm.load(result.final_dir)
    layers = model.embed(torch.zeros(16000).numpy() + 0.01, sample_rate=16000, layers=(1, -1))
    assert len(layers) == 2 and layers[0].shape[1] == model.module.encoder.dim
    with pytest.raises(SpeechfmError, match="no ASR head"):
        model.transcribe("any.wav")  # refused before any audio is read

    # fine-tuning: a CTC model starts from the pretrained encoder (init_from)
    ctc = recipe("ctc")
    tok_dir = tmp_path / "lang_char"
    from speechfm.text.char import CharTokenizer

    CharTokenizer.train(["zero one two three four five six seven eight nine"]).save(tok_dir)
    pretrained = result.final_dir
    config = config_from_dict(ctc.CtcConfig, dict(
        train_cuts=str(fsdd_cuts), tokenizer=str(tok_dir), model_size="ctc_tiny",
        encoder_from_init=True, max_steps=2, save_every=2, num_workers=0, max_duration=8,
        progress=False, num_threads=1, exp_dir=str(tmp_path / "ft"), init_from=str(pretrained),
        optimizer={"lr": 1e-12}, average="last"))
    final = ctc.train(config).final_dir
    from safetensors.torch import load_file

    start, tuned = load_file(str(pretrained / "model.safetensors")), load_file(
        str(final / "model.safetensors"))
    block = "encoder.conformer.blocks.0.attn.q_proj.weight"
    torch.testing.assert_close(tuned[block], start[block], rtol=0, atol=1e-8)

    # and the transducer recipe's head on the same pretrained encoder
    transducer = recipe("transducer")
    config = config_from_dict(transducer.TransducerConfig, dict(
        train_cuts=str(fsdd_cuts), tokenizer=str(tok_dir), model_size="transducer_tiny",
        encoder_from_init=True, max_steps=2, save_every=2, num_workers=0, max_duration=8,
        progress=False, num_threads=1, exp_dir=str(tmp_path / "ft_rnnt"),
        init_from=str(pretrained), optimizer={"lr": 1e-12}, average="last"))
    final = transducer.train(config).final_dir
    tuned = load_file(str(final / "model.safetensors"))
    torch.testing.assert_close(tuned[block], start[block], rtol=0, atol=1e-8)
    assert isinstance(speechfm.load(final).transcribe(torch.zeros(8000).numpy(),
                                                      sample_rate=16000), str)


@pytest.mark.slow
def test_a_killed_pretraining_run_resumes_exactly(recipe, fsdd_cuts, tmp_path):
    from safetensors.torch import load_file

    module = recipe("w2v_bert")
    kw = dict(dev_cuts=None, save_every=3, average="last")
    module.train(_config(recipe, fsdd_cuts, tmp_path / "straight", max_steps=6, **kw))
    module.train(_config(recipe, fsdd_cuts, tmp_path / "split", max_steps=3, **kw))
    module.train(_config(recipe, fsdd_cuts, tmp_path / "split", max_steps=6, **kw), resume=True)
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "step-000006" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
