"""speechfm.models.language_id: pooling ignores padding, the head learns languages from
pooled statistics (balanced over languages), it round-trips through its file, and
run_by_language puts per-language results back in row order."""

from __future__ import annotations

import pytest
import torch

from speechfm.errors import DataError
from speechfm.models.language_id import (
    LanguageIdHead,
    check_base,
    language_id_accuracy,
    load_language_id,
    pool_statistics,
    run_by_language,
    save_language_id,
    train_language_id,
)


def test_pool_statistics_ignores_padding():
    torch.manual_seed(0)
    enc = torch.randn(2, 7, 3)
    lens = torch.tensor([7, 4])
    pooled = pool_statistics(enc, lens)
    assert pooled.shape == (2, 6)
    torch.testing.assert_close(pooled[1, :3], enc[1, :4].mean(0))
    torch.testing.assert_close(pooled[1, 3:], enc[1, :4].std(0, unbiased=False))
    enc2 = enc.clone()
    enc2[1, 4:] = 1e3  # padding frames must not matter
    torch.testing.assert_close(pool_statistics(enc2, lens), pooled)


def _clusters(n_per_lang: dict[str, int], dim: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = {lang: 3 * torch.randn(2 * dim, generator=torch.Generator().manual_seed(k))
               for k, lang in enumerate(sorted(n_per_lang))}
    return {lang: centres[lang] + torch.randn(n, 2 * dim, generator=g)
            for lang, n in n_per_lang.items()}


def test_head_learns_languages_even_a_rare_one():
    # a 100:4 imbalance: drawing languages uniformly still learns the rare one
    train = _clusters({"en": 100, "es": 100, "ky": 4})
    dev = _clusters({"en": 30, "es": 30, "ky": 30}, seed=1)
    head, info = train_language_id(train, hidden=16, steps=300, seed=0, dev=dev)
    acc = language_id_accuracy(head, dev)
    assert head.languages == ["en", "es", "ky"]
    assert acc["accuracy"] > 0.95 and acc["acc_ky"] > 0.9
    assert info["dev_accuracy"] == pytest.approx(acc["accuracy"])
    assert 100 <= info["step"] <= 300
    # an untrained head is at chance, so the test can fail
    untrained = LanguageIdHead(4, ["en", "es", "ky"], 16)
    assert language_id_accuracy(untrained, dev)["accuracy"] < 0.8


def test_save_load_round_trip_and_refusals(tmp_path):
    head = LanguageIdHead(3, ["ky", "tt"], 8).eval()
    path = save_language_id(head, tmp_path / "lid.safetensors", base_hash="abc", extra={"step": 5})
    loaded, meta = load_language_id(path)
    assert meta["languages"] == ["ky", "tt"] and meta["base_hash"] == "abc" and meta["step"] == 5
    x = torch.randn(4, 6)
    torch.testing.assert_close(loaded.forward_pooled(x), head.forward_pooled(x), rtol=0, atol=0)
    check_base(meta, "abc", path)
    with pytest.raises(DataError, match="another base model"):
        check_base(meta, "xyz", path)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DataError, match="not a speechfm language-ID file"):
        load_language_id(tmp_path / "other.safetensors")
    with pytest.raises(DataError, match="no language-ID file"):
        load_language_id(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="distinct"):
        LanguageIdHead(3, ["ky", "ky"])


def test_run_by_language_keeps_row_order_and_trims_padding():
    feats = torch.arange(4 * 6, dtype=torch.float32).reshape(4, 6, 1)
    lens = torch.tensor([6, 2, 3, 5])
    calls = []

    def fn(f, n, lang):
        calls.append((lang, f.shape[1], n.tolist()))
        return [(lang, int(row[0, 0])) for row in f]

    out = run_by_language(feats, lens, ["tt", "ky", "tt", "ky"], fn)
    assert out == [("tt", 0), ("ky", 6), ("tt", 12), ("ky", 18)]
    assert sorted(calls) == [("ky", 5, [2, 5]), ("tt", 6, [6, 3])]
