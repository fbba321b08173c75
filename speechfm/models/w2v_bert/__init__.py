"""w2v-BERT pretraining (contrastive + masked prediction) on the shared speech encoder:
config with named sizes, factory and module."""

from speechfm.models.w2v_bert.config import (
    W2vBertModelConfig,
    w2v_bert_300m,
    w2v_bert_600m,
    w2v_bert_small,
    w2v_bert_tiny,
    w2v_bert_xl,
    w2v_bert_xxl,
)
from speechfm.models.w2v_bert.model import W2vBertModel

__all__ = [
    "W2vBertModel",
    "W2vBertModelConfig",
    "create_w2v_bert_model",
    "w2v_bert_300m",
    "w2v_bert_600m",
    "w2v_bert_small",
    "w2v_bert_tiny",
    "w2v_bert_xl",
    "w2v_bert_xxl",
]


def create_w2v_bert_model(config: W2vBertModelConfig) -> W2vBertModel:
    """Validate ``config`` and build the pretraining model it describes."""
    from speechfm.models.conformer.speech_encoder import create_speech_encoder
    from speechfm.nn.quantizer import GumbelVectorQuantizer

    config.validate()
    encoder = create_speech_encoder(config.encoder)
    q = config.quantizer
    quantizer = GumbelVectorQuantizer(
        encoder.dim, num_groups=q.num_groups, num_entries=q.num_entries, code_dim=q.code_dim,
        start_temperature=q.start_temperature, end_temperature=q.end_temperature,
        temperature_decay=q.temperature_decay)
    m = config.masking
    return W2vBertModel(
        encoder, quantizer, num_contrastive_layers=config.num_contrastive_layers,
        final_dim=config.final_dim, mask_prob=m.mask_prob, mask_span=m.span,
        min_spans=m.min_spans, num_negatives=config.num_negatives,
        contrastive_temperature=config.contrastive_temperature,
        num_target_codebooks=config.num_target_codebooks,
        contrastive_weight=config.contrastive_weight, mlm_weight=config.mlm_weight,
        diversity_weight=config.diversity_weight,
        feature_penalty_weight=config.feature_penalty_weight)
