"""SarNET (a stack of SemiDense layers) and SarNET-VAE (a conv encoder whose z feeds every SemiDense layer)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from sarnet.nn.semidense import GeometryError, SemiDense
from sarnet.nn.vae import ConvEncoder, Output, reparameterize, target

# (side, channels, patch) of every activation, input first. Reference (docs/reference.md §3): 49 patches of 4x4 pixels.
REFERENCE_GEOMETRY = [[28, 1, 4], [14, 2, 2], [28, 2, 4], [28, 1, 4]]
# none: regression (linear output); sigmoid: pixel means / Bernoulli; softmax: the classification SarNET
# (docs/reference.md §3.1), whose C image channels are the one-hot classes of a pixel quantised to C levels.
OUT_ACTIVATIONS = ("none", "sigmoid", "softmax")


def reference_vae_geometry(latent_dim: int) -> list[list[int]]:
    # The saved reference notebooks use 2 channels after layer 1 only at L=128, 1 elsewhere (docs/reference.md §4.2).
    hc1 = 2 if latent_dim == 128 else 1
    return [[28, 1, 4], [14, hc1, 2], [28, 2, 4], [28, 1, 4]]


class SarNet(nn.Module):
    """Type-a SemiDense layer, then type-b layers, ReLU between; z (if latent_dim) is fed to every layer.

    The three nets share one small interface, so code asks the net instead of checking its class:
    latent_dim (0 = none), image_shape (C, H, W) of the images it reads and generates, out_activation ("sigmoid" |
    "none" | "softmax": C classes per pixel, softmax over the channel dimension), ar_net: the SarNet that
    generates patch by patch (itself here, the decoder of a SarNetVAE, None for the conv VAE), and config: the
    constructor's arguments.
    """

    def __init__(self, geometry=None, latent_dim: int = 0, first_patch: str = "given",
                 out_activation: str = "none"):
        super().__init__()
        # The constructor's arguments: a checkpoint stores them, and load_model rebuilds the net from them (a subclass
        # as itself; one with arguments of its own adds them to config).
        self.config = {"_target_": target(self), "geometry": _rows(geometry), "latent_dim": latent_dim,
                       "first_patch": first_patch, "out_activation": out_activation}
        geometry = [list(g) for g in (geometry or REFERENCE_GEOMETRY)]
        if len(geometry) < 2 or any(len(g) != 3 for g in geometry):
            raise GeometryError(f"geometry={geometry} must list >= 2 [side, channels, patch] triples "
                                f"(input first, output last), e.g. {REFERENCE_GEOMETRY}")
        if out_activation not in OUT_ACTIVATIONS:
            raise GeometryError(f"out_activation={out_activation!r} is not one of {OUT_ACTIVATIONS}")
        # The net predicts its own input. One exception, the reference's "probability" variant (docs/reference.md
        # §3.1): a softmax net may read the 1-channel grey image and give C class logits per pixel.
        probability = out_activation == "softmax" and geometry[0][1] == 1
        if geometry[0][0] != geometry[-1][0] or (geometry[0][1] != geometry[-1][1] and not probability):
            raise GeometryError(f"geometry={geometry}: input {geometry[0]} and output {geometry[-1]} must have the "
                                f"same side and channels: the network predicts its own input (only a softmax net may "
                                f"read 1 grey channel and output C classes)")
        self.geometry, self.latent_dim, self.first_patch = geometry, latent_dim, first_patch
        self.out_activation = out_activation
        self.layers = nn.ModuleList()
        for i in range(len(geometry) - 1):
            try:
                self.layers.append(SemiDense(*geometry[i], *geometry[i + 1], latent_dim=latent_dim,
                                             mask_type="a" if i == 0 else "b", first_patch=first_patch))
            except GeometryError as e:  # in the layer's words (patch_in, side_out, ...): say which rows they are
                raise GeometryError(f"geometry={geometry}: rows {i} and {i + 1}: {e}") from None
        self.image_shape = (geometry[0][1], geometry[0][0], geometry[0][0])  # what it reads and generates
        self.out_shape = (geometry[-1][1], geometry[-1][0], geometry[-1][0])  # its logits
        if out_activation == "softmax" and self.out_shape[0] < 2:
            raise GeometryError(f"out_activation='softmax' needs >= 2 output channels (one per class), but geometry "
                                f"output is {geometry[-1]}: use [side, C, patch] with C = data.quantize")
        self.patch = geometry[0][2]
        self.n_patches = self.layers[0].n_patches
        # reads and writes one-hot classes (data.quantize); a softmax net reading 1 grey channel writes grey levels
        self.one_hot_input = out_activation == "softmax" and self.image_shape[0] > 1

    @property
    def ar_net(self) -> "SarNet":
        return self

    def logits(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W); z: (B, latent_dim), (B * draws, latent_dim) (see SemiDense.forward) or None."""
        h = x.flatten(1)
        for i, layer in enumerate(self.layers):
            h = layer(h, z)
            if i < len(self.layers) - 1:
                h = F.relu(h)
        return h.view(-1, *self.out_shape)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.out_activation == "softmax":  # class probabilities of every pixel, over the C channels
            return torch.softmax(logits, dim=1)
        return torch.sigmoid(logits) if self.out_activation == "sigmoid" else logits

    def forward(self, x: torch.Tensor) -> Output:
        return Output(self.logits(x))

    def effective_parameters(self) -> int:
        return sum(layer.effective_parameters() for layer in self.layers)


class SarNetVAE(nn.Module):
    """Conv encoder -> z; SarNET decoder, teacher-forced on x, with z concatenated into every SemiDense layer."""
    out_activation = "sigmoid"

    def __init__(self, latent_dim: int = 128, geometry=None, first_patch: str = "given"):
        super().__init__()
        if latent_dim <= 0:
            raise GeometryError(f"latent_dim={latent_dim} must be a positive int (e.g. 8, 16, 32, 64, 128)")
        self.config = {"_target_": target(self), "latent_dim": latent_dim, "geometry": _rows(geometry),
                       "first_patch": first_patch}
        self.latent_dim = latent_dim
        geometry = geometry or reference_vae_geometry(latent_dim)
        self.encoder = ConvEncoder(latent_dim, channels=geometry[0][1], side=geometry[0][0])
        self.decoder = SarNet(geometry, latent_dim, first_patch, out_activation="sigmoid")

    @property
    def ar_net(self) -> SarNet:
        return self.decoder

    @property
    def image_shape(self) -> tuple:
        return self.decoder.image_shape

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> Output:
        mu, logvar = self.encoder(x)
        return Output(self.decoder.logits(x, reparameterize(mu, logvar, eps)), mu, logvar)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def effective_parameters(self) -> int:
        return self.decoder.effective_parameters() + sum(p.numel() for p in self.encoder.parameters())


def to_grayscale(model, images):
    """Images of a model's channels -> (B, 1, H, W) grey levels in [0, 1], for FID, kNN and grids.

    A softmax (classification) net's C channels are one-hot classes: class c of C is the grey level c / (C - 1)
    (0 black, C - 1 white; the quantisation's levels, evenly spread). For class probabilities (reconstructions) this
    is the expected grey level. Every other model's images (a probability net's samples too) are grey levels already."""
    if model.out_activation != "softmax" or images.shape[1] == 1:
        return images
    classes = images.shape[1]
    levels = torch.arange(classes, dtype=images.dtype, device=images.device) / (classes - 1)
    return (images * levels.view(-1, *(1,) * (images.ndim - 2))).sum(1, keepdim=True)  # (B, C, ...): any trailing dims


def _rows(geometry):
    """geometry as plain lists (Hydra passes a ListConfig), None kept: the form a checkpoint stores."""
    return None if geometry is None else [list(g) for g in geometry]
