"""Likelihood: exact normalisation over every binary image, exact == naive per-patch passes, IWAE vs ELBO."""

import itertools
import json
import math

import pytest
import torch

import sarnet.likelihood as lk
from sarnet.nn import ConvVAE, SarNet, SarNetVAE
from sarnet.sampling import fill_naive, sample_images
from tests.conftest import NETS, ROOT, csv_rows, fake_checkpoint, needs_data, ok, results


def strict_net(geometry, latent=0, mode="predicted", seed=0):
    torch.manual_seed(seed)
    net = SarNet(geometry, latent_dim=latent, first_patch=mode, out_activation="sigmoid").double()
    for layer in net.layers:  # far from uniform: a normalisation bug cannot hide behind p = 1/2
        torch.nn.init.uniform_(layer.bias, -2, 2)
        layer.weight.data.normal_(0, 2 * layer.weight.shape[1] ** -0.5).mul_(layer.mask)
    return net.eval()


@pytest.mark.parametrize("geometry, latent", [
    ([[2, 1, 1], [2, 3, 1], [2, 1, 1]], 0),             # 2x2 images, patch 1: 16 images
    ([[4, 1, 2], [4, 2, 2], [4, 1, 2]], 0),             # 4x4 images, patch 2: 65,536 images
    ([[4, 1, 2], [2, 3, 1], [4, 2, 2], [4, 1, 2]], 3),  # ... with a compressed hidden layer and a fixed latent
], ids=["2x2-p1", "4x4-p2", "4x4-p2-latent"])
def test_exp_minus_nll_sums_to_one_over_every_binary_image(geometry, latent):
    net = strict_net(geometry, latent)
    side = geometry[0][0]  # every binary (1, side, side) image: 2^(side^2) of them
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=side ** 2)), dtype=torch.float64).view(-1, 1, side, side)
    z = torch.randn(1, latent, dtype=torch.float64).expand(len(x), -1) if latent else None  # held fixed
    log_p = lk.exact_log_prob(net, x, z)
    assert abs(torch.logsumexp(log_p, 0).exp().item() - 1) < 1e-6
    assert log_p.max() < 0 and log_p.std() > 0.5  # a real distribution, not a uniform one
    given = strict_net(geometry, latent, mode="given")  # why it is refused: output patch 0 reads input patch 0
    assert abs(torch.logsumexp(lk.log_bernoulli(given.logits(x, z), x), 0).exp().item() - 1) > 1e-3


SMALL = [[4, 1, 2], [4, 2, 2], [4, 1, 2]]  # (what has no likelihood: tests/bad_inputs.py API)


@pytest.mark.parametrize("name", [n for n, (g, act) in NETS.items() if act == "sigmoid" and g[0][0] <= 12])
@pytest.mark.parametrize("latent", [0, 3])
def test_exact_nll_equals_the_sum_of_per_patch_conditionals_of_naive_passes(name, latent):
    net = strict_net(NETS[name][0], latent, seed=1)
    torch.manual_seed(2)
    x = torch.bernoulli(torch.full((5, *net.image_shape), 0.4, dtype=torch.float64))
    z = torch.randn(5, latent, dtype=torch.float64) if latent else None
    assert (lk.exact_log_prob(net, x, z) - lk.naive_log_prob(net, x, z)).abs().max() < 1e-10


def tiny_vae(kind="sarnet_vae", latent=2, seed=0, sharp=False):
    """sharp: weights x 4, so that p(x|z) depends strongly on z and the encoder's q(z|x) is far from the posterior."""
    torch.manual_seed(seed)
    model = ConvVAE(latent, side=4) if kind == "vae" else SarNetVAE(latent, SMALL, first_patch="predicted")
    with torch.no_grad():
        for module in model.modules() if sharp else ():
            if isinstance(module, (torch.nn.Linear, torch.nn.ConvTranspose2d)) or hasattr(module, "mask"):
                module.weight.mul_(4)
    return model.double().eval()


def binary_batch(n=6, side=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, side, side), 0.35, dtype=torch.float64), generator=g)


@pytest.mark.parametrize("kind", ["sarnet_vae", "vae"])
def test_iwae_with_k1_equals_the_elbo_in_expectation_and_tightens_in_k(kind):
    model, x = tiny_vae(kind), binary_batch()
    # 4,000 independent IWAE_1 estimates per image vs the ELBO (its own draws, analytic KL): same expectation.
    log_w, _ = lk.log_weights(model, x, 4000, torch.Generator().manual_seed(0))
    assert torch.allclose(lk.iwae_from_log_weights(log_w[:, :1]), log_w[:, 0])  # IWAE_1 of a single draw: log w
    elbo = lk.vae_bounds(model, x, 4000, torch.Generator().manual_seed(1))["elbo"]
    se = log_w.std(1) / math.sqrt(log_w.shape[1])
    assert ((log_w.mean(1) - elbo).abs() < 5 * se + 1e-3).all(), (log_w.mean(1), elbo, se)
    # and IWAE_k does not decrease in k on average: 2,560 draws per image (fixed seed), cut into groups of k
    model, x = tiny_vae(kind, seed=4, sharp=True), binary_batch(8)
    log_w, _ = lk.log_weights(model, x, 2560, torch.Generator().manual_seed(0))
    means = [lk.iwae_from_log_weights(log_w.reshape(-1, k)).mean().item() for k in (1, 4, 16, 64, 256)]
    assert all(b >= a for a, b in zip(means, means[1:])), means
    assert means[-1] - means[0] > 0.1, means  # and it does tighten


def test_score_reports_nats_bits_per_dim_and_standard_error():
    net = strict_net(SMALL).float()
    x = binary_batch(10).float()
    out = lk.score(net, x, batch_size=3)
    per_image = -lk.exact_log_prob(net, x)
    assert out["kind"] == "exact" and out["n_images"] == 10 and out["pixels"] == 16
    assert out["nll"]["nats"] == pytest.approx(per_image.mean().item())
    assert out["nll"]["se"] == pytest.approx(per_image.std().item() / math.sqrt(10))
    assert out["nll"]["bpd"] == pytest.approx(out["nll"]["nats"] / (16 * math.log(2)))
    assert lk.flat_metrics(out).keys() == {"test/nll", "test/nll_se", "test/bpd", "test/nll_images"}
    vae = lk.score(tiny_vae().float(), x, k=5, batch_size=7, seed=0)
    assert vae["kind"] == "bound" and vae["k"] == 5
    assert vae["nll"]["nats"] <= vae["elbo"]["nats"] + 1.0  # -IWAE_5 below -ELBO up to noise
    assert lk.score(tiny_vae().float(), x, k=5, batch_size=7, seed=0) == vae  # seeded: reproducible
    assert {"test/elbo_nll", "test/kl", "test/iwae_k"} <= set(lk.flat_metrics(vae))
    log_w, log_px = lk.log_weights(tiny_vae(), binary_batch(3), 7, torch.Generator().manual_seed(0), batch_size=3)
    assert log_w.shape == (3, 7) and log_w.dtype == torch.float64 and torch.isfinite(log_w).all()  # k > batch: split
    assert (log_px < 0).all()


@pytest.mark.parametrize("kind", ["sarnet", "sarnet_vae", "sarnet_vae_refined"])
def test_an_interrupted_scoring_resumed_equals_an_uninterrupted_one(kind, tmp_path, monkeypatch):
    model = strict_net(SMALL) if kind == "sarnet" else tiny_vae()
    # 2 images per chunk, 5 chunks (a VAE's chunk holds batch_size // k images)
    x, args = binary_batch(9), dict(k=5, batch_size=2 if kind == "sarnet" else 10, seed=0)
    if kind == "sarnet_vae_refined":  # the refined q is saved with the progress, not refitted on resuming
        args["refine_steps"] = 20
    whole = lk.score(model, x, **args)
    monkeypatch.setattr(lk, "SAVE_EVERY_S", 0.0)  # save after every chunk
    inner = lk.exact_log_prob if kind == "sarnet" else lk.vae_bounds
    calls = []

    def dies_on_the_third(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return inner(*a, **kw)

    monkeypatch.setattr(lk, inner.__name__, dies_on_the_third)  # counts every chunk scored from here on
    state = tmp_path / "iwae.progress"
    with pytest.raises(KeyboardInterrupt):
        lk.score(model, x, **args, resume=state)
    assert torch.load(state, weights_only=True)["done"] == 4  # the two chunks before the interruption
    assert lk.score(model, x, **args, resume=state) == whole and len(calls) == 6  # the three chunks left
    assert lk.score(model, x, **args, resume=state) == whole and len(calls) == 6  # a finished file: nothing recomputed
    if kind == "sarnet_vae":  # the file of another scoring is refused in one line, before any work
        for change, what in ((dict(seed=1), "seed"), (dict(k=4), "k"), (dict(x=x[:3]), "images"),
                             (dict(model=tiny_vae(seed=1)), "model")):
            call = {"model": model, "x": x, **args, **change}
            with pytest.raises(lk.LikelihoodError, match=f"belongs to another scoring \\(different {what}\\)") as e:
                lk.score(call.pop("model"), call.pop("x"), **call, resume=state)
            assert "\n" not in str(e.value)
        state.write_bytes(b"not a torch file")
        with pytest.raises(lk.LikelihoodError, match="unreadable"):
            lk.score(model, x, **args, resume=state)
        assert len(calls) == 6


def log_marginal_by_quadrature(model, x, half_width=6.0, n=241):
    """log p(x) = log of the integral of p(x|z) N(z; 0, I) over a 2-d latent, on an n x n grid (for the model
    below a 481-point grid over +-8 agrees to 4e-5 nats: far below the tolerances it is used with)."""
    t = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    z = torch.cartesian_prod(t, t)
    log_cell = 2 * math.log(t[1] - t[0])
    out = []
    with torch.no_grad():
        for image in x:
            xi = image[None]
            lp = lk.log_bernoulli(lk.decoder_logits(model, xi, z), xi.expand(len(z), *xi.shape[1:])) + lk.log_normal(z)
            out.append(torch.logsumexp(lp, 0) + log_cell)
    return torch.stack(out)


def test_refined_q_tightens_the_bound_and_stays_below_the_exact_log_likelihood():
    model, x = tiny_vae(seed=4, sharp=True), binary_batch(8)  # a gap to close
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    exact = log_marginal_by_quadrature(model, x)
    plain = lk.vae_bounds(model, x, 16, torch.Generator().manual_seed(0))
    q = lk.refine_posterior(model, x, 200, lr=0.05, generator=torch.Generator().manual_seed(1))
    refined = lk.vae_bounds(model, x, 16, torch.Generator().manual_seed(0), q=q)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())  # q moved, the model did not
    assert refined["elbo"].mean() > plain["elbo"].mean() + 0.5, (refined["elbo"], plain["elbo"])
    assert refined["iwae"].mean() > plain["iwae"].mean()
    # still a bound on log p(x): IWAE_k <= log p(x) in expectation (a q whose density were not the one z is drawn
    # from would break it); 256 draws per image average away the noise of one IWAE_16
    many = lk.log_weights(model, x, 4096, torch.Generator().manual_seed(2), q=q)[0]
    iwae16 = lk.iwae_from_log_weights(many.reshape(-1, 16)).reshape(len(x), -1)
    se = iwae16.std(1) / math.sqrt(iwae16.shape[1])
    assert (iwae16.mean(1) <= exact + 3 * se + 1e-6).all(), (iwae16.mean(1), exact, se)
    assert (lk.iwae_from_log_weights(many) - exact).abs().max() < 0.05  # and tight at large k: q covers the posterior


# ---- sampling binarized models: Bernoulli draws with a temperature (fast == naive: test_sampling.py) ---------

def test_cold_bernoulli_draws_are_greedy_and_the_sample_config_reaches_the_sampler():
    net = strict_net([[6, 1, 1], [6, 2, 1], [6, 1, 1]], seed=6)
    x = torch.zeros(4, 1, 6, 6, dtype=torch.float64)
    u = torch.rand(4, 36, dtype=torch.float64)
    cold = fill_naive(net, x, mode="bernoulli", temperature=1e-6, uniforms=u)
    # the greedy image: each pixel is 1 iff its conditional probability given the pixels before it is > 1/2
    greedy = x.clone().flatten(1)
    for i in range(36):
        greedy[:, i] = (net.logits(greedy.view_as(x)).flatten(1)[:, i] > 0).double()
    assert torch.equal(cold.flatten(1), greedy)
    net = strict_net([[6, 1, 1], [6, 2, 1], [6, 1, 1]], latent=2, seed=7).float()
    cfg = {"mode": "bernoulli", "temperature": 0.8, "th": None}
    a, b = (sample_images(net, 20, {**cfg, "method": m}, torch.Generator().manual_seed(1)) for m in ("naive", "fast"))
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}
    vae = ConvVAE(2, side=4)
    draws = sample_images(vae, 20, {"mode": "bernoulli", "temperature": 1.0, "th": None}, torch.Generator())
    assert set(draws.unique().tolist()) <= {0.0, 1.0}


# ---- configs (what the experiments compose to: test_train_smoke.py): fail-fast refusals, one smoke run ------

@pytest.mark.slow  # ~25 s on a loaded 2-core CPU (first_patch=given refused: tests/bad_inputs.py, likelihood=default)
@needs_data
def test_smoke_run_logs_nll_and_bits_per_dim_to_results_and_csv(tmp_path):
    out = ok("experiment=nll_sarnet_vae", "trainer=smoke", "logger=csv", f"hydra.run.dir={tmp_path}")
    metrics = results(tmp_path)["metrics"]
    assert metrics["test/nll"] <= metrics["test/elbo_nll"] + 5 and metrics["test/iwae_k"] == 2
    done = out.split("done: ")[1].splitlines()[0]  # the end-of-run line names it
    assert f"test/nll {metrics['test/nll']:.4g} ± {metrics['test/nll_se']:.2g}" in done
    assert metrics["test/bpd"] == pytest.approx(metrics["test/nll"] / (784 * math.log(2)))
    assert {"test/nll", "test/bpd", "test/nll_se"} <= set(csv_rows(tmp_path)[0])


# ---- scripts/likelihood.py -----------------------------------------------------------------------------------

def script_checkpoint(tmp_path, first_patch, kind="sarnet"):
    geometry = [[28, 1, 4], [14, 1, 2], [28, 1, 4]]
    net = SarNet(geometry, 0, first_patch, "sigmoid") if kind == "sarnet" else SarNetVAE(2, geometry, first_patch)
    return fake_checkpoint(tmp_path / "checkpoints" / f"{kind}_{first_patch}.ckpt", net)


@needs_data
@pytest.mark.parametrize("kind", ["sarnet", "sarnet_vae"])
def test_likelihood_script_scores_a_checkpoint_on_the_binarized_test_split(kind, tmp_path, monkeypatch, capsys):
    from sarnet.cli import likelihood as script
    monkeypatch.chdir(ROOT)  # a copied checkpoint (no run config): MNIST under ./data, binarize=dynamic
    ckpt = script_checkpoint(tmp_path, "predicted", kind)
    args = ["--ckpt", str(ckpt), "--max-images", "30", "--k", "3", "--no-progress"]
    row = script.main([*args, "--json", str(tmp_path / "out.json")])
    assert row["n_images"] == 30 and row["kind"] == ("exact" if kind == "sarnet" else "bound")
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "out.json").read_text())
    assert "binarize=dynamic" in row["data"] and row["nll"]["nats"] > 0
    resume = [*args, "--resume", str(tmp_path / "progress.pt")]
    first, again = script.main(resume), script.main(resume)  # the second reads the finished file
    assert {**first, "seconds": 0} == {**again, "seconds": 0} == {**row, "seconds": 0}
    if kind == "sarnet_vae":  # the flag reaches lk.score(): its result says so, and q refined fits the ELBO better
        refined = script.main([*args, "--refine-steps", "30", "--refine-lr", "0.05"])
        assert refined["refine"] == {"steps": 30, "lr": 0.05} and "refine" not in row
        assert refined["elbo"]["nats"] < row["elbo"]["nats"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        script.main(["--ckpt", str(script_checkpoint(tmp_path, "given", kind)), "--no-progress"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "first_patch='given'" in err and err.count("\n") == 1
