"""Generative XGBoost: the prototype SarNET grew from (docs/reference.md §9; thesis §3.1).

An image is cut into 2x2 patches (196 of 4 pixels) and generated one patch at a time. Patch 0 is given (drawn from
the training images' first patches); for k >= 1 a gradient-boosted regressor ("next" model k) sees the pixels of
patches 0..k-1 plus each of those patches' mean and predicts the 4 pixels of patch k, one multi-output booster per
patch (xgboost's default multi-output strategy, one tree per target per round, as the reference's multi-output
XGBRegressor). A regressor predicts a conditional mean, so its patches are blurry; a "refine" model k, trained to
map a blurred patch k to the sharp one, sharpens each prediction. Early patches are randomised so that images
differ: the regressors are deterministic, and patch 0 is blank for nearly every MNIST five.

Generation of patch k: predict, clip to [0, 1]; if k <= n_patches / 2.5, with probability 1 - (1 - k / n)^1.5
replace each pixel v by Bernoulli(v) * v; refine, clip again.

Kept from the reference: the model sizes (next: 50 rounds of depth 7; refine: 40 of depth 6; xgboost's other
defaults, learning rate 0.3), the features (pixels plus patch means), the refine target (the blur is a 1-D
Gaussian, sigma 1, along each image's 784 pixels in patch order, so it mixes neighbours in that order, not in 2-D),
the randomisation probability as the code has it (1 - (1 - k/n)^1.5; the thesis text says (1 - k/n)^1.5), and the
column-major patch order as an option (order="column"; the default is raster, "raster").
Dropped: the refine off-by-one (the reference refines patch k+1 with the model trained for patch k; here patch k's
own model refines it). Changed: xgboost 3's default tree method ("hist") instead of the reference's xgboost of the
time, and patch 0 drawn from the training images' first patches, since the reference does not say where its
"given" first patch comes from.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from sarnet.io import atomic_write, write_json

SIDE, PATCH = 28, 2
ORDERS = ("raster", "column")
FORMAT = "sarnet-xgb-v1"
# the reference's settings (docs/reference.md §9)
NEXT_PARAMS = {"rounds": 50, "max_depth": 7}
REFINE_PARAMS = {"rounds": 40, "max_depth": 6}
RANDOM_UNTIL, RANDOM_POWER = 1 / 2.5, 1.5  # randomise patches k <= n / 2.5, with probability 1 - (1 - k/n)^1.5
BLUR_SIGMA = 1.0


class XGBError(ValueError):
    """A bad setting or a model folder that cannot be read: one line naming the field and the fix."""


def patch_index(order="raster"):
    """[n_patches, 4] flat pixel indices of each 2x2 patch, patches in `order`, pixels in raster order within."""
    if order not in ORDERS:
        raise XGBError(f"order={order!r} must be one of {ORDERS}")
    n = SIDE // PATCH
    rows, cols = np.divmod(np.arange(n * n), n)  # raster: patch i at (i // n, i % n)
    if order == "column":  # the reference: top to bottom first, then the next column
        rows, cols = cols, rows
    dy, dx = np.divmod(np.arange(PATCH * PATCH), PATCH)
    return (rows[:, None] * PATCH + dy) * SIDE + cols[:, None] * PATCH + dx


def to_patches(images, order="raster") -> np.ndarray:
    """float images [N, 1, 28, 28] (tensor or array) in [0, 1] -> float32 [N, 196, 4] in patch order."""
    x = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)  # a tensor or an array
    return x.reshape(len(x), SIDE * SIDE)[:, patch_index(order)].astype(np.float32)


def to_images(patches, order="raster"):
    """Inverse of to_patches: [N, 196, 4] -> float tensor [N, 1, 28, 28]."""
    flat = np.zeros((len(patches), SIDE * SIDE), np.float32)
    flat[:, patch_index(order)] = patches
    import torch  # here, not at the top: `sarnet xgb --help` answers without it

    return torch.from_numpy(flat).view(-1, 1, SIDE, SIDE)


def features(patches, k) -> np.ndarray:
    """Inputs of next model k: the pixels of patches 0..k-1, then their k means. Only patches < k are read."""
    seen = patches[:, :k]
    return np.concatenate([seen.reshape(len(seen), -1), seen.mean(2)], axis=1)


def blur(patches, sigma=BLUR_SIGMA) -> np.ndarray:
    """The refine models' inputs: a 1-D Gaussian along each image's pixels in patch order (the reference's blur),
    edges reflected, kernel cut at 4 sigma (scipy.ndimage.gaussian_filter1d's defaults)."""
    radius = int(4 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    flat = patches.reshape(len(patches), -1)
    padded = np.pad(flat, ((0, 0), (radius, radius)), mode="symmetric")
    out = sum(w * padded[:, i:i + flat.shape[1]] for i, w in enumerate(kernel))
    return out.reshape(patches.shape).astype(np.float32)


def _params(depth, threads):
    return {"max_depth": depth, "nthread": threads, "objective": "reg:squarederror", "tree_method": "hist"}


def _fit(x, y, rounds, depth, threads, seed):
    import xgboost as xgb

    params = _params(depth, threads) | {"seed": seed}
    return xgb.train(params, xgb.DMatrix(x, label=y, nthread=threads), num_boost_round=rounds)


def _predict(booster, x):
    return booster.inplace_predict(x).reshape(len(x), -1)


def _resume(resume_dir, settings, last, threads):
    """(next boosters, refine boosters, seconds per patch) of the patches an interrupted run left in resume_dir."""
    if resume_dir is None:
        return [], [], []
    import xgboost as xgb

    path = Path(resume_dir)
    path.mkdir(parents=True, exist_ok=True)
    try:
        state = json.loads((path / "progress.json").read_text())
    except FileNotFoundError:
        return [], [], []
    except (OSError, ValueError) as e:
        raise XGBError(f"{path}/progress.json is unreadable ({e}): delete {path} to train from scratch") from None
    if state.get("settings") != settings:
        changed = sorted(k for k in settings if (state.get("settings") or {}).get(k) != settings[k])
        raise XGBError(f"{path} holds patches trained with other {', '.join(changed)}: delete it to train from "
                       f"scratch, or write to another --out")
    seconds = state["seconds"][:last]
    models = {"next": [], "refine": []}
    for name in models:
        for k in range(1, len(seconds) + 1):
            booster = xgb.Booster({"nthread": threads})
            try:
                booster.load_model(bytearray((path / f"{name}_{k:03d}.ubj").read_bytes()))
            except (OSError, xgb.core.XGBoostError) as e:
                raise XGBError(f"{path}: cannot read {name}_{k:03d}.ubj ({e}): delete {path} to train from "
                               f"scratch") from None
            models[name].append(booster)
    return models["next"], models["refine"], list(seconds)


class GenerativeXGB:
    """next[k-1], refine[k-1]: the boosters of patch k = 1..len(next). Patches past the last trained one stay 0
    (a quick run's partial images). first: [M, 4] distinct first patches of the training images, drawn with
    probabilities first_p."""

    def __init__(self, next_models, refine_models, first, first_p, meta):
        self.next, self.refine, self.first, self.first_p, self.meta = next_models, refine_models, first, first_p, meta
        self.order = meta["order"]

    @classmethod
    def train(cls, images, order="raster", max_patches=None, rounds=NEXT_PARAMS["rounds"],
              depth=NEXT_PARAMS["max_depth"], refine_rounds=REFINE_PARAMS["rounds"],
              refine_depth=REFINE_PARAMS["max_depth"], threads=None, seed=0, progress=None, resume_dir=None):
        """images: float [N, 1, 28, 28] in [0, 1]. max_patches: train patches 1..max_patches only (None = all 195).
        threads: xgboost's nthread (None = os.cpu_count()). progress(k, n, seconds of this patch), if given,
        hears of each patch trained. resume_dir: each patch's boosters are written there as soon as they are
        trained, and those already there (an interrupted run with the same settings and images) are loaded instead
        of trained again: each patch's fit depends on nothing else, so the model equals an uninterrupted run's.
        meta["train_s"]: the training seconds of every launch."""
        import xgboost as xgb

        patches = to_patches(images, order)
        n = patches.shape[1]
        last = n - 1 if max_patches is None else max_patches
        for name, value, low in (("max_patches", last, 1), ("rounds", rounds, 1), ("depth", depth, 1),
                                 ("refine_rounds", refine_rounds, 1), ("refine_depth", refine_depth, 1)):
            if not isinstance(value, int) or value < low:
                raise XGBError(f"{name}={value!r} must be an int >= {low}")
        if last > n - 1:
            raise XGBError(f"max_patches={last} must be at most {n - 1} (patch 0 is given)")
        if len(patches) < 2:
            raise XGBError(f"training needs at least 2 images, got {len(patches)}")
        threads = threads or os.cpu_count()
        blurred = blur(patches)
        first, counts = np.unique(patches[:, 0], axis=0, return_counts=True)
        settings = {"format": FORMAT, "order": order, "next": {"rounds": rounds, "max_depth": depth},
                    "refine": {"rounds": refine_rounds, "max_depth": refine_depth}, "seed": seed,
                    "images_sha256": hashlib.sha256(patches.tobytes()).hexdigest()}
        next_models, refine_models, seconds = _resume(resume_dir, settings, last, threads)
        for k in range(len(next_models) + 1, last + 1):
            t0 = time.time()
            next_models.append(_fit(features(patches, k), patches[:, k], rounds, depth, threads, seed))
            refine_models.append(_fit(blurred[:, k], patches[:, k], refine_rounds, refine_depth, threads, seed))
            seconds.append(time.time() - t0)
            if resume_dir is not None:
                for name, booster in (("next", next_models[-1]), ("refine", refine_models[-1])):
                    atomic_write(Path(resume_dir) / f"{name}_{k:03d}.ubj", bytes(booster.save_raw("ubj")))
                state = {"settings": settings, "seconds": seconds}  # written last: it names the patches that are done
                write_json(Path(resume_dir) / "progress.json", state)
            if progress:
                progress(k, last, seconds[-1])
        meta = {"format": FORMAT, "order": order, "patch": PATCH, "n_patches": n, "trained_patches": last,
                "next": settings["next"], "refine": settings["refine"], "train_images": len(patches), "seed": seed,
                "xgboost": xgb.__version__, "train_s": sum(seconds[:last])}
        return cls(next_models, refine_models, first, counts / counts.sum(), meta)

    # -------------------------------------------------------------------------
    # generation

    def predict_patch(self, patches, k) -> np.ndarray:
        """Next model k's prediction [N, 4] for patch k, clipped to [0, 1]; reads patches[:, :k] only."""
        return np.clip(_predict(self.next[k - 1], features(patches, k)), 0, 1)

    def refine_patch(self, patch, k) -> np.ndarray:
        return np.clip(_predict(self.refine[k - 1], patch), 0, 1)

    def generate(self, n, generator=0):
        """n images, float [n, 1, 28, 28] in [0, 1]. generator: an int seed, a torch.Generator (one draw from it
        seeds numpy, so a seeded torch stream gives the same images) or a numpy Generator."""
        import torch

        if isinstance(generator, torch.Generator):
            generator = torch.randint(2 ** 62, (1,), generator=generator).item()
        rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
        total = self.meta["n_patches"]
        patches = np.zeros((n, total, PATCH * PATCH), np.float32)
        patches[:, 0] = self.first[rng.choice(len(self.first), size=n, p=self.first_p)]
        for k in range(1, len(self.next) + 1):
            patch = self.predict_patch(patches, k)
            if k <= total * RANDOM_UNTIL:
                chosen = rng.random(n) < 1 - (1 - k / total) ** RANDOM_POWER  # one draw per image and patch
                kept = rng.random(patch.shape) < patch  # Bernoulli(v): v * Bernoulli(v) keeps v or zeroes it
                patch = np.where(chosen[:, None] & ~kept, 0, patch)
            patches[:, k] = self.refine_patch(patch, k)
        return to_images(patches, self.order)

    # -------------------------------------------------------------------------
    # save / load: a folder of xgboost UBJ files plus meta.json

    def save(self, path):
        """Write the model folder `path`: built in a temp folder beside it, then renamed into place, so that
        `path` holds the old model or the whole new one, never a mix."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part"))
        try:
            tmp.chmod(0o755)  # mkdtemp makes 0700; a model folder should be readable like any other
            for name, models in (("next", self.next), ("refine", self.refine)):
                for k, booster in enumerate(models, 1):
                    atomic_write(tmp / f"{name}_{k:03d}.ubj", bytes(booster.save_raw("ubj")))
            meta = self.meta | {"first": self.first.tolist(), "first_p": self.first_p.tolist()}
            write_json(tmp / "meta.json", meta)
            old = path.with_name(f".{path.name}.old")
            if path.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path, threads=None):
        import xgboost as xgb

        path = Path(path)
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError) as e:
            raise XGBError(f"{path}: no readable meta.json ({e}); train a model with sarnet xgb") from None
        if meta.get("format") != FORMAT:
            raise XGBError(f"{path}/meta.json: format {meta.get('format')!r} is not {FORMAT!r}; retrain the model")
        models = {}
        for name in ("next", "refine"):
            models[name] = []
            for k in range(1, meta["trained_patches"] + 1):
                booster = xgb.Booster({"nthread": threads or os.cpu_count()})
                try:
                    booster.load_model(bytearray((path / f"{name}_{k:03d}.ubj").read_bytes()))
                except (OSError, xgb.core.XGBoostError) as e:
                    raise XGBError(f"{path}: cannot read {name}_{k:03d}.ubj ({e}); retrain the model") from None
                models[name].append(booster)
        first, first_p = np.asarray(meta.pop("first"), np.float32), np.asarray(meta.pop("first_p"))
        return cls(models["next"], models["refine"], first, first_p, meta)
