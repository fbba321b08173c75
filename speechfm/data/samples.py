"""In-memory audio arrays -> float mono samples, refusing arrays that would be misread.

:func:`to_float_mono` is what :mod:`speechfm.api` applies to every array or tensor it is
given (``transcribe``, ``embed``, ``classify``, ``respond``, live streams). An array's
dtype and shape say how to read it, and where they cannot say it unambiguously the
caller gets an :class:`~speechfm.errors.AudioError` naming the input and what to do,
rather than a transcript of something else (full-scale int64 read as silence, unscaled
int16 values as floats clipped everywhere, eight clips mixed into one).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from speechfm.errors import AudioError

__all__ = ["MAX_FLOAT_PEAK", "MAX_GUESSED_CHANNELS", "to_float_mono"]

MAX_GUESSED_CHANNELS = 2
"""A 2-D array whose short axis is longer than this needs ``channels_first=``."""
MAX_FLOAT_PEAK = 2.0
"""Float samples with a larger magnitude are refused as unscaled PCM."""


def to_float_mono(x: Any, name: str, channels_first: bool | None = None) -> np.ndarray:
    """(S,), (C, S) or (S, C) array/tensor of floats or PCM integers -> float (S,).

    PCM integers are scaled from full scale: int16/int32 (and int8, and uint8 WAV's
    offset binary) map to [-1, 1). Refused with an :class:`AudioError` naming the input,
    rather than silently decoded as something else:

    * int64 and unsigned 16/32/64-bit samples: no PCM format stores them (a
      ``torch.tensor`` of Python ints is int64, and full-scale int64 would read as
      silence): convert to int16/int32 PCM or to floats;
    * int32 samples that all fit 16 bits: 16-bit PCM in a 32-bit array, which read as
      32-bit PCM would be 96 dB too quiet;
    * floats whose peak exceeds :data:`MAX_FLOAT_PEAK` (2.0): unscaled PCM values (a
      level over 1 after gain or resampling is fine);
    * a 2-D array whose short axis holds more than :data:`MAX_GUESSED_CHANNELS` (2)
      rows or columns, unless ``channels_first`` says which axis holds the channels:
      it is as likely a batch of clips (pass those as a list); a ``(2, S)`` batch of
      two clips cannot be told from stereo and is read as stereo;
    * empty arrays of any shape, and NaN/Inf samples.

    Args:
        x: a numpy array or torch tensor, (S,), (C, S) or (S, C).
        name: how messages name the input, e.g. ``audio input #0 (numpy array of shape
            (2, 0))``.
        channels_first: for 2-D input, True = (C, S), False = (S, C), None = the short
            axis (at most :data:`MAX_GUESSED_CHANNELS` channels).

    Returns:
        (S,) float32 (float64 for float64 or 32-bit PCM input) samples.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype != torch.float64:
            x = x.float()
        x = x.numpy()
    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise AudioError(f"{name}: expected 1-D samples or 2-D (channels, samples), got {x.ndim}-D")
    if x.size == 0:
        raise AudioError(f"{name}: audio is empty (no samples)")
    if x.dtype.kind in "iu":
        if x.dtype.itemsize > 4 or (x.dtype.kind == "u" and x.dtype.itemsize > 1):
            raise AudioError(
                f"{name}: {x.dtype} samples are no PCM format (PCM is int16, int32 or uint8); "
                "convert them, e.g. 16-bit values with .astype(np.int16), or pass floats in "
                "[-1, 1]")
        peak = max(abs(int(x.max())), abs(int(x.min()))) if x.dtype.itemsize == 4 else 0
        if 0 < peak <= 2**15:
            raise AudioError(
                f"{name}: int32 samples that all fit 16 bits (peak {peak}) look like 16-bit "
                "PCM in a 32-bit array, which read as 32-bit PCM would be 96 dB too quiet; "
                "convert with .astype(np.int16), or pass floats in [-1, 1]")
        # PCM integers (e.g. int16 from a WAV reader): full scale maps to [-1, 1).
        bits = 8 * x.dtype.itemsize
        offset = 2.0 ** (bits - 1) if x.dtype.kind == "u" else 0.0
        work = np.float32 if bits <= 16 else np.float64  # exact either way
        x = (x.astype(work) - offset) / 2.0 ** (bits - 1)
    elif x.dtype.kind != "f":
        raise AudioError(f"{name}: samples must be floats or PCM integers, got dtype {x.dtype}")
    else:
        finite = np.isfinite(x)
        if not finite.all():
            raise AudioError(f"{name}: audio has {int(x.size - finite.sum())} NaN/Inf sample(s)")
        peak = max(float(x.max()), -float(x.min()))
        if peak > MAX_FLOAT_PEAK:
            raise AudioError(
                f"{name}: float samples peak at {peak:g}, far outside [-1, 1]: these look like "
                "unscaled PCM values; divide by 32768 (16-bit) or pass the integer array itself")
    if x.ndim == 2:
        if channels_first is None:
            if min(x.shape) > MAX_GUESSED_CHANNELS:
                raise AudioError(
                    f"{name}: is this a batch of {min(x.shape)} clips or a recording with "
                    f"{min(x.shape)} channels? Pass clips as a list of 1-D arrays; for "
                    "channels say which axis holds them: channels_first=True for (C, S), "
                    "False for (S, C)")
            # Channels are the short axis: (C, S) as lhotse/torch keep it, (S, C) as soundfile.
            channels_first = x.shape[0] <= x.shape[1]
        x = x.mean(axis=0 if channels_first else 1)
    return x
