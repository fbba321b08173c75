"""Configuration of w2v-BERT pretraining (Chung et al. 2021) on the shared speech encoder,
and its named sizes.

The encoder's first ``num_contrastive_layers`` Conformer blocks are the contrastive module
(wav2vec 2.0's task against a Gumbel-softmax quantizer of the unmasked front-end output),
the remaining blocks the masked-prediction (MLM) module, which predicts the quantizer's
code ids at the masked frames. The w2v-BERT 2.0 sizes stack the 80-dim fbank frames (10 ms
apart) by 2 into 160-dim frames 20 ms apart and project them, as facebook/w2v-bert-2.0
does; the paper's sizes subsample by 4 with 2-D convolutions.

Named sizes, checked against the sources (not guessed):

- ``w2v_bert_600m`` / ``w2v_bert_300m``: fairseq2's ``w2vbert`` architectures (the
  w2v-BERT 2.0 layout of facebook/w2v-bert-2.0): 24 (12) Conformer layers of width 1024,
  16 heads, FFN 4096, depthwise kernel 31, relative_key positions, stacked fbank (stride
  2, 160-dim), the last 16 (8) layers masked prediction, so 8 (4) contrastive; final_dim
  768, quantized_dim 1024, one codebook of 1024 entries, temperature 2.0 -> 0.1
  (decay 0.999995), 100 distractors, logit temperature 0.1, masks of 10 frames with
  probability 0.65 and at least 2 spans.
- ``w2v_bert_xl`` / ``w2v_bert_xxl``: the paper's Table 1: 0.6B / 1.0B parameters,
  12 contrastive + 12 (30) masked-prediction Conformer layers, width 1024, 8 heads,
  convolution kernel 5, codebook 1024 x 1024; 2-D convolution subsampling by 4 of 80-dim
  log-mel features (the paper's feature encoder); FFN 4096 (the paper's Conformer-XL).
- ``w2v_bert_small`` / ``w2v_bert_tiny``: CPU scale for this project's recipes and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from speechfm.models.conformer.config import ConformerConfig
from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig
from speechfm.nn.masking import MaskingConfig
from speechfm.nn.quantizer import QuantizerConfig

__all__ = [
    "W2vBertModelConfig",
    "w2v_bert_300m",
    "w2v_bert_600m",
    "w2v_bert_small",
    "w2v_bert_tiny",
    "w2v_bert_xl",
    "w2v_bert_xxl",
]


@dataclass(kw_only=True)
class W2vBertModelConfig:
    """Everything needed to build a :class:`~speechfm.models.w2v_bert.W2vBertModel`."""

    family: ClassVar[str] = "w2v_bert"

    encoder: SpeechEncoderConfig = field(default_factory=SpeechEncoderConfig)
    """The shared speech front end (SpecAugment off: masking is the augmentation)."""
    num_contrastive_layers: int = 8
    """Conformer blocks of the contrastive module; the rest are the MLM module."""
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """Span masking of the front-end output (span 10, probability 0.65, >= 2 spans)."""
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    """Gumbel-softmax quantizer of the unmasked front-end output (groups x entries)."""
    final_dim: int = 768
    """Width the context vectors and quantized targets are projected to for the contrastive task."""
    num_negatives: int = 100
    """Distractors per masked frame, sampled from masked frames of the same utterance."""
    contrastive_temperature: float = 0.1
    """Temperature of the cosine-similarity logits."""
    num_target_codebooks: int = 1
    """Codebook groups whose ids the MLM module predicts (the first ones)."""
    contrastive_weight: float = 1.0
    """Weight of the contrastive loss (per masked frame)."""
    mlm_weight: float = 1.0
    """Weight of the masked-prediction loss (per masked frame)."""
    diversity_weight: float = 0.1
    """Weight of the codebook diversity loss."""
    feature_penalty_weight: float = 0.0
    """Weight of an L2 penalty on the front-end output. wav2vec 2.0 puts weight 10 on its
    learned CNN feature encoder's output; a stacked-fbank front end has no such encoder
    (fairseq2's w2v-BERT on fbank has no penalty either), and on the projected front-end
    output weight 10 stopped both tasks from learning here (tiny model, 400 steps of FSDD:
    contrastive accuracy flat at 0.12 against 0.67 without it). Hence 0."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        self.encoder.validate()
        self.masking.validate()
        self.quantizer.validate()
        layers = self.encoder.conformer.num_layers
        if not 1 <= self.num_contrastive_layers < layers:
            raise ValueError(f"num_contrastive_layers must be in [1, {layers}) (the encoder's "
                             f"num_layers), got {self.num_contrastive_layers}")
        if self.encoder.conformer.layer_drop > 0:
            raise ValueError("w2v-BERT does not support layer_drop (the MLM module reads a fixed layer)")
        for name in ("final_dim", "num_negatives", "num_target_codebooks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_target_codebooks > self.quantizer.num_groups:
            raise ValueError(f"num_target_codebooks ({self.num_target_codebooks}) exceeds the "
                             f"quantizer's groups ({self.quantizer.num_groups})")
        if not self.contrastive_temperature > 0:
            raise ValueError("contrastive_temperature must be > 0")
        if self.encoder.conformer.length_adapter is not None:
            raise ValueError("encoder.conformer.length_adapter must be off for w2v-BERT "
                             "pretraining (the losses read frames at the blocks' rate); a "
                             "converted checkpoint's adapter belongs to fine-tuning")
        for name in ("contrastive_weight", "mlm_weight", "diversity_weight", "feature_penalty_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def frame_shift_s(self) -> float:
        """Seconds between two encoder output frames."""
        return self.encoder.frame_shift_s


def _stacked(conformer: ConformerConfig, **kw: Any) -> SpeechEncoderConfig:
    """w2v-BERT 2.0's front end: 80-dim fbank stacked by 2, per-utterance normalisation."""
    return SpeechEncoderConfig(conformer=conformer, normalization="utterance", specaugment=False,
                               **kw)


def _conformer_2_0(num_layers: int) -> ConformerConfig:
    return ConformerConfig(
        input_dim=80, front_end="stack", subsampling_factor=2, dim=1024, num_layers=num_layers,
        num_heads=16, ffn_dim=4096, conv_kernel=31, conv_causal=True, conv_bias=False,
        pos_type="relative_key", rel_left_max=64, rel_right_max=8, dropout=0.0)


def w2v_bert_600m() -> W2vBertModelConfig:
    """fairseq2's ``600m`` (w2v-BERT 2.0): 24 layers, 8 contrastive + 16 MLM."""
    return W2vBertModelConfig(
        encoder=_stacked(_conformer_2_0(24)), num_contrastive_layers=8, final_dim=768,
        quantizer=QuantizerConfig(num_groups=1, num_entries=1024, code_dim=1024))


def w2v_bert_300m() -> W2vBertModelConfig:
    """fairseq2's ``300m``: 12 layers, 4 contrastive + 8 MLM."""
    return W2vBertModelConfig(
        encoder=_stacked(_conformer_2_0(12)), num_contrastive_layers=4, final_dim=768,
        quantizer=QuantizerConfig(num_groups=1, num_entries=1024, code_dim=1024))


def _paper(mlm_layers: int) -> W2vBertModelConfig:
    conformer = ConformerConfig(input_dim=80, front_end="conv2d", subsampling_factor=4, dim=1024,
                                num_layers=12 + mlm_layers, num_heads=8, ffn_dim=4096,
                                conv_kernel=5, pos_type="rel_pos", dropout=0.1)
    return W2vBertModelConfig(
        encoder=SpeechEncoderConfig(conformer=conformer, specaugment=False),
        num_contrastive_layers=12, final_dim=1024,
        quantizer=QuantizerConfig(num_groups=1, num_entries=1024, code_dim=1024))


def w2v_bert_xl() -> W2vBertModelConfig:
    """The paper's XL (0.6B): 12 contrastive + 12 MLM layers."""
    return _paper(12)


def w2v_bert_xxl() -> W2vBertModelConfig:
    """The paper's XXL (1.0B): 12 contrastive + 30 MLM layers."""
    return _paper(30)


def w2v_bert_small() -> W2vBertModelConfig:
    """CPU scale: 6 x 192 stacked-fbank Conformer, 2 contrastive + 4 MLM, 1 x 320 codes."""
    conformer = ConformerConfig(input_dim=80, front_end="stack", subsampling_factor=2, dim=192,
                                num_layers=6, num_heads=4, ffn_dim=768, conv_kernel=15,
                                conv_norm="batch_norm", pos_type="relative_key", dropout=0.1)
    return W2vBertModelConfig(
        encoder=_stacked(conformer), num_contrastive_layers=2, final_dim=128,
        quantizer=QuantizerConfig(num_groups=1, num_entries=320, code_dim=128))


def w2v_bert_tiny() -> W2vBertModelConfig:
    """Tests: 3 x 32 layers (1 contrastive + 2 MLM), 1 x 16 codes."""
    conformer = ConformerConfig(input_dim=80, front_end="stack", subsampling_factor=2, dim=32,
                                num_layers=3, num_heads=2, ffn_dim=64, conv_kernel=5,
                                pos_type="relative_key", dropout=0.0)
    return W2vBertModelConfig(
        encoder=_stacked(conformer), num_contrastive_layers=1, final_dim=16, num_negatives=10,
        quantizer=QuantizerConfig(num_groups=1, num_entries=16, code_dim=16))
