"""The benchmark cases (`sarnet bench`): one JSON line per case, each with the baseline's and the project's time
measured in this run.

Every case also reports its FLOPs and the machine's floor measured in the same run: the dense FLOPs of the work
(torch.utils.flop_counter: masked weights count, as the matmuls run dense) divided by the sgemm rate this machine
reaches on the work's own matmul shapes (recorded while it runs, then timed alone); `of_floor` = floor_s /
project_s (1.0 = at the floor).

Cases
  train         a training epoch, MNIST-5, SarNET-VAE L=128, batch 64, two lines measured in one run:
                `reference`: the thesis notebook's loop (docs/reference.md §2.4, §4.3): cat([x, z]), W*M in every
                forward, sigmoid + BCELoss(sum), default torch.optim.Adam, DataLoader over a TensorDataset;
                `train`: the project's Lightning path (train.py's configs, module and DataModule), ratio to
                `reference`. Goal >= 2x the reference and of_floor >= 0.5. Same maths: tests/test_speed_paths.py.
  train_vae     the same two lines for the conv VAE baseline (L=128).
  sample        10,000 SarNET-VAE samples (L=128, 4x4 patches): naive sampler (48 full passes) vs fast; floor =
                one dense decoder pass, also timed (`dense_pass_s`, `of_dense_pass` = dense_pass_s / project_s).
                Goal >= 40x and of_dense_pass >= 0.5.
  sample_pixel  the same for a pixel-wise (1x1 patch) model; the naive sampler (783 full passes) is timed on
                `--naive-images` images and scaled per image. Goal >= 500x.
  sample_regression  10,000 simple-SarNET samples with the reference's noisy scheme (conf/recipe/sarnet.yaml):
                naive (a full pass per patch) vs fast (prefix blocks of the degree-sorted weights); floor and
                of_dense_pass as `sample`.
  fid           one FID set (10k generated + features + compute) and the whole 10-set evaluation, SarNET-VAE L=128;
                floor = one dense decoder pass + the LeNet features of the generated set.
  nll           time to score the binarized MNIST test split (sarnet/likelihood.py), two lines:
                nll_exact: strict SarNET (4x4 patches, no latent), the naive per-patch NLL (49 full passes, as
                the naive sampler; timed on `--naive-images` and scaled) vs the one-pass exact NLL of all images;
                nll_iwae: strict SarNET-VAE L=32 (4x4), the ELBO alone (IWAE k=1) vs IWAE_k (`--k`), on
                `--nll-images` images; ratio = the cost of k (< 1), with images/s for both.
"""

import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from sarnet import packaged_config
from sarnet.nn import REFERENCE_GEOMETRY, ConvVAE, SarNet, SarNetVAE
from sarnet.sampling import generate, generate_regression

aten = torch.ops.aten

SAMPLE_BATCH = packaged_config("config").sample.batch_size


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


def sgemm_rate(shapes, rounds: int = 5) -> float:
    """FLOP/s of torch.mm over these (m, k, n) shapes, each timed alone; the best of `rounds` passes."""
    pairs = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in sorted(set(shapes))]
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


def floor_fields(flops: float, rate: float, project_s: float) -> dict:
    floor_s = flops / rate
    return {"gflop": round(flops / 1e9, 2), "sgemm_gflop_s": round(rate / 1e9, 1), "floor_s": round(floor_s, 4),
            "of_floor": round(floor_s / project_s, 3)}


def emit(case, baseline_s, project_s, **settings):
    row = {"case": case, "baseline_s": baseline_s and round(baseline_s, 4), "project_s": round(project_s, 4),
           "ratio": baseline_s and round(baseline_s / project_s, 2), **settings,
           "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                      f"{torch.get_num_threads()} threads"}
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
    def __init__(self, model: SarNetVAE):
        super().__init__()
        import copy
        self.encoder = copy.deepcopy(model.encoder)
        self.layers = nn.ModuleList(NaiveSemiDense(layer) for layer in model.decoder.layers)

    def forward(self, x):
        h = self.encoder.body(x)  # the plain nn.Sequential, as the reference's encoder runs
        mu, logvar = self.encoder.fc_mu(h), self.encoder.fc_logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        h = x.view(x.shape[0], -1)
        for i, layer in enumerate(self.layers):
            h = layer(torch.cat([h, z], dim=1))
            h = torch.relu(h) if i < len(self.layers) - 1 else torch.sigmoid(h)
        return h.view_as(x), mu, logvar


class NaiveConvVAE(nn.Module):
    """The reference's conv VAE: plain nn.Sequential encoder and decoder, sigmoid output."""

    def __init__(self, model: ConvVAE):
        super().__init__()
        import copy
        self.model = copy.deepcopy(model)

    def forward(self, x):
        enc = self.model.encoder
        h = enc.body(x)
        mu, logvar = enc.fc_mu(h), enc.fc_logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(nn.Sequential.forward(self.model.decoder, z)), mu, logvar


NETS = {"sarnet_vae": (SarNetVAE, NaiveSarNetVAE), "vae": (ConvVAE, NaiveConvVAE)}


def reference_epochs(x, model_name, epochs, batch_size=64):
    """The thesis notebook's training loop (docs/reference.md §4.3), timed per epoch."""
    torch.manual_seed(0)
    net, naive = NETS[model_name]
    model = naive(net(128))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch_size, shuffle=True)
    bce = nn.BCELoss(reduction="sum")
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        for (xb,) in loader:
            recon, mu, logvar = model(xb)
            loss = bce(recon, xb) - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            opt.zero_grad()
            loss.backward()
            opt.step()
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


def project_epochs(root, model_name, epochs, accelerator="cpu"):
    import lightning as L

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
    trainer = L.Trainer(accelerator=accelerator, max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    return timer.times


def training_step_work(root, model_name, batch_size=64) -> Work:
    """FLOPs and matmul shapes of one training step of the project's module (forward, loss, backward)."""
    module, _ = compose_train(root, model_name)
    module.log = lambda *a, **k: None
    x = torch.rand(batch_size, 1, 28, 28)
    return measure_work(lambda: module.training_step((x, None), 0).backward())


def train_case(args, model_name, case):
    x = mnist5(args.data)
    n, epochs = len(x), args.epochs
    med = lambda t: sorted(t[1:])[len(t[1:]) // 2]  # noqa: E731  (median, first epoch is warm-up)
    ref = med(reference_epochs(x, model_name, epochs))
    proj = med(project_epochs(args.data, model_name, epochs))
    work = training_step_work(args.data, model_name)
    flops, rate = work.flops * n / 64, sgemm_rate(work.shapes)
    common = dict(model=model_name, images=n, batch=64, latent_dim=128, epochs_timed=epochs - 1)
    return [emit(f"reference_{model_name}" if model_name != "sarnet_vae" else "reference", None, ref,
                 img_s=round(n / ref, 1), **floor_fields(flops, rate, ref), **common),
            emit(case, ref, proj, img_s=round(n / proj, 1), **floor_fields(flops, rate, proj), **common)]


def case_train(args):
    return train_case(args, "sarnet_vae", "train")


def case_train_vae(args):
    return train_case(args, "vae", "train_vae")


def time_generate(model, n, method, batch_size):
    t = time.perf_counter()
    generate(model, n, method=method, batch_size=batch_size, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - t


def dense_pass(net: SarNet, n: int, batch: int):
    """One dense teacher-forced pass of the decoder over n images: (seconds, its Work per n images)."""
    x, z = torch.rand(batch, *net.image_shape), torch.randn(batch, net.latent_dim) if net.latent_dim else None
    with torch.no_grad():
        work = measure_work(lambda: net.logits(x, z))
        t = time.perf_counter()
        for _ in range(0, n, batch):
            net.logits(x, z)
    work.flops = work.flops * n / batch
    return time.perf_counter() - t, work


def sample_fields(net, n, batch, fast_s):
    dense_s, work = dense_pass(net, n, batch)
    return dict(dense_pass_s=round(dense_s, 4), of_dense_pass=round(dense_s / fast_s, 3),
                **floor_fields(work.flops, sgemm_rate(work.shapes), fast_s))


def case_sample(args):
    model = SarNetVAE(128).eval()
    naive = time_generate(model, args.n, "naive", 500)
    fast = time_generate(model, args.n, "fast", args.fast_batch)
    return emit("sample", naive, fast, images=args.n, latent_dim=128, patch=4, passes_naive=48,
                naive_batch=500, fast_batch=args.fast_batch,
                **sample_fields(model.decoder, args.n, args.fast_batch, fast))


def case_sample_pixel(args):
    net = SarNet([[28, 1, 1], [28, 2, 1], [28, 2, 1], [28, 1, 1]], latent_dim=128, out_activation="sigmoid")

    model = net.eval()  # a SarNet with a latent samples like a SarNET-VAE decoder
    m = args.naive_images
    naive = time_generate(model, m, "naive", 500) * args.n / m
    fast = time_generate(model, args.n, "fast", args.fast_batch)
    return emit("sample_pixel", naive, fast, images=args.n, latent_dim=128, patch=1, passes_naive=783,
                naive_timed_images=m, naive_scaled_per_image=True, fast_batch=args.fast_batch,
                **sample_fields(net, args.n, args.fast_batch, fast))


def case_sample_regression(args):
    """Simple (regression) SarNET's noisy generation scheme (conf/recipe/sarnet.yaml), as FID runs it."""
    net = SarNet().eval()
    settings = dict(packaged_config("recipe/sarnet").sample.regression)
    th = packaged_config("recipe/sarnet").sample.th

    def timed(method):
        t = time.perf_counter()
        generate_regression(net, args.n, th=th, generator=torch.Generator().manual_seed(0), method=method,
                            **settings)
        return time.perf_counter() - t

    naive, fast = timed("naive"), timed("fast")
    return emit("sample_regression", naive, fast, images=args.n, patch=4, passes_naive=49, th=th, **settings,
                **sample_fields(net, args.n, args.n, fast))


def case_fid(args):
    """One FID set of the protocol (conf/fid/default.yaml) and the 10-set evaluation; floor = one dense decoder pass
    over the generated set + the LeNet features of the generated set (the real images' are computed once)."""
    from sarnet.data import real_images
    from sarnet.metrics.fid import FIDEvaluator, load_classifier
    fid_cfg = packaged_config("fid/default")
    model = SarNetVAE(128).eval()
    classifier = load_classifier("mnist", root=args.data)
    real = real_images(args.data, "mnist", [5], "test")
    gen = lambda n, g: generate(model, n, generator=g)  # noqa: E731  (called with n <= fid.batch_size)
    protocol = dict(real_set=fid_cfg.real_set, seed=fid_cfg.seed, batch_size=fid_cfg.batch_size, n_gen=args.n)
    times = {}
    for n_sets in (1, fid_cfg.n_sets):
        evaluator = FIDEvaluator(classifier, real, n_sets=n_sets, **protocol)
        t = time.perf_counter()
        evaluator.evaluate(gen)
        times[n_sets] = time.perf_counter() - t
    _, decoder = dense_pass(model.decoder, args.n, fid_cfg.batch_size)
    features = measure_work(lambda: classifier(torch.rand(fid_cfg.batch_size, 1, 28, 28)))
    flops = decoder.flops + features.flops * args.n / fid_cfg.batch_size  # real features: once per evaluation
    one, full = times[1], times[fid_cfg.n_sets]
    return emit("fid", full, one, images=args.n, note=f"baseline_s = the {fid_cfg.n_sets}-set evaluation, project_s ="
                f" one set; ratio = {fid_cfg.n_sets}-set / 1-set", one_set_s=round(one, 2), all_sets_s=round(full, 2),
                **floor_fields(flops, sgemm_rate(decoder.shapes + features.shapes), one))


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
    "train": ("the same epoch through train.py's Lightning path", "the thesis notebook's loop",
              ">= 2x, >= 0.5 of floor"),
    "reference_vae": ("one training epoch of the conv VAE, L=128", "the thesis notebook's loop", ""),
    "train_vae": ("the same epoch through train.py's Lightning path", "the thesis notebook's loop", ""),
    "sample": ("10,000 SarNET-VAE samples, L=128, 4x4 patches", "naive sampler, 48 full passes",
               ">= 40x, >= 0.5 of one dense pass"),
    "sample_pixel": ("10,000 samples, pixel-wise (1x1 patches)", "naive sampler, 783 passes (timed on 500 images)",
                     ">= 500x"),
    "sample_regression": ("10,000 simple-SarNET samples, the reference's noisy scheme, 4x4 patches",
                          "naive: 48 full passes + refine", ""),
    "fid": ("one FID set: 10k SarNET-VAE samples + LeNet features + FID", "the whole 10-set evaluation", ""),
    "nll_exact": ("exact NLL of the binarized MNIST test split, strict SarNET 4x4", "naive: 49 passes per image",
                  ""),
    "nll_iwae": ("IWAE bound, SarNET-VAE L=32, k=100 (1000 images)", "the ELBO alone (k=1)", ""),
}


def markdown(rows) -> str:
    """The speed table of docs/results/speed.md: one row per JSON line, times in seconds."""
    lines = ["| case | what | baseline | baseline s | sarnet s | ratio | goal | floor s | of floor |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        what, baseline, goal = WHAT.get(r["case"], ("", "", ""))
        floor = r.get("floor_s", "")
        of_floor = r.get("of_floor", "")
        if "of_dense_pass" in r:
            of_floor = f"{of_floor} (a dense pass: {r['dense_pass_s']} s, {r['of_dense_pass']})"
        ratio = "" if r["ratio"] is None else f"**{r['ratio']}x**"
        lines.append(f"| `{r['case']}` | {what} | {baseline} | {r['baseline_s'] or ''} | {r['project_s']} | {ratio} "
                     f"| {goal} | {floor} | {of_floor} |")
    machine = {r["machine"] for r in rows}
    return "\n".join(lines) + "\n\n" + "; ".join(sorted(machine))


CASES = {"train": case_train, "train_vae": case_train_vae, "sample": case_sample, "sample_pixel": case_sample_pixel,
         "sample_regression": case_sample_regression,
         "fid": case_fid, "nll": case_nll}


def run(args):
    """The cases named in args.cases (all by default), as `sarnet bench` parsed them; JSON lines on stdout."""
    if args.markdown:
        print(markdown([json.loads(line) for line in Path(args.markdown).read_text().splitlines() if line.strip()]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for case in args.cases or list(CASES):
        result = CASES[case](args)
        rows += result if isinstance(result, list) else [result]
    if args.out:
        Path(args.out).write_text("".join(json.dumps(row) + "\n" for row in rows))
