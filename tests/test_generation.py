"""Patch importance, completion, checkpoint loading (tiny random models), the generation CLIs on smoke runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sarnet.checkpoint import CheckpointError, load_model, load_run_config
from sarnet.cli.common import real_image
from sarnet.explain import candidates, importance_overlay, patch_importance
from sarnet.nn import SarNet, SarNetVAE
from sarnet.sampling import complete, interpolate, patch_units
from tests.conftest import fake_checkpoint, run_script

TINY = [[8, 1, 2], [4, 2, 1], [8, 2, 2], [8, 1, 2]]  # 16 patches of 2x2 pixels
OwnNet = type("OwnNet", (SarNet,), {"__module__": __name__})  # a user's subclass: checkpoints rebuild it as itself


def drifted(net):
    """Random weights everywhere, masked entries included (as weight decay would leave them)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
    return net


# ---- (a) layer-1 patch importance -------------------------------------------------------------------------

@pytest.mark.parametrize("first_patch", ["given", "predicted"])
def test_importance_ranks_the_masks_candidates_as_brute_force_does(first_patch):
    net = drifted(SarNet(TINY, latent_dim=3, first_patch=first_patch))  # masked weights non-zero: the mask must act
    layer, x = net.layers[0], torch.rand(64) + 0.1
    wm = layer.weight * layer.mask
    for o in range(net.n_patches):
        expected = list(range(o)) if o or first_patch == "predicted" else [0]  # type a: j < o, 0 sees 0
        assert candidates(layer, o).tolist() == expected
        top_k = 5 if o % 2 else net.n_patches  # the top 5, or every candidate
        patches, scores = patch_importance(net, x.view(1, 8, 8), o, top_k=top_k)
        # The reference: a one-patch column mask M_j on the rows of out-patch o, |x (W*M*M_j)^T| summed.
        brute = {}
        for j in expected:
            m_j = torch.zeros_like(wm)
            m_j[(layer.deg_out == o).nonzero(), (layer.deg_in == j).nonzero().T] = 1
            brute[j] = (torch.cat([x, torch.randn(3)]) @ (wm * m_j).T).abs().sum().item()
        top = sorted(brute, key=lambda j: -brute[j])[:top_k]
        assert patches.tolist() == top  # (a conv VAE refused: tests/bad_inputs.py API)
        raw = torch.tensor([brute[j] for j in top])
        if len(top) > 1:
            torch.testing.assert_close(scores, (raw - raw.min()) / (raw.max() - raw.min()))
        assert len(top) == 0 or (scores.min() >= 0 and scores.max() <= 1 and scores[0] == 1)  # one patch: scores 1
        assert len(top) <= 1 or scores[-1] == 0
    patches, scores = patch_importance(SarNet(TINY), torch.zeros(1, 8, 8), 9)  # a black image: all raw scores 0
    assert len(patches) == 0 and len(scores) == 0  # are dropped


def test_overlay_paints_target_white_and_keeps_the_rest_grey():
    image = torch.rand(1, 8, 8) * 0.5
    rgb = importance_overlay(image, 5, torch.tensor([0, 3]), torch.tensor([1.0, 0.0]), patch_size=2)
    assert (rgb[:, 2:4, 2:4] == 1).all()  # patch 5 = row 1, col 1
    assert torch.equal(rgb[:, 4:, :], image[0, 4:, :].expand(3, -1, -1))  # untouched patches stay grey; rgb: (3, 8, 8)
    assert not torch.equal(rgb[:, 0:2, 0:2], image[0, 0:2, 0:2].expand(3, -1, -1))


# ---- (b) completion -------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fast", "naive"])
def test_completion_keeps_given_patches_bit_exact(method):
    torch.manual_seed(0)
    model = SarNetVAE(latent_dim=8).eval()
    images = torch.rand(2, 1, 28, 28)
    # a prefix, a patch-aligned region that is not one, and a 0/1 long keep (the mask it spells)
    for keep in (24, torch.arange(49) % 3 == 0, (torch.arange(49) < 10).long()):
        filled, masked = complete(model, images, keep, n=3, th=0.15, method=method)
        known = keep if isinstance(keep, torch.Tensor) else torch.arange(49) < keep
        cols = torch.cat([patch_units(model.decoder, k) for k in known.nonzero().squeeze(1).tolist()])
        assert filled.shape == (2, 3, 1, 28, 28)
        given = images.flatten(1)[:, cols]
        assert torch.equal(filled.flatten(2)[:, :, cols], given[:, None].expand(-1, 3, -1))
        assert torch.equal(masked.flatten(1)[:, cols], given)
        assert (masked.flatten(1)[:, [c for c in range(784) if c not in set(cols.tolist())]] == 0).all()


# ---- (d) checkpoint loading -----------------------------------------------------------------------------

def test_load_model_round_trips_and_refuses_what_is_no_sarnet_checkpoint(tmp_path):
    """(Damaged files: test_resume.py, test_a_damaged_checkpoint_is_refused_by_its_readers_...)"""
    net = drifted(OwnNet(TINY))
    fake_checkpoint(tmp_path / "checkpoints" / "last.ckpt", net)
    loaded = load_model(tmp_path)  # a run dir: its last checkpoint
    assert type(loaded) is OwnNet and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    run = load_run_config(tmp_path / "checkpoints" / "last.ckpt")  # no run config stored: the defaults
    assert run["data"]["dataset"] == "mnist" and run["sample"] == {}
    torch.save({"state_dict": {}, "epoch": 3}, tmp_path / "other.ckpt")
    other = {**net.config, "geometry": [[8, 1, 2], [4, 3, 1], [8, 2, 2], [8, 1, 2]]}  # 3 hidden channels, not 2
    fake_checkpoint(tmp_path / "shape.ckpt", net, other)
    with torch.no_grad():
        net.layers[1].mask[0, -1] = True  # a mask the rule does not build (same shape)
    fake_checkpoint(tmp_path / "mask.ckpt", net)
    for name, match in [("missing", "no such"), ("other", "not a sarnet checkpoint"), ("shape", "do not fit"),
                        ("mask", "mask layers.1.mask differs")]:
        with pytest.raises(CheckpointError, match=match):
            load_model(tmp_path / f"{name}.ckpt")


# ---- (c) the CLIs on real smoke checkpoints -------------------------------------------------------------

@pytest.fixture
def sarnet_vae_ckpt(smoke_run):
    return smoke_run("sarnet_vae") / "checkpoints" / "last.ckpt"


def cli_inprocess(script, ckpt, *args, check=True):
    """A script on a checkpoint, run in-process from its folder -> (status, stdout, stderr); check: status 0."""
    return run_script(f"{script}.py", "--ckpt", ckpt, "--device", "cpu", *args, cwd=ckpt.parent, check=check)


def test_a_copied_checkpoint_samples_and_scores_as_in_its_run(sarnet_vae_ckpt, tmp_path):
    """A copy in an empty dir (no .hydra/) draws and scores as the original: the checkpoint carries its run's sampling,
    data and FID protocol; fid.py scores a grid of thresholds, the run's own (0.095 at L=8) when none is given."""
    copy = tmp_path / "model.ckpt"
    copy.write_bytes(sarnet_vae_ckpt.read_bytes())
    model = load_model(copy)
    assert isinstance(model, SarNetVAE) and model.latent_dim == 8 and not model.training
    original, copied = load_run_config(sarnet_vae_ckpt), load_run_config(copy)
    assert copied["run_dir"] == copy.parent and copied["sample"]["th"] == pytest.approx(0.095)
    assert {k: copied[k] for k in ("sample", "fid", "data")} == {k: original[k] for k in ("sample", "fid", "data")}
    assert copied["data"]["classes"] == [5] and copied["data"]["dataset"] == "mnist" and copied["fid"]["n_gen"] == 200
    assert Path(copied["data"]["root"]).is_absolute()
    for i, ckpt in enumerate((sarnet_vae_ckpt, copy)):
        cli_inprocess("sample", ckpt, "--n", "8", "--seed", "3", "--out", str(tmp_path / f"s{i}.png"))
    assert (tmp_path / "s0.png").read_bytes() == (tmp_path / "s1.png").read_bytes()
    _, out, _ = cli_inprocess("fid", sarnet_vae_ckpt, "--n-gen", "32")
    _, grid, _ = cli_inprocess("fid", copy, "--n-gen", "32", "--th", "0.095,none", "--json", tmp_path / "f.json")
    rows = [json.loads(line) for line in grid.splitlines()]
    assert [r["th"] for r in rows] == [0.095, None] and json.loads((tmp_path / "f.json").read_text()) == rows
    assert all(r["n_gen"] == 32 and len(r["fid_values"]) == 2 and r["fid_mean"] > 0 for r in rows)  # the run's 2 sets
    assert rows[0]["fid_values"] == json.loads(out)["fid_values"]


DEFAULT_OUT = [("complete", ["--n", "3", "--keep-rows", "3"], "sarnet_vae"),  # no --out: under the run's images/
               ("interpolate", ["--steps", "4"], "sarnet_vae"), ("importance", ["--targets", "2,4"], "sarnet_vae")]


@pytest.mark.parametrize("script, args, model", [*DEFAULT_OUT,
    ("sample", ["--n", "4", "--method", "naive"], "sarnet_vae"),
    ("sample", ["--n", "4", "--mode", "bernoulli", "--temperature", "0.8"], "sarnet_vae"),
    ("sample", ["--n", "8", "--th", "none"], "vae"),
    ("sample", ["--n", "4", "--mode", "bernoulli", "--temperature", "0.5"], "vae"),  # pixels independent given z
    ("complete", ["--n", "2", "--keep", "10", "--method", "naive"], "sarnet_vae"),
    ("interpolate", ["--steps", "3"], "vae"),
    ("importance", ["--method", "gradient", "--targets", "5,20"], "sarnet_vae"),
    ("sample", ["--n", "4", "--th", "0"], "sarnet"),  # regression SarNET; th 0.15 blanks a smoke model
    ("complete", ["--n", "2"], "sarnet"),
    ("importance", ["--targets", "4,30"], "sarnet"),
    # classification nets: categorical draws (their runs' sample.mode), grey images
    *[(script, ["--n", "4"], model) for script in ("sample", "complete") for model in ("sarnet_cls", "sarnet_prob")],
    *[("importance", ["--targets", "4,30", "--method", how], "sarnet_cls") for how in ("layer1", "gradient")]])
def test_cli_variants(script, args, model, smoke_run, tmp_path):
    ckpt = smoke_run(model) / "checkpoints" / "last.ckpt"
    out = [] if (script, args, model) in DEFAULT_OUT else ["--out", str(tmp_path / "x.png")]
    _, stdout, _ = cli_inprocess(script, ckpt, *args, *out)
    assert "None" not in stdout, stdout  # the caption: th as --th takes it
    written = Path(stdout.split(" -> ")[-1].strip())
    if not out:  # sample's default: test_scripts_take_a_run_dir_and_never_overwrite_their_output
        assert written.parent == ckpt.parents[1] / "images" and written.name.startswith(f"{script}_last")
    assert written.is_file() and written.stat().st_size > 500
    with Image.open(written) as im:
        lo, hi = im.convert("L").getextrema()
    assert hi > lo, f"{written} is blank"


def test_scripts_take_a_run_dir_and_never_overwrite_their_output(tmp_path):
    fake_checkpoint(tmp_path / "checkpoints" / "last.ckpt", SarNet(out_activation="sigmoid"))
    outs = [cli_inprocess("sample", tmp_path, "--n", "2")[1].split(" -> ")[-1].strip() for _ in range(2)]
    assert outs == [str(tmp_path / "images" / "sample_last.png"), str(tmp_path / "images" / "sample_last_2.png")]


@pytest.mark.parametrize("script, args, model, message", [
    ("complete", [], "vae", "not autoregressive"), ("complete", ["--z-scale", "1"], "sarnet", "no latent z"),
    ("importance", [], "vae", "not autoregressive"), ("importance", ["--top-k", "50"], "sarnet", "--top-k 50"),
    ("complete", ["--index", "100000"], "sarnet_vae", "--index 100000"),
    ("importance", ["--targets", "3,49"], "sarnet_vae", "--targets [49]"),
    ("interpolate", [], "sarnet", "needs a model with an encoder"), ("interpolate", ["--b", "5000"], "vae", "--b 5000"),
    ("sample", ["--mode", "bernoulli"], "sarnet", "needs a sigmoid"),
    ("sample", [], "broken", "re-train or pick another checkpoint")])
def test_cli_refusals(script, args, model, message, smoke_run, tmp_path):
    ckpt = tmp_path / "bad.ckpt" if model == "broken" else smoke_run(model) / "checkpoints" / "last.ckpt"
    if model == "broken":
        ckpt.write_bytes(b"not a checkpoint")
    status, _, err = cli_inprocess(script, ckpt, *args, "--out", str(tmp_path / "no.png"), check=False)
    assert status == 2 and message in err and err.count("\n") == 1, err  # one line, no traceback
    assert not (tmp_path / "no.png").exists()


# ---- (f) the figures: the seed's layouts at a readable scale ----------------------------------------------

def grid_of(path, ncol, nrow, scale, pad=2, side=28):
    """The image as an int array and its grid: the bottom-right corner of (ncol x nrow) panels with pad lines."""
    im = np.asarray(Image.open(path).convert("RGB")).astype(int)
    gw, gh = (ncol * (side + pad) + pad) * scale, (nrow * (side + pad) + pad) * scale
    assert im.shape[1] >= gw and im.shape[0] > gh, f"{im.shape} holds no {ncol} x {nrow} grid at scale {scale}"
    return im, im[-gh:, im.shape[1] - gw:]


def test_interpolation_grid_is_the_seeds_layout(sarnet_vae_ckpt, tmp_path):
    """`interpolate --nrow` (the seed's 20 x 20, here 2 x 3): step k in row k // nrow, column k % nrow, each pixel a
    scale x scale block of exactly the sampler's value, grey pad lines between, a label per row at the left and a
    title above the grid."""
    out, scale, pad, nrow, steps = tmp_path / "i.png", 3, 2, 3, 6
    cli_inprocess("interpolate", sarnet_vae_ckpt, "--a", "3", "--b", "7", "--sample", "--steps",
                  str(steps), "--nrow", str(nrow), "--scale", str(scale), "--out", str(out))
    im, grid = grid_of(out, nrow, steps // nrow, scale)
    model, run = load_model(sarnet_vae_ckpt), load_run_config(sarnet_vae_ckpt)
    a, b = real_image(run, "test", 3), real_image(run, "test", 7)
    expected = interpolate(model, a, b, steps=steps, use_mean=False, th=run["sample"]["th"],
                           generator=torch.Generator().manual_seed(0))  # the command's --seed 0
    expected = expected.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy()
    is_pad = np.ones(grid.shape[:2], bool)
    for k in range(steps):
        r, c = divmod(k, nrow)
        y, x = (pad + r * (28 + pad)) * scale, (pad + c * (28 + pad)) * scale
        cell = grid[y:y + 28 * scale, x:x + 28 * scale]
        assert (cell == np.kron(expected[k, 0], np.ones((scale, scale), int))[..., None]).all(), f"step {k}"
        is_pad[y:y + 28 * scale, x:x + 28 * scale] = False
    assert (grid[is_pad] == 128).all()
    assert (im[-grid.shape[0]:, :im.shape[1] - grid.shape[1]] < 100).any()  # the row labels, in black
    assert (im[:-grid.shape[0]] < 100).any()  # the title


@pytest.mark.parametrize("args, ncol, nrow", [
    (["--panels", "completions", "--n", "6", "--nrow", "3"], 3, 2),  # the seed's 4 x 5 boot completions, smaller
    (["--panels", "masked"], 1, 1),  # the seed's masked boot
    (["--n", "2"], 4, 1)])  # original | masked | 2 completions, labelled columns
def test_completion_figures(args, ncol, nrow, sarnet_vae_ckpt, tmp_path):
    cli_inprocess("complete", sarnet_vae_ckpt, *args, "--keep", "20", "--scale", "3", "--out", str(tmp_path / "c.png"))
    im, grid = grid_of(tmp_path / "c.png", ncol, nrow, 3)
    assert grid.shape[1] == im.shape[1] and (grid[:6] == 128).all() and (grid[:, :6] == 128).all()
