"""Every code block of the guides runs as the HTML shows it, setup included, when pasted.

Each guide page runs in a fresh interpreter: its shown blocks in order, in one namespace, the
``>>>`` sessions checked as doctests (as a reader who pastes them would see them). Nothing the
page hides (``testsetup``) runs, so a page that needs hidden code fails. The torchrun example
of the training guide runs as two gloo processes, as ``torchrun --nproc_per_node=2`` would.
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


def _start_page(blocks: list[Block], cwd: Path) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    script = cwd / "page.py"
    script.write_text(runner_script(blocks))
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


def _run_page(blocks: list[Block], cwd: Path) -> subprocess.CompletedProcess[str]:
    return _finish(_start_page(blocks, cwd))


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every guide page and the README, each in its own fresh interpreter, all at once."""
    folder = tmp_path_factory.mktemp("pages")
    readme = [b for b in markdown_blocks(REPO / "README.md") if "PATH/raw-img" not in b.source]
    started = {
        guide.stem: _start_page(
            [block for block in rst_blocks(guide) if block.torchrun_script is None],
            folder / guide.stem,
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


def test_training_guide_torchrun_example_runs_on_two_gloo_processes(tmp_path: Path) -> None:
    (example,) = [
        block
        for block in rst_blocks(REPO / "docs" / "guide" / "training.rst")
        if block.torchrun_script is not None
    ]
    script = tmp_path / example.torchrun_script
    script.write_text(example.source)
    port = str(free_port())
    processes = [
        subprocess.Popen(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env={
                **_env(),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "WORLD_SIZE": "2",
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=_TIMEOUT)[0])
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail(f"the torchrun example did not finish within {_TIMEOUT} s")
    for rank, process in enumerate(processes):
        assert process.returncode == 0, f"rank {rank} failed:\n{outputs[rank][-4000:]}"
    assert "'epoch': 2" in outputs[0] and "epoch" not in outputs[1]  # rank 0 reports
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
