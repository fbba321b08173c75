"""The tiny corpus and run settings behind ``data/reference_losses.json``.

The reference losses are the first 50 per-step training losses of a tiny CTC and a tiny
transducer run made with the ASR trainer that the recipe platform replaced (commit
a3e0af1, ``speechfm.asr.train.train_asr``); ``test_reference_losses.py`` checks that
``recipes/ctc`` and ``recipes/transducer`` reproduce them exactly (one torch thread).
The settings exercise what could drift: SpecAugment and dropout (global RNG), volume
perturbation, speed perturbation (hashed per cut), the Noam and cosine schedules,
the pruned loss' warm-up and the auxiliary CTC head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TEXTS = {"en": ["ab ba", "abba", "a b", "baab"], "fr": ["ba", "bab", "ab", "aab"]}

_COMMON = dict(max_duration=3.0, num_workers=0, max_steps=50, save_every=25, valid_every=25,
               keep_last=2, average_last=2, average_period=5, progress=False, log_every=5,
               seed=7, num_threads=1, average="last")

REFERENCE_RUNS = {
    "ctc": {
        "old": dict(_COMMON, model_size="ctc_tiny", speed_perturb=True, volume_perturb_db=6.0,
                    model={"specaugment": True, "encoder": {"dropout": 0.1}},
                    optimizer={"lr": 2e-3}, scheduler={"kind": "noam", "warmup_steps": 10}),
    },
    "transducer": {
        "old": dict(_COMMON, model_size="transducer_tiny",
                    model={"encoder": {"conv_causal": True, "dropout": 0.1}, "ctc_head": True},
                    optimizer={"lr": 3e-3},
                    scheduler={"kind": "cosine", "warmup_steps": 5, "min_scale": 0.1},
                    transducer_loss={"warm_steps": 20, "ctc_scale": 0.2}),
    },
}


def make_tone_corpus(root: Path, texts: dict[str, list[str]] | None = None) -> tuple[Path, Path]:
    """Write the corpus (tones + a little noise per utterance; ``texts`` by language,
    default :data:`TEXTS`) and a char tokenizer under ``root``; returns (cuts manifest,
    tokenizer dir). Deterministic."""
    import soundfile as sf
    from lhotse import CutSet, Recording

    from speechfm.data.manifest import make_cut
    from speechfm.text.char import CharTokenizer

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    texts_by_lang = TEXTS if texts is None else texts
    rng = np.random.default_rng(0)
    cuts = []
    for lang, lang_texts in texts_by_lang.items():
        for i, text in enumerate(lang_texts):
            utt = f"{lang}_{i}"
            t = np.arange(int(16000 * (0.6 + 0.1 * i))) / 16000
            audio = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(root / f"{utt}.wav", audio.astype(np.float32), 16000)
            rec = Recording.from_file(root / f"{utt}.wav", recording_id=utt)
            cuts.append(make_cut(utt, rec, text=text, language=lang, speaker=f"spk{i}"))
    path = root / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    tok_dir = root / "lang_char"
    CharTokenizer.train([t for ts in texts_by_lang.values() for t in ts]).save(tok_dir)
    return path, tok_dir
