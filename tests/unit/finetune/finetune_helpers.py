"""Helpers of the speechfm.finetune tests: tiny audio data sets and tiny base models (a
module of its own, not conftest.py, whose name several test folders share)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TEXTS = ["ab ba", "abba", "a b", "baab", "ba", "bab", "ab", "aab", "bb a", "a ab", "b ab", "abab"]


def write_wav(path: Path, seconds: float = 0.5, freq: float = 300.0) -> Path:
    import soundfile as sf

    t = np.arange(int(16000 * seconds)) / 16000
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    return path


def make_corpus(root: Path, texts=TEXTS, speakers: int = 6) -> dict[str, Path]:
    """Wavs of ``texts`` (utterance ``u<i>`` by speaker ``spk<i % speakers>``) as a
    headerless TSV, a TSV with a header and a Kaldi dir; returns their paths."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(texts):
        write_wav(root / "wav" / f"u{i:02d}.wav", 0.5 + 0.05 * i, 200 + 60 * i)
        rows.append((f"u{i:02d}", f"spk{i % speakers}", text))
    plain = root / "plain.tsv"
    plain.write_text("".join(f"wav/{u}.wav\t{t}\n" for u, _, t in rows), encoding="utf-8")
    headed = root / "headed.tsv"
    headed.write_text("id\tpath\ttext\tspeaker\n" + "".join(
        f"{u}\twav/{u}.wav\t{t}\t{s}\n" for u, s, t in rows), encoding="utf-8")
    kaldi = root / "kaldi"
    kaldi.mkdir(exist_ok=True)
    (kaldi / "wav.scp").write_text("".join(f"{u} {root / 'wav' / (u + '.wav')}\n" for u, _, _ in rows))
    (kaldi / "text").write_text("".join(f"{u} {t}\n" for u, _, t in rows))
    (kaldi / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s, _ in rows))
    return {"plain": plain, "headed": headed, "kaldi": kaldi, "root": root}


def save_base(path: Path, family: str = "ctc", *, ipa: bool = False, cascaded: bool = False) -> Path:
    """A tiny random-weight model directory with a character (or IPA) tokenizer."""
    import torch

    from speechfm.models.io import save_model_dir

    if ipa:
        from speechfm.text.ipa import IpaTokenizer

        tok = IpaTokenizer(["a", "b", "ə"])
    else:
        from speechfm.text.char import CharTokenizer

        tok = CharTokenizer.train(["ab"])
    torch.manual_seed(0)
    if family == "ctc":
        from speechfm.models.ctc import create_ctc_model, ctc_tiny

        config = ctc_tiny(tok.vocab_size)
        model = create_ctc_model(config)
    else:
        from speechfm.models.conformer.config import ConformerConfig
        from speechfm.models.transducer import create_transducer_model, transducer_tiny

        config = transducer_tiny(tok.vocab_size)
        if cascaded:
            config.encoder.conformer.conv_causal = True
            config.second_encoder = ConformerConfig(
                input_dim=32, front_end="stack", subsampling_factor=1, dim=32, num_layers=1,
                num_heads=4, ffn_dim=64, conv_kernel=5)
        model = create_transducer_model(config)
    return save_model_dir(path, model, config, parts={"tokenizer": tok})
