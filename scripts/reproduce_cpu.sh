#!/usr/bin/env bash
# The CPU protocol: the whole five-method x four-rate noise table on the embedded CIFAR-10 subset
# (cifar10-mini) with the "cpu" profile (small CNN, settings in noisysam.train.PROFILES), seeds 0 and 1.
# Sized to take about an hour on 2 CPU cores. On a machine shared with other jobs pass --threads 1:
# torch's threads spin-wait for each other and can run many times slower than one thread.
# Safe to interrupt: re-running the same command skips finished runs and resumes the current one.
#
# Usage: scripts/reproduce_cpu.sh [RESULTS_DIR] [extra `noisysam table` options]
set -euo pipefail
out="${1:-results/table-cpu}"
shift || true
noisysam table --profile cpu --out "$out" "$@"
