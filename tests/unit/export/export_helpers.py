"""Helpers of the export tests: random-weight tiny model directories and features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TEXTS_FOR_TOKENS = ("ab ca", "cab", "bc a")


def make_model_dir(root: Path, family: str = "transducer", *, conformer: dict | None = None,
                   encoder: dict | None = None, model: dict | None = None,
                   cascade: bool = False, seed: int = 0) -> Path:
    """A random-weight tiny model directory (weights perturbed well away from their
    initialisation, CMVN statistics far from the identity); ``cascade`` adds a one-block
    full-context second encoder (a cascaded transducer)."""
    from speechfm.config import override_dataclass
    from speechfm.models.io import save_model_dir
    from speechfm.text.char import CharTokenizer

    tok = CharTokenizer.train(TEXTS_FOR_TOKENS)
    if family == "ctc":
        from speechfm.models.ctc import create_ctc_model as create
        from speechfm.models.ctc import ctc_tiny as base
    else:
        from speechfm.models.transducer import create_transducer_model as create
        from speechfm.models.transducer import transducer_tiny as base
    overrides: dict[str, Any] = {"encoder": {"specaugment": False, **(encoder or {}),
                                             "conformer": dict(conformer or {})}}
    overrides.update(model or {})
    cfg = override_dataclass(base(tok.vocab_size), overrides)
    if cascade:
        from speechfm.models.conformer.config import ConformerConfig

        dim = cfg.encoder.conformer.dim
        cfg.second_encoder = ConformerConfig(input_dim=dim, front_end="stack",
                                             subsampling_factor=1, dim=dim, num_layers=1,
                                             num_heads=4, ffn_dim=64, conv_kernel=5, dropout=0.0)
    torch.manual_seed(seed)
    module = create(cfg).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
        if module.encoder.cmvn is not None:
            dim = module.encoder.feature_dim
            module.encoder.set_cmvn(torch.randn(dim) - 8.0, torch.rand(dim) * 4 + 0.5)
    return save_model_dir(root, module, cfg, parts={"tokenizer": tok})


def random_feats(n: int, t: int, dim: int, seed: int = 0) -> torch.Tensor:
    """(n, t, dim) float32 around typical log-mel values."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, t, dim, generator=g) * 2.0 - 8.0
