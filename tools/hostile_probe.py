"""Rerun issue 26's hostile-user probe, kind by kind, and count the outcomes per surface.

Not a test and not run in CI: a script for a person (or a session) to run after a change to
one of the surfaces issue 26 probed (objectives, plans, pruned files, result files,
AutoAttack, torchrun, the overfitting guard, crafted sizes)::

    PYTHONPATH=$PWD/src python tools/hostile_probe.py            # every surface
    PYTHONPATH=$PWD/src python tools/hostile_probe.py plans guard  # some of them
    PYTHONPATH=$PWD/src python tools/hostile_probe.py --list      # the cases

Each case is a small function that feeds one bad or edge input to advkit and says what a
correct library does with it: refuse it (``error``), warn about it (``warn``) or accept it
and compute the right thing (``ok``, for the valid inputs next to the hostile ones: nothing
valid may be refused). The outcome is classified as

- ``clear``: an exception whose message matches what the case expects (it names the problem);
- ``warning``: a warning whose message matches;
- ``obscure``: an exception, but not the clear one (a torch error from deep inside, a
  KeyError), or a valid input refused;
- ``silent``: it completed, without error or warning, where it should not have (a wrong,
  unchanged or misleading result), or a valid input gave a wrong result;
- ``hang``: it did not finish within its time limit;
- ``correct``: a valid input gave the right result.

It prints one line per case and the counts per surface, and exits with status 1 if any case
is ``silent`` or ``hang`` (2 on a usage error). It uses no benchmark and no data set: tiny
models on random images, on the CPU; the torchrun cases start two local processes (gloo).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import advkit
from advkit.attacks import APGD, APGDT, FAB, PGD, AutoAttack, check_gradient_masking
from advkit.evaluation import GridResult, RobustAccuracy, evaluate_grid, robust_accuracy
from advkit.pruning import (
    Pruner,
    PruningPlan,
    apply_plan,
    load_pruned,
    normalize_scores,
    resize_layer,
    save_pruned,
)
from advkit.recipes import AdversarialTaylor, robust_prune
from advkit.training import MART, TRADES, FreeAT, OverfittingGuard, Trainer

OUTCOMES = ("clear", "warning", "obscure", "silent", "hang", "correct")
CASE_SECONDS = 60


@dataclass(frozen=True)
class Case:
    """One probe: ``run()`` feeds the input; ``want`` is what a correct library does.

    Attributes:
        surface: The surface probed (a key of the counts).
        name: Short name of the case.
        run: Feeds the input; returns a value for ``check`` when it completes.
        want: ``"error"``, ``"warn"`` or ``"ok"``.
        clear: Regular expression a clear error's or warning's message matches.
        check: For ``want="ok"`` (and for a hostile input accepted with its right result),
            whether the returned value is right.
        seconds: The time limit; past it the case is a hang.
    """

    surface: str
    name: str
    run: Callable[[], Any]
    want: str
    clear: str = ""
    check: Callable[[Any], bool] | None = None
    seconds: int = CASE_SECONDS


CASES: list[Case] = []


def case(
    surface: str,
    want: str,
    clear: str = "",
    check: Callable[[Any], bool] | None = None,
    seconds: int = CASE_SECONDS,
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register the decorated function as a case."""

    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        CASES.append(Case(surface, fn.__name__, fn, want, clear, check, seconds))
        return fn

    return register


# -- small models and data -------------------------------------------------------------------------


def tiny(classes: int = 4, width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, classes),
    ).eval()


def data(n: int = 16, classes: int = 4, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def loader(scale: float = 1.0, labels_shift: int = 0) -> DataLoader:
    x, y = data()
    return DataLoader(TensorDataset(x * scale, y + labels_shift), batch_size=8)


def trainer(objective: Any, **options: Any) -> Trainer:
    return Trainer(
        tiny(),
        lambda p: torch.optim.SGD(p, lr=0.01),
        objective=objective,
        device="cpu",
        progress=False,
        **options,
    )


X1 = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))


# -- objectives (items 1-4 and the objective errors) -----------------------------------------------

RANGE = r"\[0, 1\]|0\.\.255|255|outside .*bounds|bounds"


@case("objectives", "error", RANGE)
def trades_on_0_255_inputs() -> Any:
    return trainer(TRADES(eps=8 / 255, steps=1)).fit(loader(255.0), epochs=1)


@case("objectives", "error", RANGE)
def mart_on_0_255_inputs() -> Any:
    return trainer(MART(eps=8 / 255, steps=1)).fit(loader(255.0), epochs=1)


@case("objectives", "error", RANGE)
def freeat_on_0_255_inputs() -> Any:
    return trainer(FreeAT(eps=8 / 255, replays=2)).fit(loader(255.0), epochs=1)


@case("objectives", "warn", r"eps")
def trades_eps_5() -> Any:
    return TRADES(eps=5.0, steps=1)


@case("objectives", "warn", r"eps")
def mart_eps_5() -> Any:
    return MART(eps=5.0, steps=1)


@case("objectives", "warn", r"eps")
def freeat_eps_8() -> Any:
    return FreeAT(eps=8.0)


def _freeat_checkpoint(folder: Path) -> Path:
    run = trainer(FreeAT(eps=16 / 255, replays=2), checkpoint_dir=folder)
    run.fit(loader(), epochs=1)
    return folder / "last.pt"


@case("objectives", "ok", check=bool)
def freeat_resumed_with_a_smaller_eps_stays_in_its_ball() -> Any:
    with tempfile.TemporaryDirectory() as folder:
        path = _freeat_checkpoint(Path(folder))
        objective = FreeAT(eps=2 / 255, replays=2)
        resumed = trainer(objective)
        resumed.load(path)
        # What the next step starts from: FreeAT projects its carried perturbation when it
        # is used (``_carried``); without that method, the stored one.
        carried = getattr(objective, "_carried", None)
        x, _ = data(8)
        delta = carried(x, 2 / 255) if carried is not None else objective.delta
        return delta is None or float(delta.abs().max()) <= 2 / 255 + 1e-6


@case("objectives", "ok", check=bool)
def failed_load_leaves_freeat_delta_unchanged() -> Any:
    with tempfile.TemporaryDirectory() as folder:
        path = _freeat_checkpoint(Path(folder))
        objective = FreeAT(eps=16 / 255, replays=2)
        other = Trainer(
            tiny(width=6),  # another architecture: the load must fail
            lambda p: torch.optim.SGD(p, lr=0.01),
            objective=objective,
            device="cpu",
            progress=False,
        )
        objective.delta = torch.full((8, 3, 8, 8), 0.01)
        before = objective.delta.clone()
        with contextlib.suppress(ValueError, TypeError, RuntimeError):
            other.load(path)
        return objective.delta is not None and torch.equal(objective.delta, before)


@case("objectives", "error", r"label")
def trades_labels_out_of_range() -> Any:
    return trainer(TRADES(eps=8 / 255, steps=1)).fit(loader(labels_shift=10), epochs=1)


@case("objectives", "error", r"delta|FreeAT")
def freeat_crafted_state() -> Any:
    objective = FreeAT(eps=8 / 255)
    objective.load_state_dict({"delta": "x", "replay": 0})
    return objective


@case("objectives", "ok", check=lambda h: len(h) == 1)
def trades_valid_run() -> Any:
    return trainer(TRADES(eps=8 / 255, steps=1)).fit(loader(), epochs=1)


# -- plans (items 6-12) ----------------------------------------------------------------------------


def plan_dict() -> dict[str, Any]:
    return Pruner(ratio=0.5, targets="0").plan(tiny(), X1).to_dict()


def _apply_edited(edit: Callable[[dict[str, Any]], Any], model: nn.Module | None = None) -> Any:
    data = plan_dict()
    edit(data)
    pruned = apply_plan(model if model is not None else tiny(), PruningPlan.from_dict(data))
    return pruned(X1)


@case("plans", "error", r"has 8 channels, but .* 16|plan .*(another model|does not fit)")
def plan_for_another_width() -> Any:
    return _apply_edited(lambda d: None, tiny(width=16))


@case("plans", "error", r"uses the plan lacks")
def plan_without_its_batchnorm() -> Any:
    return _apply_edited(lambda d: d["groups"][0]["uses"].pop(1))


@case("plans", "error", r"uses the plan lacks")
def plan_without_a_reader() -> Any:
    return _apply_edited(lambda d: d["groups"][0]["uses"].pop(-1))


@case("plans", "error", r"uses the model lacks|index")
def plan_with_a_short_index_map() -> Any:
    return _apply_edited(lambda d: d["groups"][0]["uses"][-1].update(index=[0, 1, 2]))


@case("plans", "error", r"0\.weight")
def plan_naming_a_parameter() -> Any:
    return _apply_edited(lambda d: d["groups"][0]["uses"][0].update(module="0.weight"))


@case("plans", "error", r"'out' use|no uses|removes no layer")
def plan_group_without_uses() -> Any:
    data = plan_dict()
    data["groups"][0]["uses"] = []
    return PruningPlan.from_dict(data).summary()


@case("plans", "error", r"params_after|parameters remain")
def plan_with_edited_params_after() -> Any:
    return _apply_edited(lambda d: d.update(params_after=1))


@case("plans", "ok", check=lambda out: out.shape == (1, 4))
def plan_round_trip_valid() -> Any:
    return _apply_edited(lambda d: None)


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.d = nn.Conv2d(3, 8, 3, padding=1)
        self.d.weight = self.b.weight
        self.e = nn.Conv2d(16, 8, 1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c(self.e(torch.cat([self.b(x), self.d(x)], 1)))


@case("plans", "error", r"tied")
def prune_a_tied_layer() -> Any:
    pruned, _ = Pruner(ratio=0.5, targets="b").prune(_Tied(), X1)
    return pruned


@case("plans", "ok", check=bool)
def ties_kept_through_prune_save_load() -> Any:
    pruned, _ = Pruner(ratio=0.5, targets="e").prune(_Tied(), X1)
    buffer = io.BytesIO()
    save_pruned(pruned, buffer)
    buffer.seek(0)
    loaded = load_pruned(buffer, _Tied())
    return pruned.d.weight is pruned.b.weight and loaded.d.weight is loaded.b.weight


@case("plans", "warn", r"scored every channel 0|zero")
def adversarial_taylor_all_zero_scores() -> Any:
    model = tiny()
    with torch.no_grad():
        model[3].weight.zero_()
    taylor = AdversarialTaylor(None, [data()], batches=1)
    return Pruner(ratio=0.5, targets="0", importance=taylor).plan(model, X1)


@case("plans", "error", r"eval_loader")
def robust_prune_attack_without_loader() -> Any:
    return robust_prune(tiny(), X1, ratio=0.5, targets="0", eval_attack=PGD(eps=0.01, steps=1))


@case("plans", "error", r"finite")
def normalize_nan_scores() -> Any:
    return normalize_scores(torch.tensor([1.0, float("nan")]), "mean")


# -- pruned files (item 13, scripting) -------------------------------------------------------------


@case("pruned files", "error", r"NaN")
def save_pruned_nan_weights() -> Any:
    model = tiny()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    save_pruned(model, io.BytesIO())


@case("pruned files", "error", r"NaN")
def load_pruned_nan_weights() -> Any:
    model = tiny()
    with torch.no_grad():
        model[3].bias[0] = float("nan")
    payload = {"format": "advkit.pruned_model", "version": 1, "shapes": {}}
    payload["state_dict"] = dict(model.state_dict())
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    return load_pruned(buffer, tiny())


@case("pruned files", "ok", check=lambda ok: ok is True)
def pruned_file_round_trip_valid() -> Any:
    pruned, _ = Pruner(ratio=0.5, targets="0").prune(tiny(), X1)
    buffer = io.BytesIO()
    save_pruned(pruned, buffer)
    buffer.seek(0)
    return torch.equal(load_pruned(buffer, tiny())(X1), pruned(X1))


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.attn = nn.MultiheadAttention(8, 4, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.attn(x, x, x, need_weights=False)[0].mean(1))


@case("pruned files", "ok", check=bool)
def head_pruned_model_scripts() -> Any:
    tokens = torch.rand(2, 5, 8)
    pruned, _ = Pruner(ratio=0.5, targets="attn").prune(_Attention().eval(), tokens)
    scripted = torch.jit.script(pruned)
    return torch.allclose(scripted(tokens), pruned(tokens), atol=1e-6)


# -- result files (item 14) ------------------------------------------------------------------------


def robust_dict() -> dict[str, Any]:
    model = tiny()
    return robust_accuracy(model, [data()], PGD(eps=2 / 255, steps=1), progress=False).to_dict()


def grid_dict() -> dict[str, Any]:
    return evaluate_grid(
        tiny(), [data()], PGD, eps=[1 / 255, 2 / 255], steps=[1], progress=False
    ).to_dict()


def _robust_edited(edit: Callable[[dict[str, Any]], Any]) -> Any:
    data_ = robust_dict()
    edit(data_)
    return RobustAccuracy.from_dict(data_)


def _grid_edited(edit: Callable[[dict[str, Any]], Any]) -> Any:
    data_ = grid_dict()
    edit(data_)
    return GridResult.from_dict(data_)


def _set_robust_above_clean(d: dict[str, Any]) -> None:
    d["robust"]["correct"] = d["clean"]["correct"] + 1


RESULT = r"robust|clean|correct|total|eps|work|steps|max_batch|passed|early_stop|cell|row|must"


@case("result files", "error", RESULT)
def robust_above_clean() -> Any:
    return _robust_edited(_set_robust_above_clean)


@case("result files", "error", RESULT)
def robust_different_totals() -> Any:
    return _robust_edited(lambda d: d["robust"].update(total=d["clean"]["total"] + 3))


@case("result files", "error", RESULT)
def correct_float() -> Any:
    return _robust_edited(lambda d: d["clean"].update(correct=7.9))


@case("result files", "error", RESULT)
def correct_string() -> Any:
    return _robust_edited(lambda d: d["clean"].update(correct="7"))


@case("result files", "error", RESULT)
def correct_bool() -> Any:
    return _robust_edited(lambda d: d["clean"].update(correct=True))


@case("result files", "error", RESULT)
def passed_maybe() -> Any:
    return _robust_edited(lambda d: d["checks"][0].update(passed="maybe"))


@case("result files", "error", RESULT)
def early_stop_string() -> Any:
    return _robust_edited(lambda d: d.update(early_stop="false"))


@case("result files", "error", RESULT)
def eps_nan() -> Any:
    return _robust_edited(lambda d: d.update(eps=float("nan")))


@case("result files", "error", RESULT)
def eps_negative() -> Any:
    return _robust_edited(lambda d: d.update(eps=-0.1))


@case("result files", "error", RESULT)
def work_negative() -> Any:
    return _robust_edited(lambda d: d["work"].update(grad_calls=-1))


@case("result files", "ok", check=lambda r: isinstance(r, RobustAccuracy))
def robust_round_trip_valid() -> Any:
    return _robust_edited(lambda d: None)


@case("result files", "error", RESULT)
def grid_duplicate_eps() -> Any:
    return _grid_edited(lambda d: d.update(eps=[d["eps"][0], d["eps"][0]]))


@case("result files", "error", RESULT)
def grid_negative_steps() -> Any:
    return _grid_edited(lambda d: d.update(steps=[-3]))


@case("result files", "error", RESULT)
def grid_max_batch_zero() -> Any:
    return _grid_edited(lambda d: d.update(max_batch=0))


@case("result files", "ok", check=lambda r: isinstance(r, GridResult))
def grid_round_trip_valid() -> Any:
    return _grid_edited(lambda d: None)


# -- AutoAttack and the attack side (items 16-17, attack errors) ----------------------------------


@case("AutoAttack", "ok", check=lambda keys: keys == 3)
def autoattack_repeated_member() -> Any:
    x, y = data(8)
    attack = AutoAttack(eps=2 / 255, version="custom", attacks=["apgd-ce", "square", "apgd-ce"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = attack.run(tiny(), x, y)
    return len(result.member_accuracy)


def _softmax_model() -> nn.Module:
    return nn.Sequential(tiny(), nn.Softmax(dim=1)).eval()


@case("AutoAttack", "warn", r"softmax|probabilit")
def pgd_on_a_softmax_model() -> Any:
    x, y = data(8)
    return PGD(eps=2 / 255, steps=2)(_softmax_model(), x, y)


@case("AutoAttack", "warn", r"softmax|probabilit")
def robust_accuracy_on_a_softmax_model() -> Any:
    return robust_accuracy(_softmax_model(), [data(8)], PGD(eps=2 / 255, steps=1), progress=False)


class _Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = tiny(classes=10)  # enough classes for APGD-T's and FAB-T's 9 targets

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).detach()


DETACHED = r"detach|gradient|does not depend"


@case("AutoAttack", "error", DETACHED)
def apgd_on_a_detached_model() -> Any:
    x, y = data(8)
    return APGD(eps=2 / 255, steps=2)(_Detached().eval(), x, y)


@case("AutoAttack", "error", DETACHED)
def apgdt_on_a_detached_model() -> Any:
    x, y = data(8)
    return APGDT(eps=2 / 255, steps=2)(_Detached().eval(), x, y)


@case("AutoAttack", "error", DETACHED)
def fab_on_a_detached_model() -> Any:
    x, y = data(8)
    return FAB(eps=2 / 255, steps=2)(_Detached().eval(), x, y)


@case("AutoAttack", "error", r"one class|1 class|at least (2|two) classes")
def autoattack_one_class_model() -> Any:
    x, _ = data(4)
    return AutoAttack(eps=2 / 255)(tiny(classes=1), x, torch.zeros(4, dtype=torch.long))


@case("AutoAttack", "error", r"empty|at least one|no sample")
def masking_check_empty_batch() -> Any:
    return check_gradient_masking(tiny(), torch.rand(0, 3, 8, 8), torch.zeros(0, dtype=torch.long))


@case("AutoAttack", "error", r"label")
def masking_check_float_labels() -> Any:
    x, y = data(4)
    return check_gradient_masking(tiny(), x, y.float())


@case("AutoAttack", "error", r"float64|dtype")
def masking_check_float64_inputs() -> Any:
    x, y = data(4)
    return check_gradient_masking(tiny(), x.double(), y)


class _IntLogits(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return (x.flatten(1)[:, :4] * 10).long()


@case("AutoAttack", "error", r"logits|floating|int64")
def pgd_int64_logits() -> Any:
    x, y = data(4)
    return PGD(eps=2 / 255, steps=1)(_IntLogits(), x, y)


@case("AutoAttack", "error", r"generator must be")
def pgd_generator_3() -> Any:
    x, y = data(4)
    return PGD(eps=2 / 255, steps=1)(tiny(), x, y, generator=3)


# -- torchrun (item 15, the hang, ADVKIT_EVAL_TIMEOUT) --------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from advkit.evaluation import accuracy

    mode, out = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    seed = rank if mode == "mixed" else 0
    gen = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.rand(16, 12, generator=gen), torch.randint(0, 3, (16,), generator=gen))

    class Stalling(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if rank == 1 and self.calls == 2:
                time.sleep(600)  # a dead GPU, a stuck data worker
            return self.net(x)

    net = Stalling() if mode == "stall" else model
    try:
        result = accuracy(net, DataLoader(data, batch_size=4), progress=False).to_dict()
        outcome = {"outcome": "ok", "result": result}
    except Exception as err:
        outcome = {"outcome": "error", "type": type(err).__name__, "message": str(err)}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as file:
        json.dump(outcome, file)
    os._exit(0)
    """
)


def _two_ranks(mode: str, env: dict[str, str], seconds: float) -> list[dict[str, Any]]:
    """Run the worker as two local ranks; raise TimeoutError if rank 0 does not finish."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "worker.py"
        script.write_text(WORKER)
        processes = [
            subprocess.Popen(
                [sys.executable, str(script), mode, folder],
                env={
                    **os.environ,
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": str(port),
                    "WORLD_SIZE": "2",
                    "RANK": str(rank),
                    "LOCAL_RANK": str(rank),
                    "OMP_NUM_THREADS": "1",
                    **env,
                },
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for rank in range(2)
        ]
        try:
            processes[0].wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"rank 0 did not finish within {seconds:g} s") from None
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        return [
            json.loads(path.read_text())
            if (path := Path(folder) / f"rank{r}.json").exists()
            else {"outcome": "missing"}
            for r in range(2)
        ]


def _raise_first_error(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for outcome in outcomes:
        if outcome["outcome"] == "error":
            raise RuntimeError(f"{outcome['type']}: {outcome['message']}")
    return outcomes


@case("torchrun", "error", r"data|content|differ|same", seconds=150)
def ranks_with_different_data() -> Any:
    return _raise_first_error(_two_ranks("mixed", {"ADVKIT_EVAL_TIMEOUT": "30"}, 90))


@case("torchrun", "error", r"rank 1|timed out|timeout", seconds=150)
def rank_stalling_mid_evaluation() -> Any:
    return _raise_first_error(_two_ranks("stall", {"ADVKIT_EVAL_TIMEOUT": "5"}, 60))


@case("torchrun", "error", r"ADVKIT_EVAL_TIMEOUT", seconds=150)
def eval_timeout_inf() -> Any:
    return _raise_first_error(_two_ranks("same", {"ADVKIT_EVAL_TIMEOUT": "inf"}, 60))


@case("torchrun", "ok", check=lambda o: all(r["outcome"] == "ok" for r in o), seconds=150)
def ranks_valid() -> Any:
    return _raise_first_error(_two_ranks("same", {"ADVKIT_EVAL_TIMEOUT": "30"}, 90))


# -- the overfitting guard (item 5) ----------------------------------------------------------------


def _guard() -> OverfittingGuard:
    return OverfittingGuard(*data(8), PGD(eps=1 / 255, steps=1))


def _guard_state(**change: Any) -> dict[str, Any]:
    return {
        "history": [[4, 0.75]],
        "collapsed_at": None,
        "rolled_back": False,
        "good": None,
        **change,
    }


@case("guard", "error", r"collapsed_at")
def guard_collapsed_at_string() -> Any:
    guard = _guard()
    guard.load_state_dict(_guard_state(collapsed_at="x"))
    return guard.collapsed_at


@case("guard", "error", r"lacks|missing|history")
def guard_state_missing_history() -> Any:
    state = _guard_state()
    del state["history"]
    _guard().load_state_dict(state)


@case("guard", "error", r"history")
def guard_history_of_strings() -> Any:
    _guard().load_state_dict(_guard_state(history=[["a", "b"]]))


@case("guard", "error", r"float64|dtype")
def guard_float64_data() -> Any:
    x, y = data(8)
    guard = OverfittingGuard(x.double(), y, PGD(eps=1 / 255, steps=1))
    run = trainer(None, callbacks=[guard])
    return run.fit(loader(), epochs=1)


@case("guard", "ok", check=lambda g: g.history == [(4, 0.75)])
def guard_valid_state() -> Any:
    guard = _guard()
    guard.load_state_dict(_guard_state())
    return guard


# -- crafted sizes ----------------------------------------------------------------------------------

LIMIT = r"at most|limit"


@case("crafted sizes", "error", LIMIT)
def plan_expansion_1e9() -> Any:
    return _apply_edited(lambda d: d["groups"][0]["uses"][-1].update(expansion=10**9))


@case("crafted sizes", "error", LIMIT + r"|too large")
def plan_5000_digit_integer() -> Any:
    text = json.dumps(plan_dict()).replace('"ratio": 0.5', '"ratio": ' + "9" * 5000)
    return PruningPlan.from_json(text)


@case("crafted sizes", "error", LIMIT)
def plan_5000_digit_integer_as_dict() -> Any:
    return _apply_edited(lambda d: d["groups"][0].update(channels=10**5000))


@case("crafted sizes", "error", LIMIT)
def plan_huge_input_shape() -> Any:
    return _apply_edited(lambda d: d.update(input_shapes=[[1, 3, 2**20, 2**20]]))


@case("crafted sizes", "error", LIMIT)
def resize_layernorm_2_40() -> Any:
    resize_layer(nn.LayerNorm(4), {"type": "LayerNorm", "normalized_shape": 2**40})


@case("crafted sizes", "error", LIMIT + r"|ask for")
def pruned_file_layernorm_2_40() -> Any:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4, elementwise_affine=False))
    buffer = io.BytesIO()
    save_pruned(model, buffer)
    payload = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    payload["shapes"]["1"]["normalized_shape"] = 2**40
    payload.pop("checksum")
    payload["version"] = 1
    crafted = io.BytesIO()
    torch.save(payload, crafted)
    crafted.seek(0)
    return load_pruned(crafted, copy.deepcopy(model))


# -- running and classifying --------------------------------------------------------------------------


class _AlarmError(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise _AlarmError


def classify(item: Case) -> tuple[str, str]:
    """Run one case and return its outcome and a one-line detail."""
    pattern = re.compile(item.clear, re.IGNORECASE) if item.clear else None
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(item.seconds)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = item.run()
    except (_AlarmError, TimeoutError) as err:
        return "hang", str(err) or f"no answer within {item.seconds} s"
    except Exception as err:  # what the case is about: any exception is classified
        message = f"{type(err).__name__}: {err}".replace("\n", " ")
        if item.want == "ok":
            return "obscure", "valid input refused: " + message[:160]
        clear = isinstance(err, ValueError | TypeError | RuntimeError | TimeoutError)
        if clear and pattern is not None and pattern.search(str(err)):
            return "clear", message[:160]
        return "obscure", message[:160]
    finally:
        signal.alarm(0)
    texts = [str(w.message) for w in caught if not _is_noise(w)]
    if item.want == "warn" and pattern is not None:
        hit = next((t for t in texts if pattern.search(t)), None)
        if hit is not None:
            return "warning", hit.replace("\n", " ")[:160]
    if item.want == "error" and pattern is not None:
        hit = next((t for t in texts if pattern.search(t)), None)
        if hit is not None:
            return "warning", hit.replace("\n", " ")[:160]
    if item.want == "ok":
        ok = item.check(value) if item.check is not None else True
        return ("correct", "") if ok else ("silent", f"wrong result: {_brief(value)}")
    return "silent", f"completed without a word: {_brief(value)}"


def _is_noise(w: warnings.WarningMessage) -> bool:
    text = str(w.message)
    return "torch.jit.script" in text or ("is deprecated" in text and "jit" in text)


def _brief(value: Any) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 100 else text[:97] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("surfaces", nargs="*", help="surfaces to probe (default: all)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    surfaces = list(dict.fromkeys(c.surface for c in CASES))
    unknown = [s for s in args.surfaces if s not in surfaces]
    if unknown:
        print(f"unknown surfaces {unknown}; known: {surfaces}", file=sys.stderr)
        return 2
    chosen = [c for c in CASES if not args.surfaces or c.surface in args.surfaces]
    if args.list:
        for c in chosen:
            print(f"{c.surface:14} {c.name:50} want {c.want}")
        return 0
    torch.set_num_threads(1)
    print(f"advkit {advkit.__version__} from {Path(advkit.__file__).parent}")
    counts: dict[str, Counter[str]] = {}
    start = time.monotonic()
    for c in chosen:
        outcome, detail = classify(c)
        counts.setdefault(c.surface, Counter())[outcome] += 1
        print(f"{outcome:8} {c.surface:14} {c.name:50} {detail}", flush=True)
    print(f"\n{len(chosen)} cases in {time.monotonic() - start:.0f} s")
    print(f"{'surface':14} " + " ".join(f"{o:>8}" for o in OUTCOMES))
    total: Counter[str] = Counter()
    for surface, counter in counts.items():
        total.update(counter)
        print(f"{surface:14} " + " ".join(f"{counter[o]:>8}" for o in OUTCOMES))
    print(f"{'all':14} " + " ".join(f"{total[o]:>8}" for o in OUTCOMES))
    return 1 if total["silent"] or total["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
