"""The benchmark cases (`sarnet bench`): one JSON line per case, each with the baseline's and the project's time
measured in this run.

Every case that can run its matmuls in bf16 runs them both ways, float32 first (`sample`, then `sample_bf16`; the
bf16 line's baseline is the same float32 baseline). Every line reports its FLOPs and two floors, both measured in
this run on the work's own matmul shapes (recorded while it runs, then timed alone): the dense FLOPs of the work
(torch.utils.flop_counter: masked weights count, as the matmuls run dense) at the fp32 sgemm rate (`floor_s`,
`of_floor` = floor_s / project_s; 1.0 = at the floor) and at the best rate the machine reaches on those shapes,
bf16 where that is faster (`best_floor_s`, `best_dtype`, `of_best_floor`). The exact likelihood stays fp32/fp64.

The process keeps the memory it frees (sarnet.keep_freed_memory, as training and FID do); the thesis notebook's
loop is also timed as it runs there, under glibc's default malloc, in a fresh process. Paths compared with each other
run interleaved, round by round (the machine's load drifts within minutes): training epochs as the median of
--epochs rounds, the fast samplers and one FID set as the best of three and two rounds.

Cases
  train         a training epoch, MNIST-5, SarNET-VAE L=128, batch 64, lines measured in one run:
                `reference`: the thesis notebook's loop (docs/reference.md §2.4, §4.3): cat([x, z]), W*M in every
                forward, sigmoid + BCELoss(sum), default torch.optim.Adam, DataLoader over a TensorDataset, under
                glibc's default malloc; `reference_kept_memory`: the same loop once the process keeps its freed
                memory; `train`: the project's Lightning path (train.py's configs, module and DataModule), ratio to
                `reference` (`ratio_same_malloc`: to `reference_kept_memory`); `train_bf16`: the same with
                trainer.precision=bf16-mixed. Goal >= 2x the reference. Same maths: tests/test_speed_paths.py.
  train_vae     the same lines for the conv VAE baseline (L=128).
  sample        10,000 SarNET-VAE samples (L=128, 4x4 patches): naive float32 sampler (48 full passes) vs fast
                (`sample`: float32, `sample_bf16`: sample.dtype=bfloat16); one dense decoder pass is also timed in
                float32 and bf16 (`dense_pass_s`, `of_dense_pass` = dense_pass_s / project_s; `*_bf16`).
                Goals: >= 80x with bf16, float32 fast >= 0.9 of one dense float32 pass.
  sample_pixel  the same for a pixel-wise (1x1 patch) model; the naive sampler (783 full passes) is timed on
                `--naive-images` images and scaled per image. Goal >= 500x.
  sample_regression  10,000 simple-SarNET samples with the reference's noisy scheme (conf/recipe/sarnet.yaml):
                naive (a full pass per patch) vs fast (prefix blocks of the degree-sorted weights), float32 and bf16.
  fid           one FID set (10k generated + features + compute) and the whole 10-set evaluation, SarNET-VAE L=128,
                float32; `fid_bf16`: one set with bf16 sampling and bf16 features (sample.dtype, fid.dtype) against
                the float32 set (goal >= 2x); floor = one dense decoder pass + the LeNet features of the set.
  nll           time to score the binarized MNIST test split (sarnet/likelihood.py), float32 only, two lines:
                nll_exact: strict SarNET (4x4 patches, no latent), the naive per-patch NLL (49 full passes, as
                the naive sampler; timed on `--naive-images` and scaled) vs the one-pass exact NLL of all images;
                nll_iwae: strict SarNET-VAE L=32 (4x4), the ELBO alone (IWAE k=1) vs IWAE_k (`--k`), on
                `--nll-images` images; ratio = the cost of k (< 1), with images/s for both.
"""

import copy
import json
import os
import platform
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from sarnet import keep_freed_memory, packaged_config
from sarnet.io import atomic_write
from sarnet.nn import REFERENCE_GEOMETRY, ConvVAE, SarNet, SarNetVAE
from sarnet.sampling import autocast, generate, generate_regression, matmul_dtype
from sarnet.settings import DTYPES

aten = torch.ops.aten

SAMPLE_BATCH = packaged_config("config").sample.batch_size
PRECISIONS = {"32-true": "", "bf16-mixed": "_bf16"}  # trainer.precision -> the suffix of its case's line


class Work(TorchDispatchMode):
    """The dense FLOPs (torch.utils.flop_counter) and the (m, k, n) shapes of the matmuls of the work it watches."""

    def __init__(self):
        super().__init__()
        self.flops, self.shapes = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._overloadpacket in (aten.mm, aten.addmm):
            a, b = args[-2:]
            self.shapes.append((a.shape[0], a.shape[1], b.shape[1]))
        return func(*args, **(kwargs or {}))


def measure_work(fn) -> Work:
    counter = FlopCounterMode(display=False)
    with counter, Work() as work:
        fn()
    work.flops = counter.get_total_flops()
    return work


def gemm_rate(shapes, dtype=torch.float32, rounds: int = 5) -> float:
    """FLOP/s of torch.mm in `dtype` over these (m, k, n) shapes, each timed alone; the best of `rounds` passes."""
    pairs = [(torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)) for m, k, n in sorted(set(shapes))]
    count = {s: shapes.count(s) for s in set(shapes)}
    flops = sum(2 * m * k * n * count[(m, k, n)] for m, k, n in set(shapes))
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for (a, b), shape in zip(pairs, sorted(set(shapes))):
            for _ in range(count[shape]):
                torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return flops / best


def rates(shapes) -> dict:
    """The fp32 sgemm rate on the shapes and the best rate the machine reaches on them (fp32 or bf16)."""
    sgemm, bf16 = gemm_rate(shapes), gemm_rate(shapes, torch.bfloat16)
    return {"sgemm": sgemm, "best": max(sgemm, bf16), "best_dtype": "bfloat16" if bf16 > sgemm else "float32"}


def floor_fields(flops: float, rate: dict, project_s: float) -> dict:
    floor_s, best_s = flops / rate["sgemm"], flops / rate["best"]
    return {"gflop": round(flops / 1e9, 2), "sgemm_gflop_s": round(rate["sgemm"] / 1e9, 1),
            "floor_s": round(floor_s, 4), "of_floor": round(floor_s / project_s, 3),
            "best_gflop_s": round(rate["best"] / 1e9, 1), "best_dtype": rate["best_dtype"],
            "best_floor_s": round(best_s, 4), "of_best_floor": round(best_s / project_s, 3)}


def bf16_units(device="cpu") -> str:
    """The bf16 matmul units torch reports on the device: AVX512-BF16 or AMX on a CPU, tensor cores of compute
    capability >= 8 (Ampere+) on CUDA; "none" where bf16 runs emulated, no faster (often slower) than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return "cuda sm_%d%d" % torch.cuda.get_device_capability(device) if \
            torch.cuda.get_device_capability(device)[0] >= 8 else "none"
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return "+".join(k for k in ("avx512_bf16", "amx_bf16") if capabilities.get(k)) or "none"


def emit(case, baseline_s, project_s, **settings):
    row = {"case": case, "baseline_s": baseline_s and round(baseline_s, 4), "project_s": round(project_s, 4),
           "ratio": baseline_s and round(baseline_s / project_s, 2), **settings,
           "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                      f"{torch.get_num_threads()} threads, bf16 units: {bf16_units()}"}
    print(json.dumps(row), flush=True)
    return row


def mnist5(root):
    from sarnet.data import real_images
    return real_images(root, "mnist", [5], "train")


class NaiveSemiDense(nn.Module):
    """The reference's layer: W*M recomputed in every forward, z concatenated to the input."""

    def __init__(self, layer):
        super().__init__()
        self.weight, self.bias = nn.Parameter(layer.weight.detach().clone()), nn.Parameter(layer.bias.detach().clone())
        self.register_buffer("mask", layer.mask.float())

    def forward(self, h):
        return F.linear(h, self.weight * self.mask, self.bias)


class NaiveSarNetVAE(nn.Module):
    """The reference's SarNET-VAE, with a copy of the model's weights (parameter names as the model's)."""

    def __init__(self, model: SarNetVAE):
        super().__init__()
        self.encoder = copy.deepcopy(model.encoder)
        self.decoder = nn.ModuleDict({"layers": nn.ModuleList(NaiveSemiDense(layer) for layer in model.decoder.layers)})

    def forward(self, x):
        h = self.encoder.body(x)  # the plain nn.Sequential, as the reference's encoder runs
        mu, logvar = self.encoder.fc_mu(h), self.encoder.fc_logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        h, layers = x.view(x.shape[0], -1), self.decoder["layers"]
        for i, layer in enumerate(layers):
            h = layer(torch.cat([h, z], dim=1))
            h = torch.relu(h) if i < len(layers) - 1 else torch.sigmoid(h)
        return h.view_as(x), mu, logvar


class NaiveConvVAE(nn.Module):
    """The reference's conv VAE: plain nn.Sequential encoder and decoder, sigmoid output (a copy of the weights)."""

    def __init__(self, model: ConvVAE):
        super().__init__()
        self.encoder, self.decoder = copy.deepcopy(model.encoder), copy.deepcopy(model.decoder)

    def forward(self, x):
        h = self.encoder.body(x)
        mu, logvar = self.encoder.fc_mu(h), self.encoder.fc_logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(nn.Sequential.forward(self.decoder, z)), mu, logvar


NETS = {"sarnet_vae": (SarNetVAE, NaiveSarNetVAE), "vae": (ConvVAE, NaiveConvVAE)}


def reference_step(model, optimizer, x) -> torch.Tensor:
    """One step of the thesis notebook's loop (docs/reference.md §4.3): BCELoss(sum) of the sigmoid output plus the
    KL (sum), backward, optimizer step. model: a NaiveSarNetVAE or NaiveConvVAE. Returns the loss."""
    recon, mu, logvar = model(x)
    loss = F.binary_cross_entropy(recon, x, reduction="sum") - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def reference_epochs(x, model_name, epochs, batch_size=64):
    """The thesis notebook's training loop, timed per epoch: default torch.optim.Adam, a DataLoader over x."""
    torch.manual_seed(0)
    net, naive = NETS[model_name]
    model = naive(net(128))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch_size, shuffle=True)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        for (xb,) in loader:
            reference_step(model, opt, xb)
        times.append(time.perf_counter() - t)
    return times


def compose_train(root, model_name):
    """The real path: Hydra-composed configs -> SarnetModule, the DataModule and a Lightning Trainer."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module("sarnet.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"model={model_name}", "latent_dim=128", f"data_dir={root}",
                                           "data.val_size=0"])
    return instantiate(cfg.model), instantiate(cfg.data)


def project_epochs(root, model_name, epochs, accelerator="cpu", precision="32-true"):
    import lightning as L

    from sarnet.callbacks import filter_warnings

    L.seed_everything(0, verbose=False)
    module, dm = compose_train(root, model_name)

    class EpochTimer(L.Callback):
        def __init__(self):
            self.times = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.t = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.times.append(time.perf_counter() - self.t)

    timer = EpochTimer()
    filter_warnings()
    trainer = L.Trainer(accelerator=accelerator, max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[timer], precision=precision)
    trainer.fit(module, datamodule=dm)
    return timer.times


def training_step_work(root, model_name, batch_size=64) -> Work:
    """FLOPs and matmul shapes of one training step of the project's module (forward, loss, backward)."""
    module, _ = compose_train(root, model_name)
    module.log = lambda *a, **k: None
    x = torch.rand(batch_size, 1, 28, 28)
    return measure_work(lambda: module.training_step((x, None), 0).backward())


def median(times):
    """The median epoch, the first (warm-up) left out."""
    return sorted(times[1:])[len(times[1:]) // 2]


def notebook_epoch(root, model_name) -> float:
    """The notebook's loop in a fresh process, under glibc's default malloc as the notebook runs it: the second of
    two epochs (the first warms up)."""
    code = (f"import json, torch; torch.set_num_threads({torch.get_num_threads()}); from sarnet.bench import mnist5, "
            f"reference_epochs; print(json.dumps(reference_epochs(mnist5({str(root)!r}), {model_name!r}, 2)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.splitlines()[-1])[1]


def train_case(args, model_name, case):
    """The four lines' epochs interleaved, round by round (this shared machine's load drifts within minutes): each
    round times the second of two epochs of every line; the median over args.epochs rounds."""
    x = mnist5(args.data)
    n = len(x)
    lines = {"notebook": lambda: notebook_epoch(args.data, model_name),
             "kept": lambda: reference_epochs(x, model_name, 2)[1],
             **{p: lambda p=p: project_epochs(args.data, model_name, 2, precision=p)[1] for p in PRECISIONS}}
    times = {line: [] for line in lines}
    for _ in range(args.epochs):
        for line, timed in lines.items():
            times[line].append(timed())
    notebook, kept, *project = (sorted(t)[len(t) // 2] for t in times.values())
    work = training_step_work(args.data, model_name)
    flops, rate = work.flops * n / 64, rates(work.shapes)
    common = dict(model=model_name, images=n, batch=64, latent_dim=128, epochs_timed=args.epochs)
    ref = "reference" if model_name == "sarnet_vae" else f"reference_{model_name}"
    rows = [emit(ref, None, notebook, img_s=round(n / notebook, 1), malloc="glibc default (a fresh process)",
                 **floor_fields(flops, rate, notebook), **common),
            emit(f"{ref}_kept_memory", notebook, kept, img_s=round(n / kept, 1), malloc="freed memory kept",
                 **floor_fields(flops, rate, kept), **common)]
    for (precision, suffix), s in zip(PRECISIONS.items(), project):
        rows.append(emit(case + suffix, notebook, s, ratio_same_malloc=round(kept / s, 2), precision=precision,
                         img_s=round(n / s, 1), **floor_fields(flops, rate, s), **common))
    return rows


def case_train(args):
    return train_case(args, "sarnet_vae", "train")


def case_train_vae(args):
    return train_case(args, "vae", "train_vae")


def time_generate(model, n, method, batch_size, dtype="float32"):
    t = time.perf_counter()
    generate(model, n, method=method, batch_size=batch_size, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return time.perf_counter() - t


def best_of(timed: dict, rounds: int = 3) -> dict:
    """name -> the least of `rounds` calls of timed[name](), the names' calls interleaved round by round."""
    best = dict.fromkeys(timed, float("inf"))
    for _ in range(rounds):
        for name, fn in timed.items():
            best[name] = min(best[name], fn())
    return best


def dense_pass(net: SarNet, n: int, batch: int, dtype="float32"):
    """One dense teacher-forced pass of the decoder over n images: (seconds, its Work per n images)."""
    x, z = torch.rand(batch, *net.image_shape), torch.randn(batch, net.latent_dim) if net.latent_dim else None
    with torch.no_grad(), autocast("cpu", matmul_dtype(dtype)):
        work = measure_work(lambda: net.logits(x, z))
        t = time.perf_counter()
        for _ in range(0, n, batch):
            net.logits(x, z)
    work.flops = work.flops * n / batch
    return time.perf_counter() - t, work


def sample_lines(case, net, n, batch, naive_s, project_s: dict, **settings):
    """One line per dtype of a sampling case: the naive float32 baseline, the floors and the dense passes."""
    dense = {dtype: dense_pass(net, n, batch, dtype) for dtype in DTYPES}
    work = dense["float32"][1]
    rate = rates(work.shapes)
    passes = {"dense_pass_s": round(dense["float32"][0], 4), "dense_pass_bf16_s": round(dense["bfloat16"][0], 4)}
    return [emit(case + ("" if dtype == "float32" else "_bf16"), naive_s, s, dtype=dtype, **settings, **passes,
                 of_dense_pass=round(dense["float32"][0] / s, 3), of_dense_pass_bf16=round(dense["bfloat16"][0] / s, 3),
                 **floor_fields(work.flops, rate, s))
            for dtype, s in project_s.items()]


def case_sample(args):
    model = SarNetVAE(128).eval()
    naive = time_generate(model, args.n, "naive", 500)
    fast = best_of({d: lambda d=d: time_generate(model, args.n, "fast", args.fast_batch, d) for d in DTYPES})
    return sample_lines("sample", model.decoder, args.n, args.fast_batch, naive, fast, images=args.n, latent_dim=128,
                        patch=4, passes_naive=48, naive_batch=500, fast_batch=args.fast_batch)


def case_sample_pixel(args):
    net = SarNet([[28, 1, 1], [28, 2, 1], [28, 2, 1], [28, 1, 1]], latent_dim=128, out_activation="sigmoid")

    model = net.eval()  # a SarNet with a latent samples like a SarNET-VAE decoder
    m = args.naive_images
    naive = time_generate(model, m, "naive", 500) * args.n / m
    fast = best_of({d: lambda d=d: time_generate(model, args.n, "fast", args.fast_batch, d) for d in DTYPES})
    return sample_lines("sample_pixel", net, args.n, args.fast_batch, naive, fast, images=args.n, latent_dim=128,
                        patch=1, passes_naive=783, naive_timed_images=m, naive_scaled_per_image=True,
                        fast_batch=args.fast_batch)


def case_sample_regression(args):
    """Simple (regression) SarNET's noisy generation scheme (conf/recipe/sarnet.yaml), as FID runs it."""
    net = SarNet().eval()
    settings = dict(packaged_config("recipe/sarnet").sample.regression)
    th = packaged_config("recipe/sarnet").sample.th

    def timed(method, dtype="float32"):
        t = time.perf_counter()
        generate_regression(net, args.n, th=th, generator=torch.Generator().manual_seed(0), method=method,
                            dtype=dtype, **settings)
        return time.perf_counter() - t

    naive = timed("naive")
    fast = best_of({dtype: lambda d=dtype: timed("fast", d) for dtype in DTYPES})
    return sample_lines("sample_regression", net, args.n, args.n, naive, fast, images=args.n, patch=4,
                        passes_naive=49, th=th, **settings)


def case_fid(args):
    """One FID set of the protocol (conf/fid/default.yaml) and the 10-set evaluation, float32; one set with bf16
    sampling and features. Floor = one dense decoder pass over the generated set + the LeNet features of the
    generated set (the real images' are computed once)."""
    from sarnet.data import real_images
    from sarnet.metrics.fid import FIDEvaluator, load_classifier
    fid_cfg = packaged_config("fid/default")
    model = SarNetVAE(128).eval()
    classifier = load_classifier("mnist", root=args.data)
    real = real_images(args.data, "mnist", [5], "test")
    protocol = dict(real_set=fid_cfg.real_set, seed=fid_cfg.seed, batch_size=fid_cfg.batch_size, n_gen=args.n)
    def timed(dtype, n_sets):
        evaluator = FIDEvaluator(classifier, real, n_sets=n_sets, dtype=dtype, **protocol)
        t = time.perf_counter()
        evaluator.evaluate(lambda n, g: generate(model, n, generator=g, dtype=dtype))
        return time.perf_counter() - t

    times = {(d, 1): s for d, s in best_of({d: lambda d=d: timed(d, 1) for d in DTYPES}, rounds=2).items()}
    times["float32", fid_cfg.n_sets] = timed("float32", fid_cfg.n_sets)
    _, decoder = dense_pass(model.decoder, args.n, fid_cfg.batch_size)
    features = measure_work(lambda: classifier(torch.rand(fid_cfg.batch_size, 1, 28, 28)))
    flops = decoder.flops + features.flops * args.n / fid_cfg.batch_size  # real features: once per evaluation
    rate = rates(decoder.shapes + features.shapes)
    one, one_bf16, full = times["float32", 1], times["bfloat16", 1], times["float32", fid_cfg.n_sets]
    return [emit("fid", full, one, images=args.n, note=f"baseline_s = the {fid_cfg.n_sets}-set evaluation, project_s"
                 f" = one set; ratio = {fid_cfg.n_sets}-set / 1-set", one_set_s=round(one, 2),
                 all_sets_s=round(full, 2), **floor_fields(flops, rate, one)),
            emit("fid_bf16", one, one_bf16, images=args.n, dtype="bfloat16", note="baseline_s = one float32 set, "
                 "project_s = one set with sample.dtype = fid.dtype = bfloat16", **floor_fields(flops, rate, one_bf16))]


def nll_test_images(root, n):
    from sarnet.data import MNISTDataModule
    dm = MNISTDataModule(root, binarize="dynamic", val_size=0)
    dm.setup("test")
    return dm.test_x[:n]


def case_nll(args):
    from sarnet.likelihood import naive_log_prob, score
    torch.manual_seed(0)
    x = nll_test_images(args.data, None)
    net = SarNet(REFERENCE_GEOMETRY, first_patch="predicted", out_activation="sigmoid").eval()
    m = args.naive_images
    t = time.perf_counter()
    naive = naive_log_prob(net, x[:m])
    naive_s = (time.perf_counter() - t) * len(x) / m
    t = time.perf_counter()
    exact = score(net, x, batch_size=1000)
    exact_s = time.perf_counter() - t
    assert abs(-naive.mean().item() - score(net, x[:m])["nll"]["nats"]) < 1e-3 * exact["nll"]["nats"]
    rows = [emit("nll_exact", naive_s, exact_s, images=len(x), patch=4, passes_naive=49, naive_timed_images=m,
                 naive_scaled_per_image=True, nll_nats_random_init=round(exact["nll"]["nats"], 2))]
    vae = SarNetVAE(32, first_patch="predicted").eval()
    xs = x[:args.nll_images]
    t = time.perf_counter()
    score(vae, xs, k=1, batch_size=1000)
    elbo_s = time.perf_counter() - t
    t = time.perf_counter()
    score(vae, xs, k=args.k, batch_size=1000)
    iwae_s = time.perf_counter() - t
    rows.append(emit("nll_iwae", elbo_s, iwae_s, images=len(xs), latent_dim=32, patch=4, k=args.k,
                     note="baseline_s = k=1 (the ELBO's cost), project_s = IWAE_k; ratio = 1 / cost of k",
                     elbo_img_s=round(len(xs) / elbo_s, 1), iwae_img_s=round(len(xs) / iwae_s, 2),
                     projected_test_set_s=round(iwae_s * 10_000 / len(xs), 1)))
    return rows


WHAT = {  # case -> (what is timed, baseline, goal)
    "reference": ("one training epoch, MNIST-5, SarNET-VAE L=128, batch 64", "the thesis notebook's loop", ""),
    "reference_kept_memory": ("the same loop, freed memory kept (as sarnet keeps it)", "the notebook's loop", ""),
    "train": ("the same epoch through train.py's Lightning path", "the thesis notebook's loop", ">= 2x"),
    "train_bf16": ("the same, trainer.precision=bf16-mixed", "the thesis notebook's loop", ">= 2x"),
    "reference_vae": ("one training epoch of the conv VAE, L=128", "the thesis notebook's loop", ""),
    "reference_vae_kept_memory": ("the same loop, freed memory kept", "the notebook's loop", ""),
    "train_vae": ("the same epoch through train.py's Lightning path", "the thesis notebook's loop", ""),
    "train_vae_bf16": ("the same, trainer.precision=bf16-mixed", "the thesis notebook's loop", ""),
    "sample": ("10,000 SarNET-VAE samples, L=128, 4x4 patches", "naive sampler, 48 full passes",
               ">= 0.9 of a dense pass"),
    "sample_bf16": ("the same, sample.dtype=bfloat16", "naive float32 sampler", ">= 80x"),
    "sample_pixel": ("10,000 samples, pixel-wise (1x1 patches)", "naive sampler, 783 passes (timed on 500 images)",
                     ">= 500x"),
    "sample_pixel_bf16": ("the same, sample.dtype=bfloat16", "naive float32 sampler (500 images)", ""),
    "sample_regression": ("10,000 simple-SarNET samples, the reference's noisy scheme, 4x4 patches",
                          "naive: 48 full passes + refine", ""),
    "sample_regression_bf16": ("the same, sample.dtype=bfloat16", "naive float32", ""),
    "fid": ("one FID set: 10k SarNET-VAE samples + LeNet features + FID", "the whole 10-set evaluation", ""),
    "fid_bf16": ("one FID set, sample.dtype = fid.dtype = bfloat16", "one float32 FID set", ">= 2x"),
    "nll_exact": ("exact NLL of the binarized MNIST test split, strict SarNET 4x4", "naive: 49 passes per image",
                  ""),
    "nll_iwae": ("IWAE bound, SarNET-VAE L=32, k=100 (1000 images)", "the ELBO alone (k=1)", ""),
}


def markdown(rows) -> str:
    """The speed table of docs/results/speed.md: one row per JSON line, times in seconds; floors at the fp32 sgemm
    rate and at the machine's best."""
    lines = ["| case | what | baseline | baseline s | sarnet s | ratio | goal | floor s | of floor | best floor s | "
             "of best floor |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        what, baseline, goal = WHAT.get(r["case"], ("", "", ""))
        of_floor = r.get("of_floor", "")
        if "of_dense_pass" in r:
            of_floor = f"{of_floor} (a dense pass: {r['dense_pass_s']} s, {r['of_dense_pass']})"
        best = f"{r['best_floor_s']} ({r['best_dtype']})" if "best_floor_s" in r else ""
        of_best = r.get("of_best_floor", "")
        if "of_dense_pass_bf16" in r:
            of_best = f"{of_best} (a bf16 dense pass: {r['dense_pass_bf16_s']} s, {r['of_dense_pass_bf16']})"
        ratio = "" if r["ratio"] is None else f"**{r['ratio']}x**"
        lines.append(f"| `{r['case']}` | {what} | {baseline} | {r['baseline_s'] or ''} | {r['project_s']} | {ratio} "
                     f"| {goal} | {r.get('floor_s', '')} | {of_floor} | {best} | {of_best} |")
    machine = {r["machine"] for r in rows}
    return "\n".join(lines) + "\n\n" + "; ".join(sorted(machine))


CASES = {"train": case_train, "train_vae": case_train_vae, "sample": case_sample, "sample_pixel": case_sample_pixel,
         "sample_regression": case_sample_regression,
         "fid": case_fid, "nll": case_nll}


def run(args):
    """The cases named in args.cases (all by default), as `sarnet bench` parsed them; JSON lines on stdout."""
    if args.markdown:
        print(markdown(args.markdown))  # the rows cli/bench.py read
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = args.cases or list(CASES)
    keep_freed_memory()
    rows = []
    for case in cases:
        result = CASES[case](args)
        rows += result if isinstance(result, list) else [result]
    if args.out:
        atomic_write(args.out, "".join(json.dumps(row) + "\n" for row in rows).encode())  # its folder made too
