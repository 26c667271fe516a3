"""The SemiDense layer: a linear layer whose weight mask follows raster-ordered square patches.

Every unit of an image-shaped activation (C, side, side), flattened channel-major as `view(B, -1)` gives, gets a
*degree*: the raster index of the p x p patch it lies in. A mask is then one comparison of degrees (as in MADE):

    mask_type="b": output patch k sees input patches j <= k
    mask_type="a": output patch k sees input patches j <  k                  first_patch="predicted" (strict)
                          ... and output patch 0 also sees input patch 0      first_patch="given" (the reference)

A network of one type-a layer followed by type-b layers is autoregressive over patches: output patch k depends
only on input patches < k (and on the latent z, whose columns are never masked). The "given" mode reproduces the
reference exactly: patch 0 is copied through rather than modelled, so generation leaves it as given (black).
`semidense_mask` is the one place this rule lives; the layer, the fast sampler and the explainer all use it.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

FIRST_PATCH_MODES = ("given", "predicted")


class GeometryError(ValueError):
    """A SemiDense geometry that cannot work (raised at construction, before any data is touched)."""


def patch_degrees(side: int, channels: int, patch: int, suffix: str = "") -> torch.Tensor:
    """Raster patch index of every unit of a (channels, side, side) image, in flattened (C, H, W) order."""
    for name, value in (("side", side), ("channels", channels), ("patch", patch)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise GeometryError(f"{name}{suffix}={value!r} must be a positive int")
    if side % patch:
        raise GeometryError(f"patch{suffix}={patch} does not divide side{suffix}={side}: "
                            f"pick a patch side that divides {side}")
    rows = torch.arange(side) // patch
    per_row = side // patch
    grid = rows[:, None] * per_row + rows[None, :]  # (side, side) patch index of each pixel
    return grid.flatten().repeat(channels)


def semidense_mask(deg_in: torch.Tensor, deg_out: torch.Tensor, latent_dim: int = 0, mask_type: str = "b",
                   first_patch: str = "given") -> torch.Tensor:
    """Boolean (out, in + latent_dim) mask from unit degrees; latent columns (appended last) are always on."""
    if first_patch not in FIRST_PATCH_MODES:
        raise GeometryError(f"first_patch={first_patch!r} is not one of {FIRST_PATCH_MODES}")
    if mask_type not in ("a", "b"):
        raise GeometryError(f"mask_type={mask_type!r} is not 'a' (first layer: patches < k) or 'b' (<= k)")
    if mask_type == "a":
        # "given": output patch 0 reads input patch 0 (copied through), i.e. it compares as if it were patch 1.
        effective = deg_out.clamp(min=1) if first_patch == "given" else deg_out
        mask = deg_in[None, :] < effective[:, None]
    else:
        mask = deg_in[None, :] <= deg_out[:, None]
    return torch.cat([mask, mask.new_ones(len(deg_out), latent_dim)], dim=1)


class SemiDense(nn.Module):
    """y = x @ (W * M).T + b, x = [image features (C_in*side_in^2), z (latent_dim)]."""

    def __init__(self, side_in: int, ch_in: int, patch_in: int, side_out: int, ch_out: int, patch_out: int,
                 latent_dim: int = 0, mask_type: str = "b", first_patch: str = "given"):
        super().__init__()
        deg_in = patch_degrees(side_in, ch_in, patch_in, "_in")
        deg_out = patch_degrees(side_out, ch_out, patch_out, "_out")
        n_in, n_out = (side_in // patch_in) ** 2, (side_out // patch_out) ** 2
        if n_in != n_out:
            raise GeometryError(f"input has {n_in} patches ({side_in}/{patch_in})^2, output {n_out} "
                                f"({side_out}/{patch_out})^2: the patch grids must match")
        if latent_dim < 0:
            raise GeometryError(f"latent_dim={latent_dim} must be >= 0")
        self.side_in, self.ch_in, self.patch_in = side_in, ch_in, patch_in
        self.side_out, self.ch_out, self.patch_out = side_out, ch_out, patch_out
        self.latent_dim, self.mask_type, self.first_patch = latent_dim, mask_type, first_patch
        self.n_patches = n_in
        self.in_image, self.out_features = len(deg_in), len(deg_out)
        self.register_buffer("deg_in", deg_in, persistent=False)
        self.register_buffer("deg_out", deg_out, persistent=False)
        # Persistent, so a checkpoint carries the exact mask it was trained with (loading checks it matches). Held
        # in the weights' dtype, as it is multiplied in every forward (a bool mask is converted on every call:
        # ~10% of a CPU training step); stored as bool, so checkpoints stay small.
        mask = semidense_mask(deg_in, deg_out, latent_dim, mask_type, first_patch)
        self.register_buffer("mask", mask.float())
        self._register_state_dict_hook(_mask_as_bool)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_image + latent_dim))
        self.bias = nn.Parameter(torch.empty(self.out_features))
        self.reset_parameters()

    def reset_parameters(self):
        # nn.Linear's init on the full dense fan-in (as the reference), then zero the masked entries once.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.weight.shape[1])
        nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def masked_weight(self) -> torch.Tensor:
        """W * M. Under autocast (trainer.precision=bf16-mixed) W is cast to the autocast dtype first and masked by a
        bf16 copy of the mask: the same bits as masking first (the mask is 0/1), half the bytes read and written
        here and in the backward's mask multiply (the decoder's forward + backward, batch 64: 4.8 -> 4.4 ms)."""
        device = self.weight.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            return self.weight.to(dtype) * self.mask_in(dtype)
        return self.weight * self.mask

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None):
        """x: (B, in_image); z: (B, latent_dim), or (B * draws, latent_dim) for several latents per input row (rows
        i * draws ... i * draws + draws - 1 belong to x[i]; output (B * draws, out)), or None."""
        if self.latent_dim:
            if z is None:
                raise ValueError(f"this layer has latent_dim={self.latent_dim} and needs z")
            if len(z) != len(x):
                # Importance sampling scores each image under many z: its image part is then computed once per
                # image, not once per draw (the first layer's bulk; sarnet/likelihood.py).
                if len(z) % len(x):
                    raise ValueError(f"z has {len(z)} rows for {len(x)} inputs: must be a multiple (draws per row)")
                w = self.masked_weight()
                per_image = F.linear(x, w[:, :self.in_image], self.bias)
                return torch.addmm(per_image.repeat_interleave(len(z) // len(x), 0), z, w[:, self.in_image:].T)
            x = torch.cat([x, z], dim=1)  # one matmul over [x, z]: faster on CPU than two (measured)
        return F.linear(x, self.masked_weight(), self.bias)

    def mask_in(self, dtype) -> torch.Tensor:
        """The mask in `dtype`: the buffer itself, or (bf16 under autocast) a copy kept until the buffer changes
        (load_state_dict and .to() bump its version or replace it)."""
        if dtype == self.mask.dtype:
            return self.mask
        key = (dtype, self.mask.device, self.mask.data_ptr(), self.mask._version)
        cached = getattr(self, "_mask_cast", None)
        if cached is None or cached[0] != key:
            self._mask_cast = cached = (key, self.mask.to(dtype))
        return cached[1]

    def effective_parameters(self) -> int:
        return int(self.mask.sum()) + self.bias.numel()

    def extra_repr(self) -> str:
        return (f"{self.ch_in}x{self.side_in}^2/p{self.patch_in} -> {self.ch_out}x{self.side_out}^2/p{self.patch_out}, "
                f"latent={self.latent_dim}, type={self.mask_type}, first_patch={self.first_patch}")


def _mask_as_bool(module, state_dict, prefix, local_metadata):
    state_dict[prefix + "mask"] = state_dict[prefix + "mask"].bool()  # loading casts it back to the buffer's dtype
