"""bf16 where it keeps the results: bf16-mixed training (losses, KL and optimizer state in float32), bf16 sampling
and FID features within their bounds of float32, float32 unchanged, runs of other precisions kept apart."""

from functools import partial
from itertools import product

import pytest
import torch

from sarnet.losses import CrossEntropyLoss, ReconstructionLoss
from sarnet.module import SarnetModule
from sarnet.nn import ConvVAE, SarNet, SarNetVAE
from sarnet.sampling import BF16_SAMPLE_BOUND, generate, generate_regression
from tests.conftest import fake_run, images, needs_data, python, results, table, train_inprocess

NETS = {
    "sarnet_vae": (lambda: SarNetVAE(8), ReconstructionLoss()),
    "vae": (lambda: ConvVAE(8), ReconstructionLoss()),
    "sarnet_l1_ssim": (lambda: SarNet(), ReconstructionLoss("power", power=1, reduction="mean", ssim_weight=0.5)),
    "cls_sarnet": (lambda: SarNet([[28, 2, 4], [14, 2, 2], [28, 2, 4], [28, 2, 4]], out_activation="softmax"),
                   CrossEntropyLoss()),
}


def step_terms(make, loss, x, bf16):
    """One training step of SarnetModule as Lightning's bf16-mixed runs it (forward and loss under CPU autocast,
    backward and the optimizer step outside): (objective, the per-image terms, the net's logits' dtype, grads)."""
    torch.manual_seed(0)
    net = make()
    module = SarnetModule(net, loss, partial(torch.optim.Adam, lr=1e-3))
    seen = {}
    module.log = lambda *a, **k: None
    module._log_train_epoch = lambda per_image, terms, n, i: seen.update(terms=terms, per_image=per_image)
    hook = net.register_forward_hook(lambda m, i, out: seen.update(logits=out.logits.detach(), out=out))
    opt = module.configure_optimizers()
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        objective = module.training_step((x, None), 0)
    objective.backward()
    opt.step()
    hook.remove()
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.numel() > 1]
    return objective, seen, {n: p.grad for n, p in net.named_parameters()}, state


@pytest.mark.parametrize("name", list(NETS))
def test_bf16_mixed_runs_the_net_in_bf16_and_keeps_losses_kl_and_adam_state_float32(name):
    make, loss = NETS[name]
    x = images(make(), 4)  # one-hot classes for the classification net
    full, _, full_grads, _ = step_terms(make, loss, x, bf16=False)
    mixed, seen, grads, state = step_terms(make, loss, x, bf16=True)
    logits = seen["logits"]
    assert logits.dtype == torch.bfloat16  # the matmuls ran in bf16
    if "vae" in name:  # a VAE's heads and z stay float32
        assert seen["out"].mu.dtype == seen["out"].logvar.dtype == torch.float32
    assert mixed.dtype == seen["per_image"].dtype == torch.float32
    assert all(t.dtype == torch.float32 for t in seen["terms"].values())  # reconstruction and KL
    net = make()  # the loss of those bf16 logits taken in float32, outside autocast (SSIM's matmuls included)
    expected = loss(logits.float(), net.activate(logits.float()), x)
    torch.testing.assert_close(seen["terms"]["recon"].detach(), expected, rtol=1e-6, atol=1e-6)
    assert all(g.dtype == torch.float32 for g in grads.values()) and all(t.dtype == torch.float32 for t in state)
    torch.testing.assert_close(mixed, full, rtol=2e-2, atol=0)  # the same loss, to bf16's precision
    for n, g in grads.items():  # the same gradients up to bf16's rounding (the conv VAE's decoder: ~7 %)
        assert (g - full_grads[n]).norm() <= 0.15 * full_grads[n].norm() + 1e-6, n


def realistic(make, seed=0):
    """make(), seeded, its masked layers' biases uniform in [-1, 1] (the default init's near-zero biases give
    all-grey images)."""
    torch.manual_seed(seed)
    model = make()
    for layer in getattr(model.ar_net, "layers", ()):
        torch.nn.init.uniform_(layer.bias, -1, 1)
    return model.eval()


BF16_DRAWS = [  # (the draw, the bound of its mean pixel difference to float32 with the same z and uniforms)
    *[(lambda m=m, th=th, **kw: generate(realistic(lambda: SarNetVAE(16)), 64, method=m, th=th, **kw),
       BF16_SAMPLE_BOUND) for m in ("fast", "naive") for th in (None, 0.105)],
    *[(lambda mode=mode, **kw: generate(realistic(lambda: ConvVAE(8)), 64, mode=mode, **kw), BF16_SAMPLE_BOUND)
      for mode in ("mean", "bernoulli")],
    *[(lambda m=m, **kw: generate_regression(realistic(SarNet), 16, 0.65, 0.3, None, True, method=m, **kw),
       10 * BF16_SAMPLE_BOUND) for m in ("fast", "naive")],  # linear outputs: not squashed by a sigmoid
]


@pytest.mark.parametrize("draw, bound", BF16_DRAWS, ids=[str(i) for i in range(len(BF16_DRAWS))])
def test_bf16_sampling_stays_within_its_bound_of_float32_on_the_same_draws(draw, bound):
    full, half = (draw(dtype=d, generator=torch.Generator().manual_seed(3)) for d in ("float32", "bfloat16"))
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert 0 < (half - full).abs().mean().item() < bound  # bf16 matmuls did run, and stay close


@needs_data
def test_bf16_fid_features_stay_close_and_are_recorded_as_another_protocol():
    from sarnet.data import real_images
    from sarnet.metrics.fid import FIDEvaluator, load_classifier
    classifier, real = load_classifier("mnist", "data"), real_images("data", "mnist", [5], "test")
    model = realistic(lambda: SarNetVAE(8))
    values = {}
    for dtype in ("float32", "bfloat16"):
        evaluator = FIDEvaluator(classifier, real, "test_resampled", n_gen=300, n_sets=1, seed=0, batch_size=150,
                                 dtype=dtype)
        assert evaluator.protocol()["dtype"] == dtype
        values[dtype] = evaluator.evaluate(lambda n, g: generate(model, n, generator=g))["mean"]
    assert values["float32"] != values["bfloat16"]
    assert abs(values["bfloat16"] - values["float32"]) < 0.01 * values["float32"]


@needs_data
def test_bf16_mixed_training_end_to_end_records_its_precision_and_dtypes(tmp_path):
    train_inprocess("trainer=smoke", "logger=csv", "latent_dim=8", "trainer.precision=bf16-mixed",
                    "sample.dtype=bfloat16", "fid.dtype=bfloat16", "fid.knn.n=0", f"hydra.run.dir={tmp_path}",
                    check=True)
    got = results(tmp_path)
    assert got["precision"] == "bf16-mixed" and got["sampling"]["dtype"] == "bfloat16"
    assert got["fid_protocol"]["dtype"] == "bfloat16" and got["metrics"]["fid/mean"] > 0


def test_tables_never_merge_precisions_and_test_them_against_each_other(tmp_path):
    # experiment=precision_parity: FID 1.5 / 1.7 + 0.1 per seed, 0.05 more in bf16-mixed; test loss 100 + 1 per seed
    fids = {"sarnet_vae": 1.5, "vae": 1.7}
    for i, (model, precision, k) in enumerate(product(fids, ("32-true", "bf16-mixed"), range(3))):
        bf16 = 0.05 * (precision == "bf16-mixed")
        fake_run(tmp_path / "sweep" / str(i), model, 32, 1234 + k, fid=fids[model] + 0.1 * k + bf16,
                 extra={"precision": precision, "code": {"commit": "0" * 40, "dirty": False},
                        "metrics": {"test/loss": 100.0 + k}})
    result, md, _ = table(tmp_path, tmp_path / "sweep")
    (t,) = result["tables"]
    cells = {(r["model"], r["precision"]): r for r in t["rows"] if r["status"] == "ok"}
    assert len(cells) == 4 and all(len(r["seeds"]) == 3 for r in cells.values())
    assert abs(cells["sarnet_vae", "bf16-mixed"]["fid_mean"] - cells["sarnet_vae", "32-true"]["fid_mean"]
               - 0.05) < 1e-9
    assert "sarnet_vae (trained bf16-mixed)" in md
    (w,) = t["welch"]  # sarnet_vae vs vae: the reference's float32 runs, not the bf16 ones
    assert (w["a"], w["b"], w["mean_a"]) == ("sarnet_vae", "vae", cells["sarnet_vae", "32-true"]["fid_mean"])
    tests = {(w["model"], w["metric"]): w for w in t["precision_welch"]}
    assert set(tests) == {(m, k) for m in ("sarnet_vae", "vae") for k in ("fid", "test_loss")}
    assert tests["vae", "test_loss"]["p"] == 1.0 and tests["sarnet_vae", "fid"]["seeds"] == [3, 3]
    assert "float32 training (32-true) vs another trainer.precision" in md


def test_a_process_that_keeps_freed_memory_stops_faulting_pages_in_every_step():
    """sarnet.keep_freed_memory: a bf16-mixed SarNET-VAE step's page faults nearly vanish (counted, not timed). The
    median step of six: in some layouts of the address space the heap still grows in a step or two after the switch
    (fragmentation), before every step fits in what it holds."""
    code = """
import resource, statistics, torch, sarnet
from functools import partial
from sarnet.losses import ReconstructionLoss
from sarnet.module import SarnetModule
from sarnet.nn import SarNetVAE
torch.set_num_threads(1)  # one thread, one malloc arena: other threads' arenas would count faults keep does not govern
module = SarnetModule(SarNetVAE(128), ReconstructionLoss(), partial(torch.optim.Adam, lr=1e-3))
module.log = lambda *a, **k: None
opt, x = module.configure_optimizers(), torch.rand(64, 1, 28, 28)
def faults(steps=6):
    per_step = []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = module.training_step((x, None), 0)
        opt.zero_grad(); loss.backward(); opt.step()
        per_step.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(per_step)
faults(2)  # warm-up
before = faults()
kept = sarnet.keep_freed_memory()
faults(2)  # the heap grows to the step's peak
print(before, kept, faults())
"""
    before, kept, after = python("-c", code, timeout=300, check=True).stdout.split()
    if kept != "True":
        pytest.skip("not glibc: nothing to keep")
    assert float(after) * 10 < float(before), (before, after)
