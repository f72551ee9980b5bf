#!/usr/bin/env bash
# The CPU protocol: the whole five-method x four-rate noise table on the embedded CIFAR-10 subset
# (cifar10-mini) with the "cpu" profile (small CNN, settings in noisysam.run.config.PROFILES), seed 0: about an
# hour on 2 CPU cores (docs/paper-reproduction.md). More seeds: add e.g. `--seeds 0,1,2`
# (the last --seeds given wins). On a machine shared with other jobs pass --threads 1: torch's threads
# spin-wait for each other and can run many times slower than one thread.
# Safe to interrupt: re-running the same command skips finished runs and resumes the current one.
#
# Usage: scripts/reproduce_cpu.sh [RESULTS_DIR] [extra `noisysam table` options]
set -euo pipefail
out="${1:-results/table-cpu}"
shift || true
noisysam table --profile cpu --seeds 0 --out "$out" "$@"
