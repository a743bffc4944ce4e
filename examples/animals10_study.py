#!/usr/bin/env python
"""The ResNet-18 / Animals-10 adversarial robustness study, end to end, built from advkit.

Reproduces every experiment of the student study (baselines at 4 and 20 epochs, I-FGSM over
eps x iterations, L1 pruning of layer4 with fine-tuning, light and strong adversarial
fine-tuning) and goes beyond it (PGD and MI-FGSM, a black-box transfer matrix, adversarial
fine-tuning with a correct recipe). Writes ``report.md``, ``results.json`` and PNG plots to the
results folder, where every stage is cached: rerun the same command to resume.

Usage::

    python examples/animals10_study.py                      # SYNTHETIC demo data, minutes on a CPU
    python examples/animals10_study.py --data PATH/raw-img --weights imagenet --device cuda
    python examples/animals10_study.py --help               # every setting
    torchrun --standalone --nproc_per_node 4 examples/animals10_study.py --data PATH/raw-img

Under ``torchrun`` the processes train together (DDP) and share every evaluation (exact global
results); rank 0 writes the outputs. See the docs' "Scaling out" page.

The pieces live in ``examples/study/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
