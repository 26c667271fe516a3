"""Conv encoder (shared by SarNET-VAE and the baseline) and the conv VAE baseline (docs/reference.md §4.1, §5)."""

from typing import NamedTuple

import torch
import torch.nn as nn

from sarnet.nn.semidense import GeometryError


class Output(NamedTuple):
    logits: torch.Tensor  # pre-output-activation image (B, C, H, W)
    mu: torch.Tensor | None = None
    logvar: torch.Tensor | None = None


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


class ConvEncoder(nn.Module):
    """28 -> 14 -> 7 -> 1 convs (no activation after the last), then separate mu / logvar heads."""

    def __init__(self, latent_dim: int, channels: int = 1, side: int = 28):
        super().__init__()
        if side % 4:
            raise ValueError(f"encoder side={side} must be divisible by 4 (two stride-2 convs)")
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 128, side // 4), nn.Flatten())
        self.fc_mu = nn.Linear(128, latent_dim)
        self.fc_logvar = nn.Linear(128, latent_dim)

    def forward(self, x: torch.Tensor):
        h = self.body(x)
        return self.fc_mu(h), self.fc_logvar(h)


class ConvVAE(nn.Module):
    """The thesis' baseline: the same encoder, a transposed-conv decoder with a sigmoid output. Not
    autoregressive: no ar_net (see SarNet for the interface the three nets share)."""
    out_activation = "sigmoid"
    ar_net = None

    def __init__(self, latent_dim: int = 128, channels: int = 1, side: int = 28):
        super().__init__()
        if latent_dim <= 0:
            raise GeometryError(f"latent_dim={latent_dim} must be a positive int (e.g. 8, 16, 32, 64, 128)")
        self.latent_dim = latent_dim
        self.image_shape = (channels, side, side)
        self.encoder = ConvEncoder(latent_dim, channels, side)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.Unflatten(1, (128, 1, 1)),
            nn.ConvTranspose2d(128, 64, side // 4), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 3, stride=2, padding=1, output_padding=1))

    def forward(self, x: torch.Tensor):
        mu, logvar = self.encoder(x)
        return Output(self.decoder(reparameterize(mu, logvar)), mu, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def effective_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
