"""Every code block of the guides runs as the HTML shows it, after the page's setup alone.

Each guide page runs in a fresh interpreter: its first block is the page's setup, and every
other block runs right after the setup in a fresh namespace, as a reader who pastes the setup
and then that one block would run it (no block may need names from another), the ``>>>``
sessions checked as doctests. Nothing the page hides (``testsetup``) runs, so a page that needs
hidden code fails. The torchrun examples run as two gloo processes, as
``torchrun --nproc_per_node=2`` would, and under plain ``python`` as one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from guide_blocks import GUIDES, REPO, Block, markdown_blocks, rst_blocks, runner_script

from conftest import free_port

_TIMEOUT = 300


def _env() -> dict[str, str]:
    source = str(REPO / "src")
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": source + (os.pathsep + path if path else ""),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",  # the CPU, as a reader without a GPU
    }


def _start_page(blocks: list[Block], cwd: Path, *, alone: bool = False) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    script = cwd / "page.py"
    script.write_text(runner_script(blocks, alone=alone))
    return subprocess.Popen(
        [sys.executable, str(script)],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        out, err = process.communicate(timeout=_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"a page did not finish within {_TIMEOUT} s")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _run_page(
    blocks: list[Block], cwd: Path, *, alone: bool = False
) -> subprocess.CompletedProcess[str]:
    return _finish(_start_page(blocks, cwd, alone=alone))


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every guide page and the README, each in its own fresh interpreter, all at once."""
    folder = tmp_path_factory.mktemp("pages")
    readme = [b for b in markdown_blocks(REPO / "README.md") if "PATH/raw-img" not in b.source]
    started = {
        guide.stem: _start_page(
            [block for block in rst_blocks(guide) if block.torchrun_script is None],
            folder / guide.stem,
            alone=True,
        )
        for guide in GUIDES
    }
    started["README"] = _start_page(readme, folder / "README")
    return {name: _finish(process) for name, process in started.items()}


def test_the_extractor_sees_what_the_html_shows(tmp_path: Path) -> None:
    page = tmp_path / "page.rst"
    page.write_text(
        "Title\n=====\n\n.. testsetup:: *\n\n   x = 1\n\n.. doctest::\n\n   >>> x\n   1\n"
    )
    with pytest.raises(AssertionError, match=r"runs but does not show: \['page.rst:4"):
        rst_blocks(page)
    page.write_text(
        ".. testcode::\n\n   x = 1\n\n.. code-block:: bash\n\n   ls\n\n"
        ".. code-block:: python\n   :caption: c\n\n   y = x + 1\n\n.. doctest::\n\n   >>> y\n   2\n"
    )
    blocks = rst_blocks(page)
    assert [(b.kind, b.source) for b in blocks] == [
        ("code", "x = 1\n"),
        ("code", "y = x + 1\n"),
        ("doctest", ">>> y\n2\n"),
    ]
    assert _run_page(blocks, tmp_path).returncode == 0
    # A wrong output fails the page, as it would surprise a reader who pastes it.
    wrong = [*blocks[:2], Block(">>> y\n3\n", page, 14, "doctest")]
    failed = _run_page(wrong, tmp_path)
    assert failed.returncode != 0 and "page.rst:14" in failed.stdout + failed.stderr
    # Each block alone after the setup: the doctest needs ``y`` from the block before it.
    alone = _run_page(blocks, tmp_path, alone=True)
    assert alone.returncode != 0 and f"page.rst:{blocks[2].line}" in alone.stderr
    assert "name 'y' is not defined" in alone.stdout
    assert _run_page([blocks[0], blocks[1]], tmp_path, alone=True).returncode == 0


@pytest.mark.parametrize("guide", GUIDES, ids=[path.stem for path in GUIDES])
def test_guide_runs_as_shown(guide: Path, pages: dict) -> None:
    blocks = rst_blocks(guide)
    assert blocks and blocks[0].kind == "code", "the page starts with its visible setup"
    result = pages[guide.stem]
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]


def test_readme_python_blocks_run_as_written(pages: dict, tmp_path: Path) -> None:
    blocks = markdown_blocks(REPO / "README.md")
    assert len(blocks) >= 2
    result = pages["README"]
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    # The data block names a placeholder folder: as written it stops with a clear error.
    data = [block for block in blocks if "PATH/raw-img" in block.source]
    assert len(data) == 1
    failed = _run_page(data, tmp_path)
    assert failed.returncode != 0 and "PATH/raw-img" in failed.stderr


def _launch(script: Path, processes: int) -> list[str]:
    """Run ``script`` as ``processes`` processes started the way torchrun starts them (one:
    plain ``python script``, no torchrun variables); every process's standard output."""
    port = str(free_port())
    ranks = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
        "WORLD_SIZE": str(processes),
    }
    started = [
        subprocess.Popen(
            [sys.executable, str(script)],
            cwd=script.parent,
            env=_env() | ({**ranks, "RANK": str(r), "LOCAL_RANK": str(r)} if processes > 1 else {}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(processes)
    ]
    outputs = []
    for process in started:
        try:
            outputs.append(process.communicate(timeout=_TIMEOUT))
        except subprocess.TimeoutExpired:
            for other in started:
                other.kill()
            pytest.fail(f"{script.name} did not finish within {_TIMEOUT} s")
    for rank, process in enumerate(started):
        assert process.returncode == 0, f"rank {rank} failed:\n{outputs[rank][1][-4000:]}"
    return [out for out, _ in outputs]


def _torchrun_example(guide: str, folder: Path) -> Path:
    """The guide's torchrun script (the block starting ``# x.py -- launch with: torchrun``)."""
    (example,) = [
        block
        for block in rst_blocks(REPO / "docs" / "guide" / guide)
        if block.torchrun_script is not None
    ]
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / example.torchrun_script
    script.write_text(example.source)
    return script


def test_training_guide_torchrun_example_runs_on_two_gloo_processes(tmp_path: Path) -> None:
    script = _torchrun_example("training.rst", tmp_path)
    outputs = _launch(script, 2)
    assert "'epoch': 2" in outputs[0] and "epoch" not in outputs[1]  # rank 0 reports
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_training_guide_torchrun_example_runs_as_plain_python(tmp_path: Path) -> None:
    """``python train_ddp.py`` outside torchrun trains in one process (no process group)."""
    script = _torchrun_example("training.rst", tmp_path)
    (output,) = _launch(script, 1)
    assert "'epoch': 2" in output
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_scaling_guide_evaluation_gives_the_same_tables_on_one_and_two_processes(
    tmp_path: Path,
) -> None:
    """The page promises the results of one process: every process must build the same model."""
    (block,) = rst_blocks(REPO / "docs" / "guide" / "scaling.rst")
    assert block.source.startswith("# evaluate.py")
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "evaluate.py").write_text(block.source)
    (single,) = _launch(tmp_path / "one" / "evaluate.py", 1)
    first, second = _launch(tmp_path / "two" / "evaluate.py", 2)
    assert "robust acc. (%)" in single and "steps \\ eps" in single
    assert first == single and second == ""  # rank 0 prints what one process prints
