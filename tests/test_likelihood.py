"""Likelihood: exact normalisation over every binary image, exact == naive per-patch passes, IWAE vs ELBO, refusals."""

import itertools
import math

import pytest
import torch

from sarnet.likelihood import (
    LikelihoodError,
    exact_log_prob,
    flat_metrics,
    iwae_from_log_weights,
    log_weights,
    naive_log_prob,
    score,
    vae_bounds,
)
from sarnet.nn import ConvVAE, SarNet, SarNetVAE
from tests.test_semidense import GEOMETRIES


def all_binary_images(side: int) -> torch.Tensor:
    """Every binary (1, side, side) image: 2^(side^2) of them, float64."""
    bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=side * side)), dtype=torch.float64)
    return bits.view(-1, 1, side, side)


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
    x = all_binary_images(geometry[0][0])
    z = torch.randn(1, latent, dtype=torch.float64).expand(len(x), -1) if latent else None  # held fixed
    log_p = exact_log_prob(net, x, z)
    assert abs(torch.logsumexp(log_p, 0).exp().item() - 1) < 1e-6
    assert log_p.max() < 0 and log_p.std() > 0.5  # a real distribution, not a uniform one


def test_given_mode_is_refused_and_is_not_normalised():
    net = strict_net([[2, 1, 1], [2, 3, 1], [2, 1, 1]], mode="given")
    with pytest.raises(LikelihoodError, match=r"first_patch='given'.*patch 0 is copied.*first_patch=predicted"):
        exact_log_prob(net, all_binary_images(2))
    with pytest.raises(LikelihoodError, match="first_patch='given'"):
        score(net, all_binary_images(2))
    with pytest.raises(LikelihoodError, match="first_patch='given'"):
        score(SarNetVAE(2, [[4, 1, 2], [4, 2, 2], [4, 1, 2]], first_patch="given"), torch.zeros(2, 1, 4, 4))
    # why: output patch 0 reads input patch 0, so the "probabilities" need not sum to one
    from sarnet.likelihood import log_bernoulli
    total = torch.logsumexp(log_bernoulli(net.logits(all_binary_images(2)), all_binary_images(2)), 0).exp()
    assert abs(total.item() - 1) > 1e-3


def test_non_sigmoid_output_and_non_binary_data_are_refused():
    with pytest.raises(LikelihoodError, match="out_activation='none'"):
        score(SarNet([[2, 1, 1], [2, 3, 1], [2, 1, 1]], first_patch="predicted"), all_binary_images(2).float())
    net = strict_net([[2, 1, 1], [2, 3, 1], [2, 1, 1]]).float()
    with pytest.raises(LikelihoodError, match="not binary.*data.binarize=dynamic"):
        score(net, torch.full((3, 1, 2, 2), 0.5))
    with pytest.raises(LikelihoodError, match="likelihood.k=0"):
        score(ConvVAE(2, side=4), torch.zeros(3, 1, 4, 4), k=0)


@pytest.mark.parametrize("geometry", [g for g in GEOMETRIES if g[0][0] <= 12],
                         ids=lambda g: "-".join("x".join(map(str, t)) for t in g))
@pytest.mark.parametrize("latent", [0, 3])
def test_exact_nll_equals_the_sum_of_per_patch_conditionals_of_naive_passes(geometry, latent):
    net = strict_net(geometry, latent, seed=1)
    torch.manual_seed(2)
    x = torch.bernoulli(torch.full((5, *net.image_shape), 0.4, dtype=torch.float64))
    z = torch.randn(5, latent, dtype=torch.float64) if latent else None
    assert (exact_log_prob(net, x, z) - naive_log_prob(net, x, z)).abs().max() < 1e-10


def tiny_vae(kind="sarnet_vae", latent=2, seed=0):
    torch.manual_seed(seed)
    if kind == "vae":
        return ConvVAE(latent, side=4).double().eval()
    return SarNetVAE(latent, [[4, 1, 2], [4, 2, 2], [4, 1, 2]], first_patch="predicted").double().eval()


def binary_batch(n=6, side=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, side, side), 0.35, dtype=torch.float64), generator=g)


@pytest.mark.parametrize("kind", ["sarnet_vae", "vae"])
def test_iwae_with_k1_equals_the_elbo_in_expectation(kind):
    model, x = tiny_vae(kind), binary_batch()
    # 4,000 independent IWAE_1 estimates per image vs the ELBO (its own draws, analytic KL): same expectation.
    log_w, _ = log_weights(model, x, 4000, torch.Generator().manual_seed(0))
    iwae1 = log_w  # IWAE_1 of each single draw is log w itself
    assert torch.allclose(iwae_from_log_weights(log_w[:, :1]), log_w[:, 0])
    elbo = vae_bounds(model, x, 4000, torch.Generator().manual_seed(1))["elbo"]
    se = iwae1.std(1) / math.sqrt(iwae1.shape[1])
    assert ((iwae1.mean(1) - elbo).abs() < 5 * se + 1e-3).all(), (iwae1.mean(1), elbo, se)


@pytest.mark.parametrize("kind", ["sarnet_vae", "vae"])
def test_iwae_bound_does_not_decrease_in_k_on_average(kind):
    model, x = tiny_vae(kind, seed=4), binary_batch(8)
    with torch.no_grad():  # make p(x|z) depend strongly on z, so that q(z|x) is far from the posterior
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.ConvTranspose2d)) or hasattr(module, "mask"):
                module.weight.mul_(4)
    # 2,560 draws per image (fixed seed), cut into groups of k: IWAE_k averaged over the groups, for each k.
    log_w, _ = log_weights(model, x, 2560, torch.Generator().manual_seed(0))
    means = [iwae_from_log_weights(log_w.reshape(-1, k)).mean().item() for k in (1, 4, 16, 64, 256)]
    assert all(b >= a for a, b in zip(means, means[1:])), means
    assert means[-1] - means[0] > 0.1, means  # and it does tighten


def test_score_reports_nats_bits_per_dim_and_standard_error():
    net = strict_net([[4, 1, 2], [4, 2, 2], [4, 1, 2]]).float()
    x = binary_batch(10).float()
    out = score(net, x, batch_size=3)
    per_image = -exact_log_prob(net, x)
    assert out["kind"] == "exact" and out["n_images"] == 10 and out["pixels"] == 16
    assert out["nll"]["nats"] == pytest.approx(per_image.mean().item())
    assert out["nll"]["se"] == pytest.approx(per_image.std().item() / math.sqrt(10))
    assert out["nll"]["bpd"] == pytest.approx(out["nll"]["nats"] / (16 * math.log(2)))
    assert set(flat_metrics(out)) == {"test/nll", "test/nll_se", "test/bpd"}
    vae = score(tiny_vae().float(), x, k=5, batch_size=7, seed=0)
    assert vae["kind"] == "bound" and vae["k"] == 5
    assert vae["nll"]["nats"] <= vae["elbo"]["nats"] + 1.0  # -IWAE_5 below -ELBO up to noise
    assert score(tiny_vae().float(), x, k=5, batch_size=7, seed=0) == vae  # seeded: reproducible
    assert {"test/elbo_nll", "test/kl", "test/iwae_k"} <= set(flat_metrics(vae))


def test_log_weights_split_k_larger_than_the_batch():
    model, x = tiny_vae(), binary_batch(3)
    log_w, log_px = log_weights(model, x, 7, torch.Generator().manual_seed(0), batch_size=3)  # 3 chunks of draws
    assert log_w.shape == (3, 7) and log_w.dtype == torch.float64 and torch.isfinite(log_w).all()
    assert (log_px < 0).all()
