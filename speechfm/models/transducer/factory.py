"""TransducerModelConfig -> TransducerModel."""

from __future__ import annotations

import torch

from speechfm.features.cmvn import GlobalCMVN
from speechfm.features.fbank import TorchFbank
from speechfm.features.specaug import SpecAugment
from speechfm.models.conformer.factory import create_conformer_encoder
from speechfm.models.transducer.config import TransducerModelConfig
from speechfm.models.transducer.model import Joiner, StatelessPredictor, TransducerModel

__all__ = ["create_transducer_model"]


def create_transducer_model(config: TransducerModelConfig) -> TransducerModel:
    """Validate ``config`` and build the model it describes.

    With ``use_cmvn`` the CMVN buffers start as the identity (mean 0, variance 1); fill
    them with :meth:`TransducerModel.set_cmvn` before training, or load a checkpoint.
    """
    config.validate()
    dim = config.fbank.feature_dim
    cmvn = None
    if config.use_cmvn:
        cmvn = GlobalCMVN(
            torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64)
        )
    specaugment = None
    if config.specaugment:
        specaugment = SpecAugment(
            num_freq_masks=config.specaug_num_freq_masks,
            freq_mask_width=config.specaug_freq_mask_width,
            num_time_masks=config.specaug_num_time_masks,
            time_mask_multiplicity=config.specaug_time_mask_multiplicity,
            time_mask_max_frac=config.specaug_time_mask_max_frac,
            time_warp=config.specaug_time_warp,
        )
    encoder = create_conformer_encoder(config.encoder)
    predictor = StatelessPredictor(
        config.vocab_size,
        config.decoder_dim,
        blank_id=config.blank_id,
        context_size=config.context_size,
    )
    joiner = Joiner(encoder.dim, config.decoder_dim, config.joiner_dim, config.vocab_size)
    return TransducerModel(
        encoder,
        predictor,
        joiner,
        vocab_size=config.vocab_size,
        fbank=TorchFbank(config.fbank),
        cmvn=cmvn,
        specaugment=specaugment,
        subsampling_factor=config.encoder.subsampling_factor,
        blank_id=config.blank_id,
        ctc_head=config.ctc_head,
    )
