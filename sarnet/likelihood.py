"""SarNET as a density model: exact NLL, ELBO and importance-weighted (IWAE) bounds, nats and bits/dim.

- SarNet, strict (`first_patch=predicted`), sigmoid output, binary x: log p(x) = sum over pixels of the Bernoulli
  log-likelihood of x given the logits of one teacher-forced pass. Output patch k reads input patches < k only
  (the masks, tested by gradients in tests/test_semidense.py), so the product of the per-pixel terms is a
  normalised distribution over binary images (tests/test_likelihood.py sums it over every image of tiny models).
- SarNetVAE (strict) and ConvVAE: log p(x|z) is the same Bernoulli sum given z (an exact autoregressive
  likelihood for SarNET-VAE), and with z_i ~ q(z|x) and log w_i = log p(x|z_i) + log N(z_i; 0, I) - log q(z_i|x):
      ELBO    = E_q[log p(x|z)] - KL(q || N(0, I))                (mean over the k draws, analytic KL)
      IWAE_k  = log (1/k) sum_i w_i  <= log p(x)                  (Burda et al.; IWAE_1 = ELBO in expectation)
  Every log-density term is accumulated in float64 and the k weights meet in a float64 logsumexp.
  Any q gives a valid bound, so q(z|x) may also be the encoder's output refined per test image by gradient steps
  on that image's ELBO (`refine_posterior`): the same model, a tighter bound (the encoder's amortization gap closed).
- Refused, one line each: `first_patch=given` (patch 0 is copied from the input, not modelled, so there is no
  density), a non-sigmoid output (a regression SarNet), and data that is not 0/1.

Bits/dim = nats / (D ln 2), D = pixels per image (784 for MNIST).
"""

import hashlib
import io
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sarnet.io import atomic_write
from sarnet.losses import kl_divergence
from sarnet.nn import SarNet
from sarnet.progress import Progress
from sarnet.sampling import check_images, check_model, patch_units
from sarnet.settings import MAX_BATCH


class LikelihoodError(ValueError):
    """A model or data that has no likelihood here: one line saying why and what to change."""


# ------------------------------------------------------------------------------------------- refusals

def check_density_model(model):
    """Raise LikelihoodError unless `model` defines a normalised Bernoulli density (or a bound on one)."""
    net = model.ar_net
    if net is None:  # the conv VAE: a Bernoulli decoder given z, bounded by the ELBO / IWAE
        return
    if net.first_patch != "predicted":
        raise LikelihoodError(f"likelihood is undefined for model.net.first_patch={net.first_patch!r}: patch 0 "
                              f"is copied from the input, not modelled; train with model.net.first_patch=predicted")
    if net.out_activation != "sigmoid":
        raise LikelihoodError(f"likelihood needs Bernoulli outputs, but model.net.out_activation="
                              f"{net.out_activation!r}; train with model.net.out_activation=sigmoid and loss=bce")


def check_setup(model, data):
    """A run's likelihood.enabled=true, refused before any work (validate asks here): the model defines a density,
    and the data module gives binary images."""
    check_density_model(model)
    if data.binarize == "none" and data.static_dir is None:
        raise LikelihoodError("data.binarize='none' has no Bernoulli likelihood (grey levels): use "
                              "data.binarize=dynamic or data.static_dir")


def check_binary(x: torch.Tensor, what: str = "the data"):
    if not ((x == 0) | (x == 1)).all():
        raise LikelihoodError(f"{what} is not binary (values other than 0 and 1): a Bernoulli likelihood needs "
                              f"data.binarize=dynamic (or static, or data.static_dir)")


# ----------------------------------------------------------------------------------------- log-densities

def log_bernoulli(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum over pixels of log Bernoulli(x | sigmoid(logits)), per image, float64: (B,)."""
    return -F.binary_cross_entropy_with_logits(logits.flatten(1), x.flatten(1), reduction="none").double().sum(1)


def log_normal(z: torch.Tensor, mu=None, logvar=None) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over dims, float64: (B,). mu/logvar None = standard normal."""
    z = z.double()
    if mu is None:
        return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
    mu, logvar = mu.double(), logvar.double()
    return -0.5 * ((z - mu).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(1)


def decoder_logits(model, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """Logits of p(x | z) (teacher-forced on x for the autoregressive models); z may hold several draws per image
    of x, consecutive (see SemiDense.forward)."""
    if model.ar_net is None:  # the conv VAE
        return model.decoder(z)
    return model.ar_net.logits(x, z)


@torch.no_grad()
def exact_log_prob(net: SarNet, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x) (or log p(x | z) for a SarNet with a latent), nats per image, float64: one teacher-forced pass."""
    _check_sarnet(net, x, "exact_log_prob")
    return log_bernoulli(net.logits(x, z), x)


def _check_sarnet(net, x, name: str):
    check_model(net, name="net")
    if net.ar_net is not net:
        raise LikelihoodError(f"{name} is for a SarNet; a {type(net).__name__} has bounds: use score")
    check_density_model(net)
    check_images(net, x)


@torch.no_grad()
def naive_log_prob(net: SarNet, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
    """The same quantity as the naive sampler computes it: for each patch k, one full pass over an image that
    holds only patches < k (zeros elsewhere, as `fill_naive` sees it before writing patch k); the log-probability
    of x's patch k under that pass. The specification of `exact_log_prob` (tested equal)."""
    _check_sarnet(net, x, "naive_log_prob")
    flat = x.flatten(1)
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    prefix = torch.zeros_like(flat)
    for k in range(net.n_patches):
        idx = patch_units(net, k).to(x.device)
        logits = net.logits(prefix.view_as(x), z).flatten(1)[:, idx]
        total += log_bernoulli(logits, flat[:, idx])
        prefix[:, idx] = flat[:, idx]  # patch k is now given, as the sampler would have written it
    return total


REFINE_LR = 1e-2  # Adam's lr for refine_posterior: at most ~lr per step, so up to ~1 unit of z in 100 steps


def refine_posterior(model, x: torch.Tensor, steps: int, lr: float = REFINE_LR,
                     generator: torch.Generator | None = None, batch_size: int = 1000,
                     progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z|x) = N(mu, exp(logvar)) fitted to each image: the encoder's output, then `steps` Adam steps on the image's
    negative ELBO (one reparameterised draw per step, from `generator`; the model's weights are not touched).
    Adam's state is per element, so an image's q follows its own gradients only. -> (mu, logvar), detached."""
    mus, logvars = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        mu, logvar = (t.detach().clone().requires_grad_() for t in model.encoder(xb))
        opt = torch.optim.Adam([mu, logvar], lr=lr)
        for _ in range(steps):
            eps = torch.randn(mu.shape, generator=generator).to(mu.device, mu.dtype)
            with torch.enable_grad():
                z = mu + eps * torch.exp(0.5 * logvar)
                kl = kl_divergence(mu, logvar).sum()
                nelbo = F.binary_cross_entropy_with_logits(decoder_logits(model, xb, z).flatten(1), xb.flatten(1),
                                                           reduction="sum") + kl
                mu.grad, logvar.grad = torch.autograd.grad(nelbo, [mu, logvar])  # not the weights' gradients
            opt.step()
        mus.append(mu.detach())
        logvars.append(logvar.detach())
        if progress is not None:
            progress.update(len(xb))
    return torch.cat(mus), torch.cat(logvars)


@torch.no_grad()
def log_weights(model, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
                batch_size: int = 1000, q=None) -> tuple[torch.Tensor, torch.Tensor]:
    """For a VAE: (log w (B, k), log p(x|z) (B, k)), float64, z_i ~ q(z|x) drawn with `generator` (on the CPU, so
    the same draws on any device). q = (mu, logvar) of x's images, or None for the encoder's. Forward passes go in
    chunks of at most `batch_size` rows: each image's k copies are rows of the same batch, and k > batch_size is
    split into several chunks of draws."""
    mu, logvar = model.encoder(x) if q is None else q
    b, latent = mu.shape
    log_w = torch.empty(b, k, dtype=torch.float64)
    log_px = torch.empty(b, k, dtype=torch.float64)
    per_chunk = max(1, batch_size // k)  # images per forward pass
    draws = min(k, batch_size)           # draws per image and pass
    for i in range(0, b, per_chunk):
        rows = slice(i, min(b, i + per_chunk))
        n = rows.stop - rows.start
        for j in range(0, k, draws):
            m = min(draws, k - j)
            eps = torch.randn(n, m, latent, generator=generator).to(mu.device, mu.dtype)
            mu_r, lv_r = mu[rows, None].expand(n, m, latent), logvar[rows, None].expand(n, m, latent)
            z = (mu_r + eps * torch.exp(0.5 * lv_r)).reshape(n * m, latent)
            xr = x[rows, None].expand(n, m, *x.shape[1:]).reshape(n * m, *x.shape[1:])
            lp = log_bernoulli(decoder_logits(model, x[rows], z), xr)  # x once per image: SemiDense.forward
            lw = lp + log_normal(z) - log_normal(z, mu_r.reshape(n * m, latent), lv_r.reshape(n * m, latent))
            log_px[rows, j:j + m] = lp.view(n, m).cpu()
            log_w[rows, j:j + m] = lw.view(n, m).cpu()
    return log_w, log_px


def iwae_from_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/k) sum_i w_i per image, float64 logsumexp."""
    return torch.logsumexp(log_w.double(), dim=1) - math.log(log_w.shape[1])


@torch.no_grad()
def vae_bounds(model, x: torch.Tensor, k: int, generator=None, batch_size: int = 1000, q=None) -> dict:
    """Per image (float64): iwae = IWAE_k, elbo = mean_i log p(x|z_i) - KL(q || p), kl. q as in log_weights."""
    log_w, log_px = log_weights(model, x, k, generator, batch_size, q)
    mu, logvar = model.encoder(x) if q is None else q
    kl = kl_divergence(mu.double(), logvar.double()).cpu()
    return {"iwae": iwae_from_log_weights(log_w), "elbo": log_px.mean(1) - kl, "kl": kl}


# ------------------------------------------------------------------------------------ test-set scoring

def summary(per_image: torch.Tensor, pixels: int) -> dict:
    """Mean NLL (nats) of per-image log-likelihoods, its standard error over images, and bits/dim."""
    nll = -per_image.double()
    n = len(nll)
    se = float(nll.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    mean = float(nll.mean())
    return {"nats": mean, "se": se, "bpd": mean / (pixels * math.log(2)), "bpd_se": se / (pixels * math.log(2))}


@torch.no_grad()
def score(model, x: torch.Tensor, k: int = 100, batch_size: int = 1000, seed: int = 0, progress: bool = False,
          resume=None, refine_steps: int = 0, refine_lr: float = REFINE_LR) -> dict:
    """Score binary images x (N, C, H, W) under `model`.

    -> {"kind": "exact" | "bound", "n_images", "pixels", "nll": {nats, se, bpd, bpd_se}} plus, for the VAEs,
    "k", "elbo": {...} (negative ELBO) and "kl" (mean nats). For the VAEs "nll" is -IWAE_k: an upper bound on the
    NLL that tightens as k grows. `seed` fixes the q(z|x) draws (a CPU generator: the same on any device).
    `refine_steps` > 0 (VAEs): q(z|x) is the encoder's output refined per image (`refine_posterior`, Adam at
    `refine_lr`) before the bounds are drawn from it; the result then has "refine": {"steps", "lr"}.

    `resume`: a file for the per-image values and the generator's state, written (atomically) at most every
    `SAVE_EVERY_S` seconds and at the end. A scoring that finds it carries on where the last one stopped, with the
    same draws, so the result equals an uninterrupted one (k = 5000 over the 10,000 test images takes hours on a
    CPU). A file written for other weights, images, k, batch_size or seed is refused. A finished file is kept: it
    holds every image's log-likelihood (for paired comparisons), and scoring again just reads it.
    """
    exact = _check_scoring(model, x, k, batch_size, seed, refine_steps, refine_lr)
    gen = torch.Generator().manual_seed(seed)
    parts, done, q, key = {"ll": [], "elbo": [], "kl": []}, 0, None, None
    if resume is not None:
        key = {"model": _fingerprint(model.state_dict().values()), "images": _fingerprint([x]),
               "k": None if exact else k, "batch_size": batch_size, "seed": seed}
        if refine_steps:  # only then: a file of an unrefined scoring keeps its key
            key["refine"] = [refine_steps, float(refine_lr)]
        done, parts, q = _load_progress(resume, key, gen, parts)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        if refine_steps and q is None:  # every image first (batch_size rows a step); saved with the progress
            bar = Progress(len(x), f"refining q(z|x), {refine_steps} steps", enabled=progress)
            q = tuple(t.cpu() for t in refine_posterior(model, x.to(device), refine_steps, refine_lr, gen,
                                                        batch_size, bar))
            bar.close()
            if resume is not None:
                _save_progress(resume, key, gen, parts, done, q)
        what = "exact NLL" if exact else f"IWAE k={k}"
        bar = Progress(len(x) - done, what if not done else f"{what}, the {len(x) - done} images left",
                       enabled=progress)
        try:
            _score_batches(model, x, None if exact else k, batch_size, gen, parts, done, q, bar, (resume, key))
        finally:
            bar.close()
    finally:
        model.train(was_training)
    pixels = x[0].numel()
    out = {"kind": "exact" if exact else "bound", "n_images": len(x), "pixels": pixels,
           "nll": summary(torch.cat(parts["ll"]), pixels)}
    if not exact:
        out.update(k=k, elbo=summary(torch.cat(parts["elbo"]), pixels), kl=float(torch.cat(parts["kl"]).mean()))
        if refine_steps:
            out["refine"] = {"steps": refine_steps, "lr": float(refine_lr)}
    return out


def _check_scoring(model, x, k, batch_size, seed, refine_steps, refine_lr) -> bool:
    """score's refusals, one line each -> whether the likelihood is exact (a SarNet; the VAEs: bounds)."""
    check_model(model)
    check_density_model(model)
    check_images(model, x)
    check_binary(x)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise LikelihoodError(f"likelihood.k={k!r} is invalid: must be an int >= 1 (importance samples per image)")
    exact = model.ar_net is model
    if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or refine_steps < 0:
        raise LikelihoodError(f"refine_steps={refine_steps!r} is invalid: must be an int >= 0 (0 = the encoder's q)")
    if refine_steps and exact:
        raise LikelihoodError("refine_steps is for the VAEs (it refines q(z|x)); SarNET's NLL is exact: use 0")
    if refine_steps and not (isinstance(refine_lr, (int, float)) and refine_lr > 0):
        raise LikelihoodError(f"refine_lr={refine_lr!r} is invalid: must be > 0")
    for name, value, low, high, allowed in (("batch_size", batch_size, 1, MAX_BATCH, f"an int in [1, {MAX_BATCH}]"),
                                            ("seed", seed, 0, 2**64 - 1, "an int >= 0")):
        if isinstance(value, bool) or not hasattr(value, "__index__") or not low <= value <= high:
            raise LikelihoodError(f"{name}={value!r} is invalid: must be {allowed}")
    if len(x) == 0:
        raise LikelihoodError("x holds no images")
    return exact


def _score_batches(model, x, k, batch_size, gen, parts, done, q, bar, resume):
    """score's loop from image `done` on: per-image values appended to `parts`; k None: exact. resume = (file or
    None, its key): saved every SAVE_EVERY_S seconds and at the end."""
    path, key = resume
    device = next(model.parameters()).device
    images = batch_size if k is None else max(1, batch_size // k)
    saved = time.monotonic()
    for i in range(done, len(x), images):
        xb = x[i:i + images].to(device)
        if k is None:
            parts["ll"].append(exact_log_prob(model, xb).cpu())
        else:
            qb = None if q is None else (q[0][i:i + images].to(device), q[1][i:i + images].to(device))
            b = vae_bounds(model, xb, k, gen, batch_size, qb)
            parts["ll"].append(b["iwae"])
            parts["elbo"].append(b["elbo"])
            parts["kl"].append(b["kl"])
        bar.update(len(xb))
        done = i + len(xb)
        if path is not None and (done == len(x) or time.monotonic() - saved > SAVE_EVERY_S):
            _save_progress(path, key, gen, parts, done, q)
            saved = time.monotonic()


SAVE_EVERY_S = 60.0


def _fingerprint(tensors) -> str:
    """sha256 over the tensors' bytes: which weights (or images) a progress file belongs to."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _save_progress(path, key, gen, parts, done, q=None):
    buf = io.BytesIO()
    torch.save({"key": key, "done": done, "generator": gen.get_state(), "q": q,
                "parts": {name: torch.cat(v) if v else torch.empty(0, dtype=torch.float64)
                          for name, v in parts.items()}}, buf)
    atomic_write(path, buf.getvalue())


def _load_progress(path, key, gen, parts):
    """(images done, parts, refined q or None) from a progress file, the generator set to where it stopped;
    (0, parts, None) if there is none."""
    path = Path(path)
    if not path.is_file():
        return 0, parts, None
    try:
        state = torch.load(path, weights_only=True)
        stored, done = state["key"], int(state["done"])
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise LikelihoodError(f"resume file {path} is unreadable ({type(e).__name__}): delete it to start "
                              f"the scoring over") from None
    if stored != key:
        what = ", ".join(f for f in key if stored.get(f) != key[f])
        raise LikelihoodError(f"resume file {path} belongs to another scoring (different {what}): pass the same "
                              f"checkpoint and arguments, or another file")
    gen.set_state(state["generator"])
    q = state.get("q")
    return done, {name: [v] if len(v) else [] for name, v in state["parts"].items()}, None if q is None else tuple(q)


def flat_metrics(result: dict, prefix: str = "test") -> dict:
    """results.json / CSV / W&B keys: test/nll (nats), test/nll_se, test/bpd, test/nll_images (how many test images:
    likelihood.max_images can shorten the split), and test/elbo_nll, test/kl, test/iwae_k for the bounds."""
    out = {f"{prefix}/nll": result["nll"]["nats"], f"{prefix}/nll_se": result["nll"]["se"],
           f"{prefix}/bpd": result["nll"]["bpd"], f"{prefix}/nll_images": float(result["n_images"])}
    if result["kind"] == "bound":
        out.update({f"{prefix}/elbo_nll": result["elbo"]["nats"], f"{prefix}/elbo_nll_se": result["elbo"]["se"],
                    f"{prefix}/kl": result["kl"], f"{prefix}/iwae_k": float(result["k"])})
    return out


# ------------------------------------------------------------------------- the train.py and config hooks

def evaluate_likelihood(net, datamodule, cfg_likelihood) -> dict:
    """Score the DataModule's test split (as the run's test step saw it) -> {"metrics": flat keys, "result"}."""
    datamodule.setup("test")
    x = datamodule.test_x
    n = cfg_likelihood.get("max_images")
    if n:
        x = x[:n]
    result = score(net, x, k=cfg_likelihood.k, batch_size=cfg_likelihood.batch_size, seed=cfg_likelihood.seed,
                   progress=cfg_likelihood.get("progress", True))
    return {"metrics": flat_metrics(result), "result": result}
