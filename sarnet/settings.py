"""How images are drawn: the `sample` config node, a command's flags and a caller's arguments all become one
SampleSettings, which holds the defaults, the fields' ranges and the rule of which draw fits which output. Torch-free,
so that the config check refuses a bad field before torch is imported."""

from dataclasses import asdict, dataclass, fields

DTYPES = ("float32", "bfloat16")  # sample.dtype, fid.dtype: the matmuls' dtype (float32: the exact paths)
METHODS = ("fast", "naive")
MODES = ("mean", "bernoulli", "categorical")
MAX_BATCH = 100_000  # images per sampler call: ~10 kB of activations each
MAX_IMAGES = 100_000  # images per generate() call: its peak memory is ~5 copies of its output (~1.5 GB at 28 x 28)
MAX_GRID = 1024  # images in one picture: callbacks.*.n, the commands' --n and --steps
MAX_K = 100_000  # importance samples per image: likelihood.k, `sarnet likelihood --k`
COMPLETE_Z_SCALE = 2 / 3  # complete()'s z ~ N(0, 1)/1.5: the reference's digit-5 completions (docs/reference.md §4.5)
REGRESSION = ("alpha_max", "p", "refine")


def th_text(th) -> str:
    """A threshold as --th takes it and results.json's keys write it (fid@th=0.105/mean): none, or its value."""
    return "none" if th is None else f"{th:g}"


class SettingsError(ValueError):
    """A setting out of its range: `field=value: allowed`; the config check names it sample.<field>."""

    def __init__(self, field, value, allowed):
        super().__init__(f"{field}={value!r}: {allowed}")
        self.field, self.value, self.allowed = field, value, allowed


def _number(v, low, strict=False) -> bool:
    return type(v) in (int, float) and (v > low if strict else v >= low) and v < float("inf")


@dataclass(frozen=True)
class SampleSettings:
    method: str = "fast"  # fast (exact, degree-ordered) or naive (one forward pass per patch, the reference)
    th: float | None = None  # generated pixels < th -> 0; None: no threshold
    z_scale: float = 1.0  # z ~ N(0, z_scale^2 I)
    mode: str = "mean"  # mean (sigmoid means), bernoulli (a draw per pixel) or categorical (a class per pixel)
    temperature: float = 1.0  # of the bernoulli and categorical draws
    batch_size: int = 2000  # images per sampler call
    dtype: str = "float32"  # float32 (the exact samplers) or bfloat16 (bf16 matmuls)
    regression: dict | None = None  # {alpha_max, p, refine}: the reference's noisy scheme for a regression net

    def __post_init__(self):
        th, reg = self.th, self.regression
        checks = {
            "method": (self.method in METHODS, f"must be one of {METHODS}"),
            "th": (th is None or _number(th, 0) and th < 1, "must be None (no threshold; null in a config) or in "
                                                            "[0, 1) (pixels are in [0, 1]: th >= 1 blanks all)"),
            "z_scale": (_number(self.z_scale, 0, strict=True), "must be a finite number > 0"),
            "mode": (self.mode in MODES, f"must be one of {MODES}: 'mean' (sigmoid means, the reference), "
                                         f"'bernoulli' or 'categorical' (softmax nets)"),
            "temperature": (_number(self.temperature, 0, strict=True), "must be a finite number > 0"),
            "batch_size": (type(self.batch_size) is int and 1 <= self.batch_size <= MAX_BATCH,
                           f"must be a positive int <= {MAX_BATCH} (images per sampler call: ~10 kB of activations "
                           f"each)"),
            "dtype": (self.dtype in DTYPES, f"must be one of {list(DTYPES)} (float32: the exact samplers, in the "
                                            f"weights' own dtype; bfloat16: bf16 matmuls)"),
            "regression": (reg is None or isinstance(reg, dict) and set(reg) == set(REGRESSION) and
                           _number(reg["alpha_max"], 0) and _number(reg["p"], 0) and reg["p"] <= 1 and
                           type(reg["refine"]) is bool, "must be None or {alpha_max: a number >= 0, p: in [0, 1], "
                                                        "refine: true or false} (e.g. conf/recipe/sarnet.yaml's)"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise SettingsError(name, getattr(self, name), allowed)

    @classmethod
    def of(cls, node=None, **overrides) -> "SampleSettings":
        """From a `sample` config node or dict (the keys it lacks take the defaults), then the `overrides` that are not
        None (a command's flags); a key that is no setting is refused."""
        if node is not None and not hasattr(node, "keys"):
            raise SettingsError("settings", node, "must be None, a dict of sampling settings or a `sample` config node")
        given = dict(node or {}) | {k: v for k, v in overrides.items() if v is not None}
        names = {f.name for f in fields(cls)}
        if unknown := sorted(set(given) - names):
            raise SettingsError(unknown[0], given[unknown[0]], f"not a sampling setting (they are {sorted(names)})")
        if hasattr(given.get("regression"), "items"):  # a config node: a plain dict
            given["regression"] = dict(given["regression"])
        return cls(**given)

    def check_fits(self, out_activation: str):
        """The rule of which draw fits which output. A softmax net's outputs are class logits: only a categorical
        draw turns them into a valid one-hot image, and only they take one. A Bernoulli draw needs sigmoid
        probabilities. A regression net (linear output) samples by the noisy scheme, which needs its settings."""
        if (self.mode == "categorical") != (out_activation == "softmax"):
            raise ValueError(f"mode={self.mode!r} does not fit out_activation={out_activation!r}: mode='categorical' "
                             f"is for softmax (classification) nets, and they need it (experiment=cls_sarnet and "
                             f"experiment=cls_sarnet_prob set it)")
        if self.mode == "bernoulli" and out_activation != "sigmoid":
            raise ValueError(f"mode='bernoulli' needs a sigmoid output (a likelihood-trained model), not "
                             f"out_activation={out_activation!r}: use mode='mean'")
        return self

    def record(self, out_activation: str) -> dict:
        """What a run's images depend on (results.json's "sampling"): method, th, z_scale and dtype always, the draw
        when pixels are drawn, the noisy scheme's settings for a regression net."""
        record = {k: getattr(self, k) for k in ("method", "th", "z_scale", "dtype")}
        if self.mode != "mean":
            record |= {"mode": self.mode, "temperature": self.temperature}
        if out_activation == "none" and self.regression:
            record["regression"] = dict(self.regression)
        return record

    def __or__(self, changes: dict) -> "SampleSettings":
        return SampleSettings(**asdict(self) | changes)
