"""Patch importance: which earlier patches an output patch draws on (docs/reference.md §7).

`patch_importance` is the reference's score (`SemiDenseImportance`): a linear proxy read off the FIRST
SemiDense layer only. `gradient_importance` is an exact attribution through the whole network, for comparison.
"""

import matplotlib
import torch

from sarnet.sampling import decoder_of, patch_units


def candidates(layer, o: int) -> torch.Tensor:
    """Input patches that output patch o of `layer` may see, read off the layer's own mask (z columns cut)."""
    rows = layer.deg_out == o
    cols = layer.mask[rows][:, :layer.in_image].any(0)
    return layer.deg_in[cols].unique()


def _target(net, target_patch) -> int:
    """target_patch, an int patch index of the net, else one ValueError naming it."""
    if isinstance(target_patch, bool) or not hasattr(target_patch, "__index__") or \
            not 0 <= target_patch < net.n_patches:
        raise ValueError(f"target_patch={target_patch!r} must be an int in 0..{net.n_patches - 1}")
    return int(target_patch)


def _one_image(net, image) -> torch.Tensor:
    """image, (C, H, W) or (1, C, H, W) of the net's shape -> (1, C, H, W), else one ValueError naming it."""
    shape = tuple(net.image_shape)
    if not isinstance(image, torch.Tensor) or tuple(image.shape) not in (shape, (1, *shape)):
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image: expected one image of shape {shape}, got {got}")
    return image.reshape(1, *shape).to(net.layers[0].weight)


def patch_importance(net, image, target_patch: int, top_k: int = 5):
    """Top-k input patches for output patch `target_patch` of layer 1, scored as the reference does:

        score(j) = sum_{n in units of out-patch o, all channels} |sum_{k in pixels of in-patch j} W[n,k] x_k|

    with W = W * M (weights that drifted off the mask, e.g. under weight decay, do not count; docs/reference.md §7), no
    bias, no ReLU, no later layers, no z. Returns (patches LongTensor (k,), scores FloatTensor (k,)), best
    first, min-max normalised among the top-k only: best 1, k-th 0 (all 1 for one candidate or a tie). Candidates
    with a zero score (black input patches) are dropped: they carry no evidence (the reference would divide 0 by 0).
    """
    net = decoder_of(net, "net")
    layer, o = net.layers[0], _target(net, target_patch)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k={top_k!r} must be an int >= 1")
    x = _one_image(net, image).reshape(-1)
    with torch.no_grad():
        w = layer.masked_weight()[layer.deg_out == o, :layer.in_image]  # (units of o, image columns)
        # Per unit n and input patch j: sum_k in j  W[n,k] x_k, via one scatter-add over the column degrees.
        per_patch = w.new_zeros(w.shape[0], layer.n_patches).index_add_(1, layer.deg_in, w * x)
        scores = per_patch.abs().sum(0)
    cand = candidates(layer, o)
    cand = cand[scores[cand] > 0]  # a zero score (e.g. a black patch) is no evidence: never shown as important
    s = scores[cand]
    order = torch.argsort(s, descending=True, stable=True)[:top_k]
    patches, s = cand[order], s[order]
    span = s.max() - s.min() if len(s) else 0
    s = (s - s.min()) / span if len(s) > 1 and span > 0 else torch.ones_like(s)
    return patches.cpu(), s.float().cpu()


def gradient_importance(model, image, target_patch: int, z=None) -> torch.Tensor:
    """Gradient x input through the whole network: score(j) = sum over pixels k of in-patch j of
    |d sum(logits of output patch o) / d x_k * x_k|, normalised by its max -> (P,) in [0, 1].

    Unlike the reference's score (`patch_importance`), which looks at layer 1 only, this follows every path,
    including those through hidden patches < o of the type-b layers, the ReLUs and the final layer. Logits
    rather than sigmoid outputs, so that saturated pixels do not hide the attribution. Like the reference's
    score, a black input patch scores 0 (it adds nothing to the sum). The network is autoregressive, so
    patches >= o score exactly 0 (except o = 0, which sees itself in first_patch="given" mode). z: the latent,
    held fixed; default the encoder's mean of `image` for a SarNetVAE (not differentiated: the encoder sees
    the whole image), else zeros.
    """
    net = decoder_of(model)
    o = _target(net, target_patch)
    x = _one_image(net, image)
    if net.latent_dim and z is None:
        with torch.no_grad():
            z = model.encoder(x)[0] if hasattr(model, "encoder") else x.new_zeros(1, net.latent_dim)
    if z is not None and (not isinstance(z, torch.Tensor) or z.numel() != net.latent_dim):
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"z: expected the latent of one image, {net.latent_dim} values, got {got}")
    z = None if z is None else z.reshape(1, -1).to(x)
    x = x.flatten(1).clone().requires_grad_(True)
    with torch.enable_grad():
        out = net.logits(x, z).flatten(1)[0, patch_units(net, o, out=True)].sum()
        (grad,) = torch.autograd.grad(out, x)
    attr = (grad * x.detach()).abs()[0]
    scores = attr.new_zeros(net.n_patches).index_add_(0, net.layers[0].deg_in, attr)
    return (scores / scores.max() if scores.max() > 0 else scores).cpu()


def importance_overlay(image, target_patch: int, patches, scores, patch_size: int, cmap: str = "cool",
                       alpha: float = 0.6) -> torch.Tensor:
    """RGB (3, H, W): the image in grey, the target patch white, each listed patch tinted by cmap(score).
    The tint is blended (alpha) with the grey so that the digit stays visible under it."""
    grey = image.detach().float().cpu().reshape(-1, *image.shape[-2:]).mean(0).clamp(0, 1)
    rgb = grey.expand(3, -1, -1).clone()
    per_row = grey.shape[1] // patch_size
    colours = matplotlib.colormaps[cmap]

    def region(k):
        r, c = divmod(int(k), per_row)
        return slice(r * patch_size, (r + 1) * patch_size), slice(c * patch_size, (c + 1) * patch_size)

    for j, s in zip(torch.as_tensor(patches).tolist(), torch.as_tensor(scores).tolist()):
        rows, cols = region(j)
        tint = torch.tensor(colours(float(s))[:3])[:, None, None]
        rgb[:, rows, cols] = (1 - alpha) * rgb[:, rows, cols] + alpha * tint
    rows, cols = region(target_patch)
    rgb[:, rows, cols] = 1.0
    return rgb
