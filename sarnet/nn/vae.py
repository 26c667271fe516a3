"""Conv encoder (shared by SarNET-VAE and the baseline) and the conv VAE baseline (docs/reference.md §4.1, §5)."""

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from sarnet.nn.semidense import GeometryError


class Output(NamedTuple):
    logits: torch.Tensor  # pre-output-activation image (B, C, H, W)
    mu: torch.Tensor | None = None
    logvar: torch.Tensor | None = None


def fp32(t: torch.Tensor | None) -> torch.Tensor | None:
    """t in float32 where autocast (trainer.precision=bf16-mixed) made it a 16-bit float; else t itself (a float64
    net's tensors stay float64)."""
    return t.float() if t is not None and t.dtype in (torch.bfloat16, torch.float16) else t


def target(net) -> str:
    """The `_target_` of a net's config: sarnet.nn.<class> for the package's nets, a subclass's own path for a
    subclass (load_model rebuilds it as itself)."""
    cls = type(net)
    own = cls.__module__.startswith("sarnet.nn.")
    return f"sarnet.nn.{cls.__name__}" if own else f"{cls.__module__}.{cls.__qualname__}"


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + eps * sigma; eps ~ N(0, I) from the global RNG unless given (evaluation draws it per image). In
    float32 under bf16-mixed too: the noise is drawn as in a float32 run (the same draws), and z is rounded to bf16
    once, where the decoder's matmul reads it."""
    mu, logvar = fp32(mu), fp32(logvar)
    return mu + (torch.randn_like(mu) if eps is None else eps) * torch.exp(0.5 * logvar)


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
        # Same maths as self.body(x), faster (scripts/bench.py, case train): channels-last activations take
        # mkldnn's fast small-batch kernels on CPU (the first two convs 1.4-3x), and the last conv, whose kernel
        # covers its whole 7x7 input, is one linear layer over the flattened (C, H, W) input (3-4x).
        conv1, _, conv2, _, conv3, _ = self.body
        h = F.relu(conv1(x.contiguous(memory_format=torch.channels_last)))
        h = F.relu(conv2(h))
        h = F.linear(h.flatten(1), conv3.weight.flatten(1), conv3.bias)
        # The heads stay float32 under bf16-mixed: mu and logvar enter the KL and z, and exp(logvar) of an 8-bit
        # mantissa is off by up to 0.4 % x |logvar|; two 128 x 128 matmuls are not worth that.
        with torch.autocast(h.device.type, enabled=False):
            h = fp32(h)
            return self.fc_mu(h), self.fc_logvar(h)


class ConvDecoder(nn.Sequential):
    """z -> 128 -> transposed convs 1 -> 7 -> 14 -> 28 (logits). A Sequential for its parameter names; forward is
    the same maths, faster as in ConvEncoder: the first transposed conv (1x1 input) is one matmul."""

    def __init__(self, latent_dim: int, channels: int, side: int):
        super().__init__(
            nn.Linear(latent_dim, 128), nn.Unflatten(1, (128, 1, 1)),
            nn.ConvTranspose2d(128, 64, side // 4), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 3, stride=2, padding=1, output_padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        fc, _, up1, _, up2, _, up3 = self
        k = up1.kernel_size[0]
        h = (fc(z) @ up1.weight.flatten(1)).view(-1, up1.out_channels, k, k) + up1.bias[:, None, None]
        h = F.relu(h).contiguous(memory_format=torch.channels_last)
        return up3(F.relu(up2(h))).contiguous()


class ConvVAE(nn.Module):
    """The thesis' baseline: the same encoder, a transposed-conv decoder with a sigmoid output. Not
    autoregressive: no ar_net (see SarNet for the interface the three nets share)."""
    out_activation = "sigmoid"
    ar_net = None

    def __init__(self, latent_dim: int = 128, channels: int = 1, side: int = 28):
        super().__init__()
        if latent_dim <= 0:
            raise GeometryError(f"latent_dim={latent_dim} must be a positive int (e.g. 8, 16, 32, 64, 128)")
        self.config = {"_target_": target(self), "latent_dim": latent_dim, "channels": channels, "side": side}
        self.latent_dim = latent_dim
        self.image_shape = (channels, side, side)
        self.encoder = ConvEncoder(latent_dim, channels, side)
        self.decoder = ConvDecoder(latent_dim, channels, side)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        mu, logvar = self.encoder(x)
        return Output(self.decoder(reparameterize(mu, logvar, eps)), mu, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def effective_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
