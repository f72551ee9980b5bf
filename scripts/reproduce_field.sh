#!/usr/bin/env bash
# The label-noise methods of the field, each with and without SAM, at each paper's own GPU protocol on CIFAR-10
# (symmetric noise), as close as noisysam's models and optimizers allow; what differs is said per paper.
#
#   elr          ELR, Liu et al. 2020 (arXiv 2007.00151): ResNet-34 in the paper (here PreAct ResNet-18), SGD
#                momentum 0.9, lr 0.02, weight decay 1e-3, batch 128, 120 epochs, cosine annealing (the
#                authors' "ELR (cosine annealing)" row: 91.12 / 91.43 / 88.87 / 80.69 at 20/40/60/80%),
#                beta 0.7, lambda 3.
#   co-teaching  Han et al. 2018 (arXiv 1804.06872): a 9-layer CNN with Adam lr 0.001 in the paper (here PreAct
#                ResNet-18 with SGD, which noisysam's methods use), batch 128, 200 epochs, tau = noise rate,
#                T_k 10 (the paper: 74.02 at 50%, 82.32 at 20% symmetric, 9-layer CNN).
#   dividemix    Li et al. 2020 (arXiv 2002.07394): PreAct ResNet-18, SGD momentum 0.9, lr 0.02, weight decay
#                5e-4, batch 64, 300 epochs, lr / 10 after 150 (here "step": / 10 at 50% and again at 75%),
#                warm-up 10, T 0.5, alpha 4, threshold 0.5, lambda_u by the paper's Appendix B (its Table 7) for
#                CIFAR-10: 0 at 20%, 25 at 40-80% (25 at 50% and 80% in the table; 50 belongs to 90%, 150 to
#                CIFAR-100 from 50%) (the paper: best 96.1 / 94.6 / 93.2 / 76.0 at 20/50/80/90%).
#
# Needs a CUDA GPU and CIFAR-10 (downloaded into --data-root on first use). Each paper's grid is one
# `noisysam table` (X and X-sam side by side, X-sam at the profile's SAM radius: 0.1, 0.05 at 80%); re-running
# skips finished runs and resumes the current one. A two-network method costs at least twice SGD per step,
# DivideMix about 6x (SAM doubles the update passes).
#
# Usage: scripts/reproduce_field.sh elr|co-teaching|dividemix [RESULTS_DIR] [extra `noisysam table` options,
#        e.g. --seeds 0 --rates 0.8 --epochs 5 for a quick look]
set -euo pipefail
paper="${1:?name the paper: elr, co-teaching or dividemix}"
out="${2:-results/field-$paper}"
shift $(( $# >= 2 ? 2 : 1 ))
common=(--profile paper --dataset cifar10 --download --model preact_resnet18 --rates 0.2,0.4,0.6,0.8 --seeds 0,1,2
        --methods "$paper,$paper-sam" --out "$out")
case "$paper" in
  elr)         noisysam table "${common[@]}" --epochs 120 --batch-size 128 --lr 0.02 --weight-decay 1e-3 \
                 --schedule cosine "$@" ;;
  co-teaching) noisysam table "${common[@]}" --epochs 200 --batch-size 128 --lr 0.02 --weight-decay 5e-4 \
                 --schedule cosine "$@" ;;
  dividemix)   dm=(--epochs 300 --batch-size 64 --lr 0.02 --weight-decay 5e-4 --schedule step)
               noisysam table "${common[@]}" "${dm[@]}" --rates 0.2 --method-param lambda_u=0 "$@"
               noisysam table "${common[@]}" "${dm[@]}" --rates 0.4,0.6,0.8 --method-param lambda_u=25 "$@" ;;
  *) echo "unknown paper '$paper': elr, co-teaching or dividemix" >&2; exit 2 ;;
esac
