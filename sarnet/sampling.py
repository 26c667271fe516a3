"""Autoregressive generation for SarNET models: the reference (naive) sampler, the exact fast sampler,
completion, interpolation and the reference's regression scheme for simple SarNET.

Both samplers fill an image patch by patch in raster order; patches < `start` are given and kept bit-exact.
- naive: one full forward pass per generated patch, as the reference does (48 passes for 49 patches in "given"
  mode, where patch 0 is never predicted; 49 in "predicted" mode).
- fast:  every unit of every layer is computed exactly once, in degree order. Units are permuted so that degree
  (patch index) is sorted; then the rows of patch k only read a *prefix* of the columns, whose length comes from
  the layer's own mask. Each step is one small matmul per layer, and z's contribution is computed once per image.

dtype="bfloat16" (`sample.dtype`) runs the matmuls in bf16, where the machine has fast bf16 units (AVX512-BF16 or
AMX CPUs, Ampere-or-newer GPUs): no longer exact, so it has its own tolerance test against float32
(tests/test_bf16.py). The fast sampler runs its large matmuls (z's term, the flushes) in bf16 and adds them to
float32 pre-activations; the other paths run under torch.autocast. "float32" (the default) is the exact path, in the
weights' own dtype (float64 for a .double() net).
"""

from dataclasses import asdict
from typing import NamedTuple

import torch

from sarnet.nn import SarNet, to_grayscale
from sarnet.settings import COMPLETE_Z_SCALE, DTYPES, MAX_IMAGES, SampleSettings

DEFAULTS = SampleSettings()  # the defaults of the functions below that take single settings

# bf16 against float32 fast sampling of one model on the same draws: the mean |pixel difference| stays below this
# (measured 5e-4 on a trained SarNET-VAE L=128, th 0.105; tests/test_bf16.py and sarnet gpu-check check it).
BF16_SAMPLE_BOUND = 2e-3


def matmul_dtype(dtype) -> torch.dtype | None:
    """sample.dtype (a name or a torch dtype; None = float32) -> None (the exact path, in the weights' own dtype) or
    torch.bfloat16."""
    name = "float32" if dtype is None else str(dtype).removeprefix("torch.")
    if name not in (*DTYPES, "float64"):
        raise ValueError(f"dtype={dtype!r}: must be one of {list(DTYPES)} (float32: the exact samplers, in the "
                         f"weights' own dtype; bfloat16: bf16 matmuls)")
    return torch.bfloat16 if name == "bfloat16" else None


def autocast(device, dtype):
    """Autocast to `dtype` (bf16) for the paths without their own bf16 code; a no-op context for None."""
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def check_model(model, generator=None, name="model"):
    """A call's model and generator, else one TypeError naming the argument (a checkpoint's path is not a model)."""
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "ar_net"):
        raise TypeError(f"{name}: expected a sarnet network (SarNet, SarNetVAE, ConvVAE or a net of their interface), "
                        f"got {type(model).__name__}; a checkpoint or run dir: sarnet.checkpoint.load_model(path); a "
                        f"SarnetModule: its .net")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected None or a torch.Generator, e.g. torch.Generator().manual_seed(0), got "
                        f"{type(generator).__name__}")


def check_images(model, x, name="x", n=None):
    """x: a float tensor of (n, or any number of) images of the model's shape, else one ValueError naming it."""
    want = tuple(model.image_shape)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or tuple(x.shape[1:]) != want or \
            n is not None and len(x) != n:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a float tensor of shape ({n or 'B'}, {', '.join(map(str, want))}), got "
                         f"{got}")


def decoder_of(model, name="model") -> SarNet:
    check_model(model, name=name)
    if model.ar_net is not None:
        return model.ar_net
    raise TypeError(f"{type(model).__name__} is not autoregressive: completion, importance and patch-wise "
                    f"sampling need a SarNet or SarNetVAE")


def patch_units(net: SarNet, k: int, out: bool = False) -> torch.Tensor:
    """Flat (C, H, W) indices of the pixels of image patch k (all channels), in the image or (out) in the logits."""
    degrees = net.layers[-1].deg_out if out else net.layers[0].deg_in
    return (degrees == k).nonzero().squeeze(1)


def keep_mask(net: SarNet, keep) -> torch.Tensor:
    """Boolean (P,) of given patches, from an int (the first k patches) or a (P,) bool of any patch-aligned region.
    In "given" mode patch 0 is always given: the reference network copies it instead of predicting it."""
    if isinstance(keep, torch.Tensor) and keep.ndim == 0:
        keep = keep.item()
    if isinstance(keep, torch.Tensor):
        # a 0/1 integer tensor is read as the mask it spells, not refused by a dtype error deep in the sampler
        if keep.shape != (net.n_patches,) or keep.is_floating_point() or \
                keep.dtype != torch.bool and not ((keep == 0) | (keep == 1)).all():
            raise ValueError(f"keep: a tensor must be a ({net.n_patches},) bool (or 0/1 int) mask of given patches,"
                             f" got {keep.dtype} of shape {tuple(keep.shape)}; or pass an int count")
        known = keep.bool().clone().cpu()
    else:
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int)):
            raise ValueError(f"keep={keep!r}: must be an int count of first patches or a bool mask")
        k = int(keep or 0)
        if not 0 <= k <= net.n_patches:
            raise ValueError(f"keep={k} patches: must be in 0..{net.n_patches}")
        known = torch.arange(net.n_patches) < k
    if net.first_patch == "given":
        known[0] = True
    return known


def threshold(value, th):
    """Pixels < th -> 0 (th None: none), the reference's threshold on generated pixels, wherever they are made."""
    return value if th is None else torch.where(value < th, torch.zeros_like(value), value)


def _finish(net: SarNet, logits, th, mode, temperature, uniforms):
    """Turn output logits of some pixels into written pixel values (mean or a Bernoulli draw, then threshold; or a
    categorical draw). logits: (B, units) of whole patches in flattened (C, H, W) order, i.e. channel-major: all
    pixels of channel 0, then of channel 1, ... (what both samplers pass). uniforms: one per written value."""
    if mode == "categorical":
        one_hot = _categorical(logits, net.out_shape[0], temperature, uniforms)
        if not net.one_hot_input:  # a probability net reads grey levels: write class c of C as c / (C - 1)
            return to_grayscale(net, one_hot.view(logits.shape[0], net.out_shape[0], -1)).flatten(1)
        return one_hot
    if mode == "bernoulli":
        return (uniforms < torch.sigmoid(logits / temperature)).to(logits.dtype)
    return threshold(net.activate(logits).clamp(0, 1), th)


def _categorical(logits, classes, temperature, uniforms):
    """One-hot draws from softmax(logits / T) over the `classes` channels of every pixel (the classification
    SarNET). Inverse CDF with one given uniform per pixel (the first H*W of those given: channel 0's of a one-hot
    image), so that the naive and the fast sampler draw alike: class = the number of cumulative probabilities (all
    but the last, which is 1) <= u."""
    batch = logits.shape[0]
    probs = torch.softmax(logits.reshape(batch, classes, -1) / temperature, dim=1)
    u = uniforms[:, :probs.shape[2]].unsqueeze(1)
    level = (probs.cumsum(1)[:, :-1] <= u).sum(1, keepdim=True)
    classes_ = torch.arange(classes, device=logits.device)[None, :, None]
    return (classes_ == level).to(logits.dtype).reshape(batch, -1)


def _draw(net, th, mode, temperature) -> SampleSettings:
    """A filler's settings, checked: their ranges, and the draw's fit to the net's output (SampleSettings' rule)."""
    return SampleSettings(th=th, mode=mode, temperature=temperature).check_fits(net.out_activation)


def _check_uniforms(x, uniforms):
    want = (x.shape[0], x[0].numel())
    if uniforms is not None and not (isinstance(uniforms, torch.Tensor) and uniforms.is_floating_point() and
                                     tuple(uniforms.shape) == want):
        got = f"{uniforms.dtype} {tuple(uniforms.shape)}" if isinstance(uniforms, torch.Tensor) else type(uniforms)
        raise ValueError(f"uniforms: expected a float tensor of shape {want} (one per value of every image), "
                         f"got {got}")


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: must be a positive int")
    if value > MAX_IMAGES:
        raise ValueError(f"{name}={value}: at most {MAX_IMAGES} images in one call (settings.MAX_IMAGES; they are "
                         f"returned as one tensor): ask for more in several calls")


def _check_inputs(net: SarNet, x, z):
    """The images and latents a filler gets: clear errors instead of a raw matmul or dtype failure."""
    check_images(net, x)
    latent = net.latent_dim
    if not latent:
        if z is not None:
            raise ValueError(f"z given but this {type(net).__name__} has no latent (latent_dim=0): pass z=None")
        return
    if z is None:
        raise ValueError(f"this net has latent_dim={latent}: pass z of shape (B, {latent})")
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != latent or z.shape[0] != x.shape[0]:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"z: expected shape ({x.shape[0]}, {latent}) (one row per image, latent_dim={latent}), "
                         f"got {shape}")
    if not torch.isfinite(z).all():
        raise ValueError("z holds NaN or infinite values")


@torch.no_grad()
def fill_naive(net: SarNet, x, z=None, keep=0, th=None, mode=DEFAULTS.mode, temperature=DEFAULTS.temperature,
               uniforms=None, dtype=None):
    """Reference sampler: one full forward pass per patch to generate. x: (B, C, H, W) holding the given patches.
    dtype="bfloat16": the passes under autocast, pixels written in x's dtype."""
    _draw(net, th, mode, temperature)
    _check_inputs(net, x, z)
    _check_uniforms(x, uniforms)
    known = keep_mask(net, keep)
    low = matmul_dtype(dtype)
    x = x.clone().flatten(1)
    for k in (~known).nonzero().squeeze(1).tolist():
        with autocast(x.device, low):
            logits = net.logits(x, z).flatten(1).to(x.dtype)
        idx = patch_units(net, k)
        u = None if uniforms is None else uniforms[:, idx]
        x[:, idx] = _finish(net, logits[:, patch_units(net, k, out=True)], th, mode, temperature, u)
    return x.view(-1, *net.image_shape)


class SortedLayer(NamedTuple):
    """One SemiDense layer with its units sorted by degree (patch index). rows[k] = (r0, r1, ncols): patch k's
    output rows r0:r1 read the first ncols sorted inputs; in_ends[k] = the number of sorted inputs of degree <= k."""
    weight: torch.Tensor  # (out, in_image) masked image weights, rows and columns sorted
    rows: list
    in_ends: list
    w_z: torch.Tensor  # z's columns, rows sorted
    bias: torch.Tensor
    perm_in: torch.Tensor
    perm_out: torch.Tensor


def _sorted_layers(net: SarNet, dtype=None) -> tuple[list[SortedLayer], list[SortedLayer]]:
    """Per layer: units sorted by degree, so that the rows of patch k read only a prefix of the (sorted) inputs;
    the prefix length comes from the layer's own mask. Kept on the net, with a copy of the weights it was made
    from, until a weight changes: FID generates in many small calls. The copy is compared, not the tensors'
    version counters, which fused Adam's in-place step leaves unchanged (a stale sort would sample old weights).
    Returns the layers and the same with their matmul weights in `dtype` (bf16; None: the same list), both checked
    by one comparison.
    """
    params = [t for layer in net.layers for t in (layer.weight, layer.bias)]
    cached = getattr(net, "_sorted_cache", None)
    if cached is None or not all(a.shape == b.shape and a.device == b.device and a.dtype == b.dtype and
                                 torch.equal(a, b) for a, b in zip(cached[0], params, strict=True)):
        out = []
        for layer in net.layers:
            w = layer.weight * layer.mask  # not masked_weight(): under an autocast it would be bf16
            perm_in = torch.argsort(layer.deg_in, stable=True)
            perm_out = torch.argsort(layer.deg_out, stable=True)
            mask = layer.mask[perm_out][:, perm_in]
            ends = torch.bincount(layer.deg_out, minlength=layer.n_patches).cumsum(0).tolist()
            rows = [(ends[k - 1] if k else 0, r1, int(mask[r1 - 1].sum())) for k, r1 in enumerate(ends)]
            in_ends = torch.bincount(layer.deg_in, minlength=layer.n_patches).cumsum(0).tolist()
            out.append(SortedLayer(w[perm_out][:, perm_in].contiguous(), rows, in_ends,
                                   w[perm_out, layer.in_image:], layer.bias[perm_out], perm_in, perm_out))
        cached = net._sorted_cache = ([t.detach().clone() for t in params], {None: out})
    by_dtype = cached[1]
    if dtype not in by_dtype:
        by_dtype[dtype] = [layer._replace(weight=layer.weight.to(dtype), w_z=layer.w_z.to(dtype))
                           for layer in by_dtype[None]]
    return by_dtype[None], by_dtype[dtype]


# Sorted inputs summed into the pre-activations of all later rows at once, when at least this many are pending.
# Without it every step re-reads its whole input prefix (memory-bound: pixel-wise models read ~P^2/2 columns).
FLUSH_COLUMNS = 128


@torch.no_grad()
def fill_fast(net: SarNet, x, z=None, keep=0, th=None, mode=DEFAULTS.mode, temperature=DEFAULTS.temperature,
              uniforms=None, dtype=None):
    """Exact fast sampler: same images as `fill_naive` (up to float summation order), one pass over the units.

    Activations are kept feature-major, (units, batch), so that a patch's units are contiguous rows. Each layer
    keeps the pre-activations `acc` of its rows: bias and z's term once per image, then the inputs that are final
    are added into every later row in one matmul once FLUSH_COLUMNS of them are pending. Step k then computes
    patch k's rows from `acc` and the few pending inputs only.

    dtype="bfloat16": z's term and the flushes, the large matmuls (~all of the FLOPs at 4x4 patches), read bf16
    weights and inputs, and their products are added to `acc` in x's dtype; the steps' small matmuls (a patch's
    few rows) stay in x's dtype, where bf16 kernels are no faster (pixel-wise: 3x slower, measured)."""
    _draw(net, th, mode, temperature)
    _check_inputs(net, x, z)  # z=None on a latent net would silently mean z = 0 here
    _check_uniforms(x, uniforms)
    low = matmul_dtype(dtype)
    known = keep_mask(net, keep).tolist()
    layers, wide = _sorted_layers(net, low)  # wide: the weights of the flushes and of z's term
    perm = layers[0].perm_in
    # Patch k's inputs (sorted: rows in0:in1 of xs) are written from the last layer's patch-k rows r0:r1 (the same
    # rows, unless a probability net's C output channels fill 1 grey channel).
    in_rows = list(zip([0, *layers[0].in_ends], layers[0].in_ends))
    batch = x.shape[0]
    # the image, sorted by degree: (units, batch); a row gather of the transpose (7x faster than x[:, perm].T)
    xs = x.flatten(1).T.index_select(0, perm)
    us = None if uniforms is None else uniforms.T.index_select(0, perm)
    acc = [layer.bias[:, None].expand(-1, batch).clone() if z is None else
           _wide(layer.bias[:, None], w.w_z, z.T) for layer, w in zip(layers, wide)]
    hidden = [xs.new_empty(len(layer.perm_out), batch) for layer in layers[:-1]]
    inputs = [xs, *hidden]
    flushed = [0] * len(layers)  # per layer: sorted inputs already in `acc` (of every row not yet computed)
    last = len(layers) - 1
    for k in range(net.n_patches):
        for i, layer in enumerate(layers):
            r0, r1, ncols = layer.rows[k]
            f, h = flushed[i], inputs[i]
            if i < last:
                rows = hidden[i][r0:r1]
                torch.addmm(acc[i][r0:r1], layer.weight[r0:r1, f:ncols], h[f:ncols], out=rows)
                rows.relu_()
            elif not known[k]:
                pre = torch.addmm(acc[i][r0:r1], layer.weight[r0:r1, f:ncols], h[f:ncols])
                # (units, batch) here: _finish takes (batch, units), as the naive sampler passes them
                in0, in1 = in_rows[k]
                u = None if us is None else us[in0:in1].T
                xs[in0:in1] = _finish(net, pre.T, th, mode, temperature, u).T
        # Every input of degree <= k is final now (patch k of every layer is written): flush the pending ones.
        for i, layer in enumerate(layers):
            f, end, r1 = flushed[i], layer.in_ends[k], layer.rows[k][1]
            if end - f >= FLUSH_COLUMNS and r1 < len(layer.perm_out):
                _wide(acc[i][r1:], wide[i].weight[r1:, f:end], inputs[i][f:end], into=True)
                flushed[i] = end
    out = torch.empty_like(xs)
    out[perm] = xs
    return out.T.reshape(-1, *net.image_shape)


def _wide(acc, w, h, into=False):
    """acc + w @ h in acc's dtype (into: added into acc): one addmm. With bf16 weights w the matmul runs in bf16;
    its product is added into acc, or (z's term, once per image) the whole sum is taken in bf16 and cast: torch
    has no bf16 x bf16 -> float32 matmul on CPU, and a mixed-dtype add of a fresh tensor costs a pass more."""
    if w.dtype == acc.dtype:
        return acc.addmm_(w, h) if into else torch.addmm(acc, w, h)
    if into:
        return acc.add_(w @ h.to(w.dtype))
    return torch.addmm(acc.to(w.dtype), w, h.to(w.dtype)).to(acc.dtype)


FILLERS = {"fast": fill_fast, "naive": fill_naive}


def _batches(n, batch_size):
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))


def draw_z(model, n, z_scale=DEFAULTS.z_scale, generator=None, device="cpu", dtype=torch.float32):
    latent = model.latent_dim
    if not latent:
        return None
    # drawn in float32 on the CPU whatever the net's device and dtype: the same z everywhere
    return (torch.randn(n, latent, generator=generator) * z_scale).to(device, dtype)


@torch.no_grad()
def generate(model, n=None, z=None, x=None, keep=0, generator=None, progress=None, **settings):
    """Generate n images (or one per row of z) from scratch, or complete `x` keeping `keep` patches.

    settings: SampleSettings' fields (method, th, z_scale, mode, temperature, batch_size, dtype); the defaults for
    those not given. z ~ N(0, z_scale^2 I) unless given. Works for SarNet, SarNetVAE (threshold `th` on generated
    pixels, None for no threshold) and ConvVAE (decode(z), `th` applied too if given; the reference used none for
    the VAE). mode="bernoulli" (sigmoid-output models, e.g. trained on binarized data) draws every pixel from
    Bernoulli(sigmoid(logit / temperature)) instead of writing its mean; `th` is then not used.
    mode="categorical" (softmax nets, the classification SarNET) draws every pixel's class from
    softmax(logits / temperature) and writes it one-hot: (n, C, H, W); `to_grayscale` makes images of them.
    progress(k), if given, hears of every k images done.
    dtype: "float32" (the exact samplers) or "bfloat16" (bf16 matmuls; images in the weights' dtype).
    """
    check_model(model, generator)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress: expected None or a function of the images done, got {type(progress).__name__}")
    s = SampleSettings.of(**settings).check_fits(model.out_activation)
    low = matmul_dtype(s.dtype)
    n = _count_images(model, n, z, x)
    was_training = model.training
    model.eval()
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype  # a .double() net: float64
    z = draw_z(model, n, s.z_scale, generator, device, dtype) if z is None else z.to(device, dtype)
    try:
        if model.ar_net is None:  # the conv VAE: one decoder pass
            with autocast(device, low):
                logits = model.decoder(z).to(dtype)
            if s.mode == "bernoulli":  # pixels are independent given z: one draw each, uniforms from `generator`
                u = torch.rand(logits.shape, generator=generator).to(device, dtype)
                return (u < torch.sigmoid(logits / s.temperature)).to(logits.dtype)
            return threshold(torch.sigmoid(logits), s.th)  # model.decode(z)
        return _fill_batches(decoder_of(model), n, z, x, keep, s, low, generator, progress)
    finally:
        model.train(was_training)


def _count_images(model, n, z, x) -> int:
    """The number of images asked for, by n, z or x; they must agree, and z must fit the model."""
    if n is not None:
        _check_count("n", n)
    if x is not None:
        check_images(model, x)
    rows = {name: t.shape[0] for name, t in (("z", z), ("x", x)) if isinstance(t, torch.Tensor) and t.ndim >= 1}
    if n is not None:
        rows["n"] = n
    if len(set(rows.values())) > 1:  # never silently fewer images than asked for
        raise ValueError(f"n, z and x disagree on the number of images: {rows}")
    if z is not None:
        latent = model.latent_dim
        if not latent or not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != latent:
            raise ValueError(f"z: expected shape (n, {latent}) for this {type(model).__name__} (latent_dim="
                             f"{latent}), got {tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        if not torch.isfinite(z).all():
            raise ValueError("z holds NaN or infinite values")
    count = n if n is not None else z.shape[0] if z is not None else x.shape[0] if x is not None else None
    if count is None:
        raise ValueError("generate needs n, z or x")
    _check_count("rows of z or x" if n is None else "n", count)
    return count


def _fill_batches(net: SarNet, n, z, x, keep, s: SampleSettings, low, generator, progress):
    """generate's autoregressive part: the images filled by s.method's filler, s.batch_size at a time."""
    device, dtype = next(net.parameters()).device, next(net.parameters()).dtype
    if x is None:
        x = torch.zeros(n, *net.image_shape, device=device, dtype=dtype)
        if net.one_hot_input:  # black one-hot (class 0) images, as the data's patch 0 always is
            x[:, 0] = 1
    x = x.to(device, dtype)  # float images (check_images): in the net's dtype
    draws = s.mode in ("bernoulli", "categorical")
    uniforms = torch.rand(n, x[0].numel(), generator=generator).to(device, dtype) if draws else None
    fill, parts = FILLERS[s.method], []
    for b in _batches(n, s.batch_size):
        with autocast(device, None):  # an autocast around generate() leaves the exact path exact
            parts.append(fill(net, x[b], None if z is None else z[b], keep, s.th, s.mode, s.temperature,
                              None if uniforms is None else uniforms[b], low))
        if progress is not None:
            progress(len(parts[-1]))
    return torch.cat(parts)


@torch.no_grad()
def complete(model, images, keep, n=8, z_scale=COMPLETE_Z_SCALE, th=None, generator=None, **kw):
    """n completions of every image: (B, n, C, H, W). Given patches are kept bit-exact."""
    net = decoder_of(model)
    check_images(net, images, "images")
    _check_count("n", n)
    _check_count("len(images) x n", len(images) * n)
    known = keep_mask(net, keep)
    masked = images.clone()
    for k in (~known).nonzero().squeeze(1).tolist():
        masked.flatten(1)[:, patch_units(net, k).to(images.device)] = 0
    x = masked.repeat_interleave(n, dim=0)
    out = generate(model, x=x, keep=known, z_scale=z_scale, th=th, generator=generator, **kw)
    return out.view(images.shape[0], n, *images.shape[1:]), masked


@torch.no_grad()
def interpolate(model, a, b, steps=10, use_mean=True, th=None, generator=None, **kw):
    """Encode images a and b (1, C, H, W), walk z linearly from one to the other in `steps`, generate each."""
    check_model(model, generator)
    _check_count("steps", steps)
    if not hasattr(model, "encoder"):
        raise ValueError(f"interpolation needs a model with an encoder; {type(model).__name__} has none")
    for name, image in (("a", a), ("b", b)):
        check_images(model, image, name, n=1)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    mu, logvar = model.encoder(torch.cat([a, b]).to(device, dtype))
    if use_mean:
        z = mu
    else:
        noise = torch.randn(mu.shape, generator=generator).to(device)
        z = mu + noise * torch.exp(0.5 * logvar)
    t = torch.linspace(0, 1, steps, device=device)[:, None]
    return generate(model, z=z[0] + t * (z[1] - z[0]), th=th, generator=generator, **kw)


@torch.no_grad()
def generate_regression(net: SarNet, n, alpha_max, p, th, refine, generator=None, method=DEFAULTS.method,
                        progress=None, dtype=None):
    """The reference's generation for simple (regression) SarNET (docs/reference.md §3), kept as the reference wrote it.

    Per image: alpha = alpha_max * U[0,1]; a fixed noise vector |N(0, I)| * alpha (half-normal: non-negative,
    although the thesis writes N(0, alpha^2)). At step idx the pixels of patch idx and each earlier patch
    r in 1..idx (with probability p) get the noise added (not clipped: the reference's clip was a no-op); one
    forward pass; output patch idx+1 is clipped (< th -> 0, > 1 -> 1) and written into the clean image. `refine`
    re-runs the finished image once, clips, and puts back the first non-empty generated patch.

    method="naive" runs the whole net at every step, as the reference. "fast" gives the same images (up to float
    summation order; tested): the noisy input changes at every step, so nothing carries over from step to step as
    in `fill_fast`, but step idx only needs the units of degree <= idx + 1: with units sorted by degree, a prefix
    block of every layer's weights (and of the last layer only patch idx+1's rows), ~1/3 of the naive's work.
    progress(k), if given, hears of k images' worth of work after each step (n in all).
    dtype="bfloat16": the passes under autocast, the image kept in the weights' dtype.
    """
    check_model(net, generator, "net")
    SampleSettings(method=method, th=th, regression={"alpha_max": alpha_max, "p": p, "refine": refine})  # ranges
    low = matmul_dtype(dtype)
    if net.latent_dim:  # the scheme has no z to give (the fast path would run as if z = 0)
        raise ValueError(f"the noisy regression scheme is for simple SarNET (no latent); this net has latent_dim="
                         f"{net.latent_dim}: use generate()")
    _check_count("n", n)
    was_training = net.training
    net.eval()
    try:
        x, first_idx, first_val = _noisy_steps(net, n, alpha_max, p, th, generator, method, progress, low)
        units = net.layers[0].deg_in.to(x.device)
        if refine:
            with autocast(x.device, low):
                x = threshold(net.logits(x).flatten(1).to(x.dtype).clamp(0, 1), th)
            for i in (first_idx >= 0).nonzero().squeeze(1).tolist():
                x[i, units == first_idx[i]] = first_val[i]
    finally:
        net.train(was_training)
    return x.view(-1, *net.image_shape)


def _noisy_steps(net: SarNet, n, alpha_max, p, th, generator, method, progress, low):
    """generate_regression's steps -> (the (n, units) images in unit order, per image the first non-empty
    generated patch (-1: none) and its pixels)."""
    device, dtype = next(net.parameters()).device, next(net.parameters()).dtype
    P, units = net.n_patches, net.layers[0].deg_in.to(device)
    alpha = alpha_max * torch.rand(n, 1, generator=generator)
    noise = (torch.randn(n, units.numel(), generator=generator).abs() * alpha).to(device, dtype)
    x = torch.zeros(n, units.numel(), device=device, dtype=dtype)
    layers = None
    if method == "fast":  # work on degree-sorted units: patch k's units, and all before them, are prefixes
        layers, _ = _sorted_layers(net)
        perm = layers[0].perm_in
        units, noise = units[perm], noise[:, perm]
    first_idx = torch.full((n,), -1, dtype=torch.long, device=device)
    first_val = torch.zeros(n, (units == 0).sum(), device=device, dtype=dtype)
    for idx in range(P - 1):
        noisy_patches = torch.rand(n, P, generator=generator).to(device) < p
        noisy_patches[:, 0] = False
        noisy_patches[:, idx + 1:] = False
        noisy_patches[:, idx] = True
        width = layers[0].rows[idx + 1][2] if layers else units.numel()  # the inputs patch idx+1 reads
        noisy = noisy_patches.gather(1, units[:width].expand(n, -1))
        cols = units == idx + 1
        with autocast(device, low):
            out = _predict(net, layers, units, x[:, :width] + noise[:, :width] * noisy, idx + 1)
        x[:, cols] = threshold(out.to(dtype).clamp(0, 1), th)  # the reference's clip
        new = (first_idx < 0) & (x[:, cols].sum(1) > 0.05)
        first_idx[new] = idx + 1
        first_val[new] = x[new][:, cols]
        if progress is not None:
            progress(n / (P - 1))
    if layers:  # back to the image's own unit order
        x = torch.empty_like(x).index_copy_(1, perm, x)
    return x, first_idx, first_val


def _predict(net: SarNet, layers, units, v, k):
    """Output patch k of the net at input v: (n, units of patch k). layers None: a whole pass (naive); else the
    degree-sorted layers, of which patch k needs every row of degree <= k, and of the last layer patch k's rows."""
    if layers is None:
        return net.logits(v).flatten(1)[:, units == k]
    h = v
    for i, layer in enumerate(layers):
        r0, r1, ncols = layer.rows[k]
        if i < len(layers) - 1:  # every row of degree <= k: the later layers' patch-k rows read them
            r0 = 0
        h = torch.addmm(layer.bias[r0:r1], h[:, :ncols], layer.weight[r0:r1, :ncols].T)
        if i < len(layers) - 1:
            h.relu_()
    return h


def sample_images(model, n, settings=None, generator=None, z=None, progress=None):
    """Generate n grey images (n, 1, H, W) in [0, 1] as `settings` say (a SampleSettings, or the `sample` config
    node or a dict of its fields): the one entry point used by the image callback, FID and sarnet sample. Regression
    SarNET (linear output, no latent) uses the reference's noisy scheme; a classification SarNET draws one-hot
    classes, returned as grey levels. progress(k): as generate's."""
    check_model(model, generator)
    s = settings if isinstance(settings, SampleSettings) else SampleSettings.of(settings)
    if model.out_activation == "none":  # regression SarNET (linear output)
        if s.regression is None:
            raise ValueError("regression=None: a regression SarNet (linear output) samples by the reference's noisy "
                             "scheme, which needs {'alpha_max', 'p', 'refine'} (e.g. conf/recipe/sarnet.yaml's 0.65, "
                             "0.3, True)")
        return generate_regression(model, n, th=s.th, generator=generator, method=s.method, progress=progress,
                                   dtype=s.dtype, **s.regression)
    kw = {k: v for k, v in asdict(s).items() if k != "regression"}
    images = generate(model, n=n, z=z, generator=generator, progress=progress, **kw)
    return to_grayscale(model, images)
