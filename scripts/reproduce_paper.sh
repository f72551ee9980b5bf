#!/usr/bin/env bash
# The SAM paper's label-noise table (Foret et al. 2021, Table 4) with its protocol: CIFAR-10, ResNet-32,
# 200 epochs, symmetric noise at 20/40/60/80%, rho 0.1 (0.05 at 80%), the five methods sgd, mixup,
# bootstrap-mixup, sam, bootstrap-sam; the unstated settings follow ASAM's CIFAR code (profile "paper").
#
# Needs a CUDA GPU and CIFAR-10 (downloaded into --data-root on first use). Expected time: not yet
# measured; per seed the grid costs about 10 x 4 = 40 ResNet-32 trainings of 200 epochs in SGD-step
# units (SAM steps cost two, relabel-and-retrain trains twice), i.e. many hours on one GPU.
# Safe to interrupt: re-running the same command skips finished runs and resumes the current one.
#
# Usage: scripts/reproduce_paper.sh [RESULTS_DIR] [extra `noisysam table` options, e.g. --seeds 0,1,2]
set -euo pipefail
out="${1:-results/table-paper}"
shift || true
noisysam table --profile paper --dataset cifar10 --download --seeds 0,1,2 --out "$out" "$@"
