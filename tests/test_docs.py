"""docs/usage.md cannot rot: its "Python API" blocks run in order on smoke checkpoints, its "Your own configs" example
composes and trains as shown; the user-facing pages state no commit hashes."""

import re
import shlex

from tests.conftest import ROOT, python, results

USAGE = ROOT / "docs" / "usage.md"
PLACEHOLDER = re.compile(r'^(\w+) = "outputs/<date>/<time>"$', re.M)  # a run dir the reader fills in


def section(title: str) -> str:
    """The text of `## title` in docs/usage.md, up to the next `## `."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", USAGE.read_text(), re.S | re.M)
    assert match, f"docs/usage.md has no section '## {title}'"
    return match.group(1)


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def test_python_api_snippets_run(smoke_run, tmp_path, monkeypatch):
    code = blocks(section("Python API"), "python")
    assert len(code) >= 7, "load, sample, complete, interpolate, importance, FID and likelihood each need a snippet"
    runs = {"run": smoke_run("sarnet_vae"), "nll_run": smoke_run("nll_vae")}
    found = set()

    def fill(match):
        name = match.group(1)
        assert name in runs, f"docs/usage.md: no test run for the placeholder {name} (known: {sorted(runs)})"
        found.add(name)
        return f"{name} = {str(runs[name])!r}"

    (tmp_path / "data").symlink_to(ROOT / "data")  # the snippets run "from the repository root": data/ is there
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "usage_md"}
    for i, block in enumerate(code, 1):
        exec(compile(PLACEHOLDER.sub(fill, block), f"docs/usage.md, Python block {i}", "exec"), namespace)
    assert found == set(runs), f"placeholders not found in the snippets: {set(runs) - found}"
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert namespace["filled"].shape == (1, 10, 1, 28, 28)
    assert namespace["path"].shape == (10, 1, 28, 28)
    assert namespace["result"]["n_images"] == 100 and namespace["result"]["nll"]["nats"] > 0


def test_own_configs_example_composes_and_trains(tmp_path):
    text = section("Your own configs")
    files = re.findall(r"`(my_conf/[\w/]+\.yaml)`[^\n]*\n\n```yaml\n(.*?)^```", text, re.S | re.M)  # name, body
    assert len(files) == len(blocks(text, "yaml")) >= 2, "every yaml block is introduced by its file name"
    for name, body in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    commands = [line for block in blocks(text, "bash") for line in block.splitlines() if line.startswith("sarnet ")]
    assert len(commands) == 2, "the page shows --config-dir and hydra.searchpath"
    for command in commands:  # what each composes: the user's data config inside the user's experiment
        cfg = python("-m", "sarnet", *shlex.split(command)[1:], "--cfg", "job", cwd=tmp_path, check=True).stdout
        assert "classes:\n  - 3\n  - 8" in cfg and "first_patch: predicted" in cfg and "max_epochs: 50" in cfg
        assert re.search(r"^latent_dim: 32$", cfg, re.M), cfg
    # and it trains (a few batches; command-line overrides come after the experiment)
    run_dir = tmp_path / "run"
    python("-m", "sarnet", *shlex.split(commands[0])[1:], "trainer=smoke", "trainer.max_epochs=1", "fid=off",
           "logger=csv", f"data_dir={ROOT / 'data'}", f"hydra.run.dir={run_dir}", cwd=tmp_path, check=True)
    got = results(run_dir)
    assert got["status"] == "ok" and got["classes"] == [3, 8] and got["latent_dim"] == 32


def test_user_pages_state_no_commit_hashes():
    """README.md and the hand-written pages under docs/ state results and conditions, not code versions; a figure's
    provenance is its results file. Generated tables (`sarnet table` output: "### Table ...") may record their code."""
    pattern = re.compile(r"(commit|code of|at) [0-9a-f]{7,12}\b")
    docs = ROOT / "docs"
    pages = [ROOT / "README.md", *sorted(docs.glob("*.md")), *sorted((docs / "results").glob("*.md"))]
    hand = [p for p in pages if not p.read_text().startswith("### Table")]
    hits = [f"{p.relative_to(ROOT)}:{n}: {line}" for p in hand for n, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line)]
    assert not hits, "\n".join(hits)
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
