"""Benchmark: what physical filter pruning saves on ResNet-18 at 224x224 on the CPU.

Compares the study's settings, 20% and 40% of the filters of each ``layer4`` block's ``conv1``
removed by L1 norm, with the unpruned model and with the same 40% only *masked* by
``torch.nn.utils.prune`` (which keeps every shape, so it saves nothing). Reports parameters,
FLOPs (multiply-accumulates of conv and linear layers, torchvision's convention) and forward
latency in eval mode under ``torch.inference_mode()``. The variants are timed with the shared
harness (``_harness.round_robin``: one call each per round, the order rotating so that no
variant always runs first or last), and each speed-up is the median over rounds of the
in-round ratio of the unpruned model's time to the variant's (``paired_ratio``), so drift in
the machine's speed cancels. Inputs are ``synthetic_batch`` noise.

Usage::

    python benchmarks/pruning.py            # the recorded run (quiet machine)
    python benchmarks/pruning.py --quick    # smoke test: few repeats, batch 1 only
    python benchmarks/pruning.py --zoo      # torchvision's zoo, side by side with Torch-Pruning
    python benchmarks/pruning.py --zoo timm # timm's zoo (small inputs), the same comparison

``--zoo`` plans and applies ``Pruner(ratio=0.3, targets="*", strict=False)`` on 20 torchvision
models (weights=None, 10 classes, 1x3x224x224) and Torch-Pruning's ``MetaPruner`` with L1
importance at ``pruning_ratio=0.3`` with the classifier excluded, each run (advkit's and
Torch-Pruning's) in a fresh process with a time limit; it writes ``pruning_zoo.json`` and ``pruning_zoo.md``.
``--zoo timm`` does the same on 44 timm models (``pretrained=False``, 10 classes, each at a small
input: 64x64 where the model takes it, see ``TIMM_ZOO``) and writes ``pruning_zoo_timm.*``; its
table adds, for every model where advkit removes less than Torch-Pruning or under 20%, the most
frequent reasons the plan gives for the layers it left alone. ``--rounds N`` runs each model N
times per library, alternating (a fresh process each), and reports the median times; the
table opens with the median of the per-model time ratios.

Writes ``benchmarks/results/pruning.json`` and ``benchmarks/results/pruning.md`` (or the
folder given by ``--output-dir``; ``_quick`` is added to the names with ``--quick``, so a
smoke run never overwrites a recorded result). Weights are random: parameters, FLOPs and speed
do not depend on their values.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _harness import (  # benchmarks/ is on sys.path when a script runs
    Clock,
    environment,
    paired_ratio,
    result_paths,
    round_robin,
    synthetic_batch,
    write_json,
    write_text,
)
from torch import nn
from torch.nn.utils import prune as torch_prune

from advkit.models import resnet18
from advkit.pruning import Pruner, count_flops, count_parameters

TARGETS = "backbone.layer4.*.conv1"
IMAGE_SIZE = 224


@dataclass
class Variant:
    name: str
    model: nn.Module
    ratio: float
    kept_filters: int
    params: int
    masked_params: int
    flops: int
    latency_ms: dict[int, list[float]] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)


def build_variants(seed: int) -> list[Variant]:
    torch.manual_seed(seed)
    base = resnet18(num_classes=10).eval()
    example, _ = synthetic_batch(1, IMAGE_SIZE, seed=seed)
    variants = [_variant("unpruned", base, 0.0, 512, example)]
    for ratio in (0.2, 0.4):
        pruner = Pruner(ratio=ratio, targets=TARGETS)
        plan = pruner.plan(base, example)
        kept = set(plan.kept_filters().values())
        if len(kept) != 1:
            raise RuntimeError(f"expected one kept-filter count per layer, got {kept}")
        variants.append(
            _variant(f"pruned {ratio:.0%}", pruner.apply(base, plan), ratio, kept.pop(), example)
        )
    masked = copy.deepcopy(base)
    for block in masked.backbone.layer4:
        torch_prune.ln_structured(block.conv1, "weight", amount=0.4, n=1, dim=0)
    variants.append(_variant("masked 40% (torch prune)", masked, 0.4, 307, example))
    return variants


def _variant(
    name: str, model: nn.Module, ratio: float, kept: int, example: torch.Tensor
) -> Variant:
    return Variant(
        name=name,
        model=model.eval(),
        ratio=ratio,
        kept_filters=kept,
        params=count_parameters(model),
        masked_params=_masked_out(model),
        flops=count_flops(model, example),
    )


def _masked_out(model: nn.Module) -> int:
    """Weights zeroed by torch.nn.utils.prune masks (stored, but contributing nothing)."""
    return sum(
        int((buffer == 0).sum()) for name, buffer in model.named_buffers() if name.endswith("_mask")
    )


def measure_latency(
    variants: list[Variant],
    batch_sizes: list[int],
    warmup: int,
    repeats: int,
    seed: int,
    log: Callable[[str], None],
) -> None:
    """Time every variant round-robin at each batch size; fill ``latency_ms`` and ``speedup``."""
    clock = Clock("cpu")
    for batch in batch_sizes:
        inputs, _ = synthetic_batch(batch, IMAGE_SIZE, seed=seed)
        calls = {v.name: (lambda m=v.model, x=inputs: m(x)) for v in variants}
        with torch.inference_mode():
            times = round_robin(calls, clock, repeats=repeats, warmup=warmup)
        base = variants[0].name  # the unpruned model
        for variant in variants:
            variant.latency_ms[batch] = [t * 1e3 for t in times[variant.name]]
            variant.speedup[batch] = paired_ratio(times[base], times[variant.name])
        log(
            f"batch {batch}: " + ", ".join(f"{v.name} {_median(v, batch):.1f} ms" for v in variants)
        )


def _median(variant: Variant, batch: int) -> float:
    return statistics.median(variant.latency_ms[batch])


def _quantiles(values: list[float]) -> dict[str, float]:
    deciles = statistics.quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
    return {
        "median": statistics.median(values),
        "p10": deciles[0],
        "p90": deciles[-1],
        "mean": statistics.fmean(values),
        "n": len(values),
    }


def write_results(
    variants: list[Variant], config: dict, output_dir: Path | None
) -> tuple[Path, Path]:
    rows = []
    for v in variants:
        latency = {str(b): _quantiles(t) for b, t in v.latency_ms.items()}
        rows.append(
            {
                "variant": v.name,
                "ratio": v.ratio,
                "kept_filters_per_conv1": v.kept_filters,
                "params": v.params,
                "masked_params": v.masked_params,
                "flops": v.flops,
                "latency_ms": latency,
                "speedup": {str(b): ratio for b, ratio in v.speedup.items()},
            }
        )
    payload = {
        "benchmark": "pruning",
        "config": config,
        "environment": environment("cpu", calibrate=not config["quick"]),
        "results": rows,
    }
    json_path, md_path = result_paths("pruning", quick=config["quick"], out_dir=output_dir)
    write_json(json_path, payload)
    write_text(md_path, _markdown(payload))
    return json_path, md_path


def _markdown(payload: dict) -> str:
    config, env, rows = payload["config"], payload["environment"], payload["results"]
    batches = config["batch_sizes"]
    lines = [
        "# Physical filter pruning: ResNet-18, 10 classes, 224x224, CPU",
        "",
    ]
    if config["quick"]:
        lines += ["**Quick mode: a smoke test with few repeats, not a measurement.**", ""]
    lines += [
        f"Pruned: the `conv1` of each `layer4` block (`{TARGETS}`), filters ranked by L1 norm. "
        "FLOPs are multiply-accumulates of conv and linear layers for one 224x224 image. "
        f"Latency: median of {config['repeats']} timed forward passes (p10-p90 in brackets) "
        f"after {config['warmup']} warm-up passes, eval mode, `torch.inference_mode()`, the "
        "variants timed round-robin in rotating order; speed-up: median over rounds of the "
        "in-round ratio of the unpruned model's time to the variant's.",
        "",
        f"Machine: {env['cpu']}, {env['threads']} threads, torch {env['torch']}, "
        f"Python {env['python']}, {env['date_utc']}.",
        "",
    ]
    header = "| variant | filters kept per conv1 | parameters | of which masked to 0 | GFLOPs |"
    rule = "|---|---:|---:|---:|---:|"
    for batch in batches:
        header += f" latency batch {batch} (ms) | speed-up batch {batch} |"
        rule += "---:|---:|"
    lines += [header, rule]
    for row in rows:
        line = (
            f"| {row['variant']} | {row['kept_filters_per_conv1']} | {row['params']:,} | "
            f"{row['masked_params']:,} | {row['flops'] / 1e9:.3f} |"
        )
        for batch in batches:
            lat = row["latency_ms"][str(batch)]
            line += (
                f" {lat['median']:.2f} [{lat['p10']:.2f}-{lat['p90']:.2f}] | "
                f"{row['speedup'][str(batch)]:.2f}x |"
            )
        lines.append(line)
    lines += [
        "",
        "Masking (`torch.nn.utils.prune`) zeroes the same filters as the 40% row but keeps every "
        "shape: parameters stored, FLOPs and latency stay those of the unpruned model.",
        "",
    ]
    return "\n".join(lines)


ZOO = [
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "alexnet",
    "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "efficientnet_v2_s", "densenet121",
    "googlenet", "regnet_x_400mf", "regnet_y_400mf", "shufflenet_v2_x1_0", "squeezenet1_1",
    "mnasnet1_0", "convnext_tiny", "vit_b_16", "swin_t",
]  # fmt: skip


# timm model -> (input size, create_model keywords): 64x64 where the model takes it.
TIMM_ZOO: dict[str, tuple[int, dict]] = {
    "resnet18": (64, {}), "resnet50": (64, {}), "resnext26ts": (64, {}),
    "seresnet18": (64, {}), "res2net50_26w_4s": (64, {}), "regnetx_002": (64, {}),
    "regnety_002": (64, {}), "efficientnet_b0": (64, {}), "tf_efficientnetv2_b0": (64, {}),
    "mobilenetv3_small_050": (64, {}), "mobilenetv4_conv_small": (64, {}),
    "ghostnet_100": (64, {}), "lcnet_050": (64, {}), "mixnet_s": (64, {}),
    "rexnet_100": (64, {}), "convnext_atto": (64, {}), "convnextv2_atto": (64, {}),
    "densenet121": (64, {}), "dla34": (64, {}), "dpn48b": (64, {}),
    "hrnet_w18_small": (64, {}), "inception_v3": (75, {}), "cspresnet50": (64, {}),
    "cspdarknet53": (64, {}), "repvgg_a0": (64, {}), "mobileone_s0": (64, {}),
    "nf_resnet26": (64, {}), "vit_tiny_patch16_224": (64, {"img_size": 64}),
    "deit_tiny_patch16_224": (64, {"img_size": 64}),
    "swin_tiny_patch4_window7_224": (64, {"img_size": 64}),
    "levit_128s": (64, {"img_size": 64}), "mixer_s16_224": (64, {"img_size": 64}),
    "poolformer_s12": (64, {}), "caformer_s18": (64, {}), "pvt_v2_b0": (64, {}),
    "efficientformer_l1": (224, {}), "efficientformerv2_s0": (64, {"img_size": 64}),
    "mobilevit_xxs": (64, {}), "mobilevitv2_050": (64, {}), "edgenext_xx_small": (64, {}),
    "fastvit_t8": (64, {}), "tiny_vit_5m_224": (64, {}),
    "coatnet_nano_rw_224": (64, {"img_size": 64}), "xcit_nano_12_p16_224": (64, {}),
}  # fmt: skip
TIMM_PREFIX = "timm/"


def _zoo_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name.startswith(TIMM_PREFIX):
        import timm

        arch = name.removeprefix(TIMM_PREFIX)
        return timm.create_model(arch, pretrained=False, num_classes=10, **TIMM_ZOO[arch][1])
    import torchvision

    return getattr(torchvision.models, name)(weights=None, num_classes=10)


def _zoo_inputs(name: str) -> torch.Tensor:
    if name.startswith(TIMM_PREFIX):
        return synthetic_batch(1, TIMM_ZOO[name.removeprefix(TIMM_PREFIX)][0])[0]
    return synthetic_batch(1, IMAGE_SIZE)[0]


def _reasons(skipped: tuple[tuple[str, str], ...], top: int = 3) -> list[str]:
    """The most frequent reasons among the layers a plan left alone, with their counts."""
    import collections

    counts = collections.Counter(why[:160] for _, why in skipped)
    return [f"{n}x {why}" for why, n in counts.most_common(top)]


def _advkit_row(name: str, inputs: torch.Tensor) -> dict:
    model = _zoo_model(name).eval()  # as Torch-Pruning's (GoogLeNet's aux heads run in train)
    _warm_up(model, inputs)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        pruner = Pruner(ratio=0.3, targets="*", strict=False)
        pruned, plan = pruner.prune(model, inputs)  # plan + apply, one pruned copy
    except Exception as err:  # the table reports failures instead of stopping
        return {"error": f"{type(err).__name__}: {str(err)[:120]}"}
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    first_forward = _first_forward_cpu_seconds(pruned.eval(), inputs)
    with torch.no_grad():
        same = pruned(inputs).shape == model.eval()(inputs).shape
    return {
        "params_before": plan.params_before,
        "params_after": count_parameters(pruned),
        "flops_before": plan.flops_before,
        "flops_after": plan.flops_after,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "ready_cpu_seconds": cpu_seconds + first_forward,
        "same_output_shape": bool(same),
        "skipped_layers": len(plan.skipped),
        "reasons": _reasons(plan.skipped),
    }


def _tp_worker(name: str, queue: object, threads: int) -> None:
    import torch_pruning as tp

    torch.set_num_threads(threads)  # a spawned process does not inherit --threads
    inputs = _zoo_inputs(name)
    model = _zoo_model(name).eval()
    before = _warm_up(model, inputs)
    # Torch-Pruning prunes in place; a user who keeps the original (advkit never changes it)
    # copies the model first: timed apart, for the like-for-like column.
    copy_cpu_seconds = Clock(process=True).time(lambda: copy.deepcopy(model))
    heads = [
        m
        for m in model.modules()
        if getattr(m, "out_features", None) == 10 or getattr(m, "out_channels", None) == 10
    ]
    try:
        start, cpu = time.perf_counter(), time.process_time()
        pruner = tp.pruner.MetaPruner(
            model,
            inputs,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=0.3,
            ignored_layers=heads,
        )
        pruner.step()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        first_forward = _first_forward_cpu_seconds(model, inputs)
        row = {
            "params_before": before[0],
            "params_after": count_parameters(model),
            "flops_before": before[1],
            "flops_after": count_flops(model, inputs),
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "ready_cpu_seconds": cpu_seconds + first_forward,
            "ready_with_copy_cpu_seconds": cpu_seconds + first_forward + copy_cpu_seconds,
        }
    except Exception as err:
        row = {"error": f"{type(err).__name__}: {str(err)[:120]}"}
    queue.put(row)  # type: ignore[attr-defined]


def _first_forward_cpu_seconds(pruned: nn.Module, inputs: torch.Tensor) -> float:
    """CPU seconds of the pruned model's first forward pass. Its new layer shapes make oneDNN
    build new kernels: advkit pays that inside ``prune`` (it runs the pruned copy to check it),
    Torch-Pruning's user on the first forward pass after ``step``, so "ready" (pruned and run
    once) is the like-for-like time."""

    def forward() -> None:
        with torch.no_grad():
            pruned(inputs)

    return Clock(process=True).time(forward)


def _warm_up(model: nn.Module, inputs: torch.Tensor) -> tuple[int, int]:
    """The same work before either library's clock starts: one forward pass (parameters and
    FLOPs of the unpruned model), then a full garbage collection, so that neither pays the
    first forward pass's set-up or the first collection of the objects the imports made."""
    import gc

    before = count_parameters(model), count_flops(model, inputs)
    gc.collect()
    return before


def _advkit_worker(name: str, queue: object, threads: int) -> None:
    torch.set_num_threads(threads)
    queue.put(_advkit_row(name, _zoo_inputs(name)))  # type: ignore[attr-defined]


def _isolated(worker: Callable[..., None], name: str, timeout: float) -> dict:
    """Run ``worker`` for one model in a fresh process, so that each library pays its
    first-call costs (imports, caches) for every model alike."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=worker, args=(name, queue, torch.get_num_threads()))
    process.start()
    try:
        return queue.get(timeout=timeout)
    except Exception:
        return {"error": f"no answer in {timeout:.0f} s"}
    finally:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()


def _cell(row: dict, key: str) -> str:
    if "error" in row:
        return "fails"
    before, after = row[f"{key}_before"], row[f"{key}_after"]
    return f"{before / 1e6:,.1f}M -> {after / 1e6:,.1f}M ({1 - after / before:.1%})"


def run_zoo(
    models: list[str],
    timeout: float,
    output_dir: Path | None,
    quick: bool,
    zoo: str = "torchvision",
    log: Callable[[str], None] = print,
    rounds: int = 1,
) -> Path:
    """Each model's ``rounds`` runs alternate between the libraries (a fresh process each, so
    drift in the machine's speed falls on both); a row's times are the medians over rounds."""
    rows: list[dict] = []
    md_path = _write_zoo(rows, zoo, output_dir, quick, rounds)
    for name in models:
        key = TIMM_PREFIX + name if zoo == "timm" else name
        runs: dict[str, list[dict]] = {"advkit": [], "tp": []}
        for _ in range(rounds):
            for library, worker in (("advkit", _advkit_worker), ("tp", _tp_worker)):
                if not runs[library] or "error" not in runs[library][-1]:  # errors repeat
                    runs[library].append(_isolated(worker, key, timeout))
        row = {
            "model": name,
            "advkit": _over_rounds(runs["advkit"]),
            "tp": _over_rounds(runs["tp"]),
        }
        if zoo == "timm":
            row["input_size"] = TIMM_ZOO[name][0]
        rows.append(row)
        log(f"{name}: advkit {_cell(row['advkit'], 'params')}, TP {_cell(row['tp'], 'params')}")
        md_path = _write_zoo(rows, zoo, output_dir, quick, rounds)  # after every row
    return md_path


_TIMES = ("seconds", "cpu_seconds", "ready_cpu_seconds", "ready_with_copy_cpu_seconds")


def _over_rounds(runs: list[dict]) -> dict:
    """One library's runs of one model as one row: the last run's, with each time the median
    over the runs (its readings kept under ``<key>_rounds``); an error if any run failed."""
    failed = [run for run in runs if "error" in run]
    if failed:
        return failed[0]
    row = dict(runs[-1])
    for key in _TIMES:
        if key in row:
            row[f"{key}_rounds"] = [run[key] for run in runs]
            row[key] = statistics.median(row[f"{key}_rounds"])
    return row


def _time_summary(rows: list[dict]) -> str:
    """The analysis times where both libraries run: the median of the per-model ratios and
    the medians of the times, plain and ready (with Torch-Pruning's copy)."""
    both = [(r["advkit"], r["tp"]) for r in rows if "error" not in r["advkit"] | r["tp"]]
    if not both:
        return "No model ran under both libraries."

    def median_ratio(ours: str, theirs: str) -> float:
        return statistics.median(a[ours] / t[theirs] for a, t in both)

    return (
        f"Analysis time where both run ({len(both)} models): median of the per-model ratios "
        f"advkit / TP {median_ratio('cpu_seconds', 'cpu_seconds'):.3f}; median times "
        f"{statistics.median(a['cpu_seconds'] for a, _ in both):.3f} s (advkit) and "
        f"{statistics.median(t['cpu_seconds'] for _, t in both):.3f} s (TP); ready: "
        f"{median_ratio('ready_cpu_seconds', 'ready_cpu_seconds'):.3f}, against TP + copy "
        f"{median_ratio('ready_cpu_seconds', 'ready_with_copy_cpu_seconds'):.3f}."
    )


def _write_zoo(
    rows: list[dict], zoo: str, output_dir: Path | None, quick: bool, rounds: int = 1
) -> Path:
    import torch_pruning as tp

    extra = {"torch_pruning": tp.__version__}
    if zoo == "timm":
        import timm

        extra["timm"] = timm.__version__
    payload = {
        "zoo": zoo,
        "rounds": rounds,
        "environment": environment("cpu", calibrate=not quick, **extra),
        "rows": rows,
    }
    stem = "pruning_zoo_timm" if zoo == "timm" else "pruning_zoo"
    json_path, md_path = result_paths(stem, quick=quick, out_dir=output_dir)
    write_json(json_path, payload)
    write_text(md_path, _zoo_markdown(payload))
    return md_path


def _zoo_markdown(payload: dict) -> str:
    rows = payload["rows"]
    env = payload["environment"]
    timm_zoo = payload.get("zoo") == "timm"
    where = (
        f"timm {env.get('timm')} zoo (pretrained=False, 10 classes) at the input size of each row"
        if timm_zoo
        else "Zoo at 1x3x224x224"
    )
    lines = [
        f"{where}, ratio 0.3, {env['cpu']}, torch {env['torch']}, "
        f"Torch-Pruning {env['torch_pruning']}. Params and FLOPs (MACs) before -> after "
        "(share removed); analysis = `Pruner.prune` (plan + apply, one pruned copy; advkit), "
        "MetaPruner build + step (TP), after the same warm-up forward pass and gc.collect(); "
        "ready = that plus the pruned model's first forward pass: CPU seconds of the process "
        "(all threads), wall seconds of the analysis in the JSON; + copy: with the deep copy that "
        "keeps the original model (Torch-Pruning prunes in place, advkit returns a copy). "
        f"Times: medians over {payload.get('rounds', 1)} round(s), each library's runs "
        "alternating, a fresh process per run.",
        "",
        _time_summary(rows),
        "",
        "| model | params advkit | params TP | FLOPs advkit | FLOPs TP "
        "| time advkit | time TP | ready advkit | ready TP | ready TP + copy |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for row in rows:
        a, t = row["advkit"], row["tp"]
        cells = [
            f"{r[key]:.2f} s" if key in r else _in_cell(r.get("error", "?"), 40)
            for key, r in (
                ("cpu_seconds", a), ("cpu_seconds", t), ("ready_cpu_seconds", a),
                ("ready_cpu_seconds", t), ("ready_with_copy_cpu_seconds", t),
            )
        ]  # fmt: skip
        lines.append(
            f"| {row['model']} | {_cell(a, 'params')} | {_cell(t, 'params')} | "
            f"{_cell(a, 'flops')} | {_cell(t, 'flops')} | {' | '.join(cells)} |"
        )
    if timm_zoo:
        lines[-len(rows) - 2 :] = _timm_rows(rows)
    return "\n".join(lines) + "\n"


def _share(row: dict, key: str) -> float | None:
    if "error" in row:
        return None
    return 1 - row[f"{key}_after"] / row[f"{key}_before"]


def _timm_rows(rows: list[dict]) -> list[str]:
    """The timm table: shares side by side, analysis CPU seconds, and why advkit stops short
    (the plan's most frequent reasons) wherever it removes under 0.8x TP's share or 20%."""
    lines = [
        "| model | input | params advkit | params TP | FLOPs advkit | FLOPs TP "
        "| time advkit | time TP | advkit / TP (params) | why advkit keeps more |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --- |",
    ]
    for row in rows:
        a, t = row["advkit"], row["tp"]
        ours, theirs = _share(a, "params"), _share(t, "params")
        ratio = f"{ours / theirs:.2f}" if ours is not None and theirs else "-"
        short = ours is None or (theirs is not None and ours < 0.8 * theirs) or ours < 0.2
        why = "; ".join(a.get("reasons", [])) if short and ours is not None else ""
        if ours is None:
            why = a.get("error", "?")
        times = [
            f"{r['cpu_seconds']:.2f} s" if "cpu_seconds" in r else _in_cell(r.get("error", "?"), 40)
            for r in (a, t)
        ]
        lines.append(
            f"| {row['model']} | {row['input_size']} | {_cell(a, 'params')} | "
            f"{_cell(t, 'params')} | {_cell(a, 'flops')} | {_cell(t, 'flops')} | "
            f"{' | '.join(times)} | {ratio} | {_in_cell(why, 160)} |"
        )
    return lines


def _in_cell(text: str, limit: int) -> str:
    """``text`` on one line, without the table's separator, cut to ``limit`` characters."""
    return " ".join(text.split()).replace("|", "/")[:limit]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, batch 1 only")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument(
        "--zoo",
        nargs="?",
        const="torchvision",
        choices=("torchvision", "timm"),
        help="a model zoo vs Torch-Pruning (torchvision's if no name is given)",
    )
    parser.add_argument("--models", nargs="+", default=None, help="zoo models to run")
    parser.add_argument("--tp-timeout", type=float, default=240.0, help="seconds per TP run")
    parser.add_argument("--rounds", type=int, default=1, help="zoo runs per model and library")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.zoo:
        models = args.models or (list(TIMM_ZOO) if args.zoo == "timm" else ZOO)
        if args.rounds < 1:
            parser.error(f"--rounds must be >= 1, got {args.rounds}")
        path = run_zoo(
            models, args.tp_timeout, args.output_dir, args.quick, args.zoo, rounds=args.rounds
        )
        print(path.read_text())
        return
    config = {
        "quick": args.quick,
        "batch_sizes": args.batch_sizes or ([1] if args.quick else [1, 16]),
        "repeats": args.repeats or (3 if args.quick else 50),
        "warmup": args.warmup if args.warmup is not None else (1 if args.quick else 5),
        "seed": args.seed,
        "image_size": IMAGE_SIZE,
        "targets": TARGETS,
    }
    if min(config["batch_sizes"]) < 1 or config["repeats"] < 1 or config["warmup"] < 0:
        parser.error("batch sizes and repeats must be >= 1, warmup >= 0")

    variants = build_variants(args.seed)
    for v in variants:
        print(f"{v.name}: {v.params:,} parameters, {v.flops / 1e9:.3f} GFLOPs")
    measure_latency(
        variants,
        config["batch_sizes"],
        config["warmup"],
        config["repeats"],
        args.seed,
        print,
    )
    json_path, md_path = write_results(variants, config, args.output_dir)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
