#!/usr/bin/env bash
# The accelerator tables of docs/scale.md. First MNIST's rows: Adam, E-MSA and L-BFGS,
# one epoch each at float32, with experiments/li_mnist.py's problem and solvers. Then
# Adam, L-BFGS, emsa, msa and pmp-newton over
# N in {1e4, 1e5, 1e6}, L in {20, 100}, widths 3 and 30, float32 and float64, on the
# first JAX device (meant for one NVIDIA H200; the assumed peaks are in benchmarks/gpu.py).
# Finishes within 8 minutes: rows that no longer fit the 420 s budget are printed as
# skipped. JSON lines on stdout (also written to runs/gpu.jsonl).
#
#   bash benchmarks/gpu.sh            # the table, on the accelerator
#   bash benchmarks/gpu.sh --smoke    # tiny sizes on any machine (CPU): proves it runs
#   bash benchmarks/gpu.sh --only mnist   # just MNIST's rows (--only ring: just the table)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # measure what the solves use, not a pool
mkdir -p runs
timeout 470 python benchmarks/gpu.py "$@" | tee runs/gpu.jsonl
