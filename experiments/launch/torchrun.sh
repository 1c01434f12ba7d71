#!/bin/bash
# One run of `pico train` with torchrun (TorchElastic): 1 node x G GPUs, or N nodes x G GPUs.
#
# Usage:
#   GPUS=8 bash experiments/launch/torchrun.sh experiments/demo.yaml run.name=demo_8gpu
#   # N nodes: run the same command on every node, with MASTER = the first node's host name (port 29500 open)
#   NNODES=4 GPUS=8 MASTER=node001 bash experiments/launch/torchrun.sh experiments/flux_fill.yaml run.name=flux_4x8
# Arguments are `pico train` arguments: the experiment file(s), then key=value overrides. torchrun starts G processes
# per node and sets RANK / LOCAL_RANK / WORLD_SIZE; Lightning detects TorchElastic and uses them. The script runs
# `pico embed`, then `pico train`, both with the shape as defaults: train.devices=G train.num_nodes=N run.resume=auto
# go over the first experiment file and under your other files and overrides, so yours win (e.g. a YAML overlay, or
# train.strategy=fsdp: the strategy is the experiment's; auto is DDP for several ranks). RDZV_ID names the job
# (default pico); run.resume=auto continues from <run dir>/checkpoints/last.ckpt when restarted. The run directory
# must be on a filesystem every node sees (`pico train` checks it at start).
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: [NNODES=N] [GPUS=G] [MASTER=host] bash experiments/launch/torchrun.sh EXPERIMENT.yaml [key=value ...]" >&2
    exit 2
fi
NNODES=${NNODES:-1}
GPUS=${GPUS:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}
GPUS=$(( GPUS > 0 ? GPUS : 1 ))
MASTER=${MASTER:-localhost}

if [ "$NNODES" -eq 1 ]; then
    RDZV=(--standalone)
else
    RDZV=(--rdzv-backend c10d --rdzv-endpoint "${MASTER}:29500" --rdzv-id "${RDZV_ID:-pico}")
fi
DEFAULTS=(--defaults "train.devices=${GPUS}" --defaults "train.num_nodes=${NNODES}" --defaults run.resume=auto)
# Training never builds the text encoders: embed the run's prompts once (per node: the cache may be node-local).
python -m pico_lightning.cli embed "${DEFAULTS[@]}" "$@"
exec torchrun --nnodes "$NNODES" --nproc-per-node "$GPUS" "${RDZV[@]}" \
    -m pico_lightning.cli train "${DEFAULTS[@]}" "$@"
