"""Spectrogram transformer (AST, Gong et al. 2021; the ASiT backbone) and its classifier.

:class:`SpectrogramTransformer` is the family's front end (``model.encoder``, a sibling of
:class:`~speechfm.models.conformer.speech_encoder.SpeechEncoder` with the same interface):
fbank -> ``(x - mean) / (2 std)`` -> SpecAugment (training) -> pad or cut to
``target_frames`` -> overlapping patches -> CLS (+ distillation) token + learned absolute
positions -> pre-norm transformer blocks (:class:`~speechfm.nn.transformer.TransformerBlock`)
-> LayerNorm.  Inputs have a fixed size, as in AST: shorter ones are padded with the
normalised value of a zero fbank frame (exactly what ``ASTFeatureExtractor`` feeds the
model), and nothing is masked.  :meth:`SpectrogramTransformer.resize_positions` moves a
model to another input size by interpolating its positional grid (AST's recipe for
ImageNet weights; here e.g. from an AudioSet model's 1024 frames to one-second clips).

:class:`AstModel` adds the classifier (LayerNorm + Linear on the pooled embedding,
transformers' ``ASTMLPHead``): ``model(batch)`` is the cross-entropy of
``batch["targets"]``, :meth:`AstModel.classify` the logits.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechfm.features.fbank import TorchFbank
from speechfm.features.specaug import SpecAugment
from speechfm.losses.classification import classification_loss
from speechfm.nn.adapters import TRANSFORMER_POINTS, AdapterContext, AdapterHost
from speechfm.nn.subsampling import PatchEmbedding
from speechfm.nn.transformer import TransformerBlock

__all__ = ["AstModel", "SpectrogramTransformer", "create_ast_model", "interpolate_positions"]


class SpectrogramTransformer(AdapterHost, nn.Module):
    """Features in, patch tokens out (see the module doc).

    Args:
        fbank: feature extractor of the input (no weights).
        norm_mean, norm_std: ``(x - mean) / (2 std)``.
        target_frames: frames of every input (padded or cut).
        patch, stride: (time, frequency) patch size and stride.
        dim, num_layers, num_heads, mlp_dim, dropout, attn_dropout, eps: the blocks.
        distillation_token: a second special token after CLS.
        specaugment: applied to the normalised features in training mode; None = off.
    """

    adapter_points = TRANSFORMER_POINTS
    default_adapter_points = ("after_ffn",)

    def __init__(
        self,
        *,
        fbank: TorchFbank,
        norm_mean: float,
        norm_std: float,
        target_frames: int,
        patch: tuple[int, int],
        stride: tuple[int, int],
        dim: int,
        num_layers: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        eps: float = 1e-12,
        distillation_token: bool = True,
        specaugment: SpecAugment | None = None,
    ) -> None:
        super().__init__()
        self.fbank = fbank
        self.norm_mean = float(norm_mean)
        self.norm_std = float(norm_std)
        self.target_frames = int(target_frames)
        self.specaugment = specaugment
        in_dim = fbank.config.feature_dim
        self.patch_embed = PatchEmbedding(in_dim, dim, patch=patch, stride=stride)
        self.num_special = 2 if distillation_token else 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if distillation_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_special + self.num_patches, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, mlp_dim, dropout=dropout,
                             attn_dropout=attn_dropout, eps=eps)
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(dim, eps=eps)
        self.dim = dim

    # ------------------------------------------------------------------ properties

    def _grid(self, frames: int) -> tuple[int, int]:
        pe = self.patch_embed
        return (frames - pe.patch[0]) // pe.stride[0] + 1, pe.num_freq_patches

    @property
    def grid(self) -> tuple[int, int]:
        """(time, frequency) patch grid of an input of ``target_frames`` frames."""
        return self._grid(self.target_frames)

    @property
    def num_patches(self) -> int:
        """P = P_t * P_f patch tokens of one input."""
        return self.grid[0] * self.grid[1]

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def feature_dim(self) -> int:
        return self.fbank.config.feature_dim

    @property
    def sample_rate(self) -> int:
        return self.fbank.config.sample_rate

    @property
    def frame_shift_s(self) -> float:
        """Seconds between two rows of patches."""
        return self.fbank.config.frame_shift * self.patch_embed.stride[0]

    @property
    def chunk_size(self) -> int:
        return -1

    @property
    def pad_value(self) -> float:
        """The normalised value of a zero fbank frame (what padded frames hold)."""
        return -self.norm_mean / (2.0 * self.norm_std)

    def feature_extractor(self) -> TorchFbank:
        return self.fbank

    def set_cmvn(self, *args: Any, **kwargs: Any) -> None:
        raise ValueError("a spectrogram transformer normalises with fixed (mean, std) "
                         "(config norm_mean / norm_std), not CMVN statistics")

    def load_cmvn(self, path: str | None) -> bool:
        if path is not None:
            self.set_cmvn()
        return False

    def output_lengths(self, x_lens: torch.Tensor) -> torch.Tensor:
        """Patch tokens per input: always :attr:`num_patches` (inputs have a fixed size)."""
        return torch.full_like(x_lens, self.num_patches)

    layer_lengths = output_lengths

    # ------------------------------------------------------------------ input

    def normalize(self, feats: torch.Tensor, x_lens: torch.Tensor) -> torch.Tensor:
        """(N, T, F) fbank -> (N, target_frames, F) normalised, augmented (training) and
        padded/cut model input."""
        x = (feats - self.norm_mean) / (2.0 * self.norm_std)
        t = x.shape[1]
        valid = torch.arange(t, device=x.device)[None, :] < x_lens.to(x.device)[:, None]
        x = torch.where(valid.unsqueeze(-1), x, torch.full_like(x, self.pad_value))
        if self.specaugment is not None and self.training:
            x = self.specaugment(x, x_lens.clamp(max=t))
        if t < self.target_frames:
            x = F.pad(x, (0, 0, 0, self.target_frames - t), value=self.pad_value)
        return x[:, : self.target_frames]

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """(N, target_frames, F) model input -> (N, S + P, C) tokens with positions (S
        special tokens first, then the patches time-major)."""
        n = x.shape[0]
        lens = torch.full((n,), x.shape[1], dtype=torch.int64, device=x.device)
        patches, _, grid = self.patch_embed(x, lens)
        if grid != self.grid:
            raise ValueError(f"input of {x.shape[1]} frames gives a {grid} patch grid; the "
                             f"model's positions cover {self.grid}")
        special = [self.cls_token.expand(n, -1, -1)]
        if self.dist_token is not None:
            special.append(self.dist_token.expand(n, -1, -1))
        tokens = torch.cat(special + [patches], dim=1) + self.pos_embed.to(patches.dtype)
        return self.dropout(tokens)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        feats: torch.Tensor,
        x_lens: torch.Tensor,
        *,
        return_layers: Sequence[int] | None = None,
        language: str | None = None,
        adapters: Collection[str] | str | None = None,
        input_hook: Callable[[torch.Tensor], torch.Tensor] | None = None,
        token_hook: Callable[[torch.Tensor], torch.Tensor] | None = None,
        return_special: bool = False,
        chunk_size: int | None = None,
        left_context: int | None = None,
    ):
        """Patch tokens of a batch of fbank features.

        Args:
            feats: (N, T, F) fbank features (not normalised).
            x_lens: int64 (N,) valid frames.
            return_layers: also return these layers' patch tokens (0 = the embedded input,
                i = block i, negative from the end; the last block's is before the final
                norm).
            language, adapters: select language-keyed / named adapters.
            input_hook: ``f(x) -> x`` on the normalised (N, target_frames, F) input (the
                masking of self-supervised recipes).
            token_hook: ``f(tokens) -> tokens`` on the embedded (N, S + P, C) tokens.
            return_special: return the final (N, S + P, C) sequence, special tokens
                included, instead of the patch tokens.
            chunk_size, left_context: accepted for the shared interface; must be None or
                -1 (a spectrogram transformer attends over the whole input).

        Returns:
            out: (N, P, C) final patch tokens (after the final norm); out_lens: (N,) = P;
            with ``return_layers`` a list of (N, P, C) layer outputs.
        """
        if chunk_size not in (None, -1) or left_context not in (None, -1):
            raise ValueError("a spectrogram transformer has no chunked attention")
        x = self.normalize(feats, x_lens)
        if input_hook is not None:
            x = input_hook(x)
        h = self.embed_patches(x)
        if token_hook is not None:
            h = token_hook(h)
        ctx = AdapterContext.make(adapters, language)
        wanted = self._layer_indices(return_layers) if return_layers is not None else []
        layers = {}
        s = self.num_special
        if 0 in wanted:
            layers[0] = h[:, s:]
        for i, block in enumerate(self.blocks, start=1):
            h = block(h, None, ctx)
            if i in wanted:
                layers[i] = h[:, s:]
        h = self.final_norm(h)
        out = h if return_special else h[:, s:]
        out_lens = self.output_lengths(x_lens.to(out.device))
        if return_layers is not None:
            return out, out_lens, [layers[i] for i in wanted]
        return out, out_lens

    def _layer_indices(self, return_layers: Sequence[int]) -> list[int]:
        n = self.num_layers
        out = []
        for i in return_layers:
            j = i + n + 1 if i < 0 else i
            if not 0 <= j <= n:
                raise ValueError(f"layer {i} out of range for {n} blocks (0 = input)")
            out.append(j)
        return out

    def forward_waveforms(self, wavs: torch.Tensor, lens: torch.Tensor | None = None, *,
                          sample_rate: int | None = None, **kwargs: Any):
        """Waveforms (N, S) in [-1, 1] -> :meth:`forward`."""
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError(f"waveforms at {sample_rate} Hz given to a model expecting "
                             f"{self.sample_rate} Hz; resample them first")
        feats, feat_lens = self.fbank(wavs, lens)
        return self(feats, feat_lens, **kwargs)

    def init_streaming_state(self, *args: Any, **kwargs: Any):
        raise ValueError("a spectrogram transformer classifies whole clips; it cannot stream")

    streaming_forward = init_streaming_state

    # ------------------------------------------------------------------ input size

    @torch.no_grad()
    def resize_positions(self, target_frames: int) -> None:
        """Change the input size: the positional grid is interpolated (bilinear, in time
        and frequency) to the new patch grid; the special tokens keep theirs."""
        new_grid = self._grid(int(target_frames))
        if new_grid[0] <= 0:
            raise ValueError(f"target_frames {target_frames} is shorter than one patch")
        self.pos_embed = nn.Parameter(
            interpolate_positions(self.pos_embed.data, self.num_special, self.grid, new_grid))
        self.target_frames = int(target_frames)



def interpolate_positions(pos: torch.Tensor, num_special: int, old_grid: tuple[int, int],
                          new_grid: tuple[int, int]) -> torch.Tensor:
    """(1, S + Pt*Pf, C) time-major positional embeddings on ``old_grid`` -> the same on
    ``new_grid`` (bilinear over the (time, frequency) grid)."""
    special, grid = pos[:, :num_special], pos[:, num_special:]
    if tuple(old_grid) == tuple(new_grid):
        return pos.clone()
    c = pos.shape[-1]
    g = grid.reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2)
    g = F.interpolate(g.float(), size=new_grid, mode="bilinear", align_corners=False)
    g = g.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], c)
    return torch.cat((special, g), dim=1)


class AstModel(nn.Module):
    """Spectrogram transformer + classifier head (``num_classes`` 0: backbone only).

    Args:
        encoder: the spectrogram transformer.
        num_classes: K; 0 = no head.
        pooling: "cls_dist", "cls" or "mean" (see :class:`AstModelConfig`).
        head_dropout: dropout before the head.
        eps: head LayerNorm epsilon.
    """

    def __init__(self, encoder: SpectrogramTransformer, *, num_classes: int,
                 pooling: str = "cls_dist", head_dropout: float = 0.0,
                 eps: float = 1e-12) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.num_classes = num_classes
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Sequential(nn.LayerNorm(encoder.dim, eps=eps),
                                  nn.Linear(encoder.dim, num_classes)) if num_classes else None

    def encode(self, feats: torch.Tensor, x_lens: torch.Tensor, **kwargs: Any):
        """Patch tokens (and layers): :meth:`SpectrogramTransformer.forward`."""
        return self.encoder(feats, x_lens, **kwargs)

    def pool(self, seq: torch.Tensor) -> torch.Tensor:
        """(N, S + P, C) final sequence -> (N, C) utterance embedding."""
        s = self.encoder.num_special
        if self.pooling == "cls_dist":
            return (seq[:, 0] + seq[:, 1]) / 2
        if self.pooling == "cls":
            return seq[:, 0]
        return seq[:, s:].mean(dim=1)

    def embedding(self, feats: torch.Tensor, x_lens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """(N, C) pooled utterance embeddings."""
        seq, _ = self.encoder(feats, x_lens, return_special=True, **kwargs)
        return self.pool(seq)

    def classify(self, feats: torch.Tensor, x_lens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """(N, K) float32 logits."""
        if self.head is None:
            raise ValueError("this spectrogram transformer has no classifier head "
                             "(num_classes 0); fine-tune one first")
        return self.head(self.head_dropout(self.embedding(feats, x_lens, **kwargs))).float()

    def forward(self, batch: Mapping[str, Any], **kwargs: Any) -> tuple[torch.Tensor, int, dict]:
        """Cross-entropy of ``batch["targets"]``, summed over the batch.

        ``targets`` are int64 (N,) class ids, or float (N, K) class distributions (mixup:
        soft targets; "correct" then counts the argmax of the distribution).

        Returns ``(loss_sum, N, {"correct": number right})``.
        """
        device = self.encoder.pos_embed.device
        feats = batch["features"].to(device)
        x_lens = batch["x_lens"].to(device)
        if feats.shape[0] == 0:
            zero = feats.sum() * 0.0
            return zero, 0, {"correct": 0.0}
        return classification_loss(self.classify(feats, x_lens, **kwargs), batch["targets"])


def create_ast_model(config) -> AstModel:
    """Validate ``config`` (:class:`AstModelConfig`) and build the model it describes."""
    config.validate()
    encoder = SpectrogramTransformer(
        fbank=TorchFbank(config.fbank),
        norm_mean=config.norm_mean,
        norm_std=config.norm_std,
        target_frames=config.target_frames,
        patch=config.patch_size,
        stride=config.patch_stride,
        dim=config.dim,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        mlp_dim=config.mlp_dim,
        dropout=config.dropout,
        attn_dropout=config.attn_dropout,
        eps=config.layer_norm_eps,
        distillation_token=config.distillation_token,
        specaugment=config.specaug.build() if config.specaugment else None,
    )
    from speechfm.nn.adapters import adapter_factory

    for spec in config.adapters:
        encoder.add_adapter(spec["name"], adapter_factory(spec["kind"], **(spec.get("options") or {})),
                            points=spec["points"], layers=spec.get("layers"))
    return AstModel(encoder, num_classes=config.num_classes, pooling=config.pooling,
                    head_dropout=config.head_dropout, eps=config.layer_norm_eps)
