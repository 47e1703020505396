"""Log-mel spectrograms in torch, batched, identical on CPU and CUDA.

The mel filterbank comes from librosa (so the numbers match
`librosa.feature.melspectrogram` with the same parameters); the STFT runs in
torch so that a whole batch of sub-tracks is transformed in one call on
whatever device the network is on.
"""

from __future__ import annotations

import librosa
import numpy as np
import torch
from torch import nn

from genretag.card import MelParams


class LogMel(nn.Module):
    """Waveforms (batch, samples) -> log-mel (batch, 1, n_mels, frames)."""

    def __init__(self, params: MelParams, sample_rate: int) -> None:
        super().__init__()
        self.params = params
        fb = librosa.filters.mel(
            sr=sample_rate, n_fft=params.n_fft, n_mels=params.n_mels,
            fmin=params.fmin, fmax=params.fmax, htk=params.htk, norm=params.norm,
        )
        self.register_buffer("mel_fb", torch.from_numpy(fb.astype(np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(params.n_fft, periodic=True), persistent=False)

    def n_frames(self, n_samples: int) -> int:
        """Number of frames produced for an input of `n_samples` samples."""
        if self.params.center:
            return 1 + n_samples // self.params.hop_length
        return 1 + (n_samples - self.params.n_fft) // self.params.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # Always float32, also under a bf16 autocast: the mel matmul and the log need the range.
        with torch.autocast(wave.device.type, enabled=False):
            return self._forward(wave.float())

    def _forward(self, wave: torch.Tensor) -> torch.Tensor:
        p = self.params
        spec = torch.stft(
            wave, n_fft=p.n_fft, hop_length=p.hop_length, window=self.window,
            center=p.center, pad_mode="constant", return_complex=True,
        ).abs()
        if p.power != 1.0:
            spec = spec.pow(p.power)
        mel = torch.matmul(self.mel_fb, spec)  # (batch, n_mels, frames)
        if p.log == "db":
            out = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
            if p.top_db is not None:
                peak = out.amax(dim=(-2, -1), keepdim=True)
                out = torch.maximum(out, peak - p.top_db)
        elif p.log == "log10p":
            out = torch.log10(1.0 + p.scale * mel)
        elif p.log == "none":
            out = mel
        else:
            raise ValueError(f"unknown log compression {p.log!r}")
        return out.unsqueeze(1)
