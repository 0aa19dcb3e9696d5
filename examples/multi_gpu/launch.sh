#!/usr/bin/env bash
# The own_videos training on every GPU of this machine (DDP: one process per GPU, the global
# batch split over them; the results equal one process with the whole batch).
#
#   bash examples/multi_gpu/launch.sh my_videos            # one machine, MBT-B (audioset-mini recipe)
#   NNODES=2 NODE_RANK=0 MASTER=host0 bash examples/multi_gpu/launch.sh my_videos   # on host0
#   NNODES=2 NODE_RANK=1 MASTER=host0 bash examples/multi_gpu/launch.sh my_videos   # on host1
#
# More `section.field=value` after the folder override the defaults below, e.g.
#   PRESET=tiny NPROC=2 bash examples/multi_gpu/launch.sh my_videos train.device=cpu   # 2 CPU processes (gloo)
# With several machines the run folder must be on storage all of them see. docs/scaling.md
# has SLURM and FSDP (train.fsdp=true, for models that do not fit one GPU).
set -euo pipefail
videos=${1:?usage: launch.sh VIDEOS [SECTION.FIELD=VALUE ...]}
shift
nproc=${NPROC:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
if [ "${NNODES:-1}" = 1 ]; then
    nodes=(--standalone)
else
    nodes=(--nnodes="$NNODES" --node_rank="$NODE_RANK" --rdzv_backend=c10d --rdzv_endpoint="$MASTER:29500")
fi
torchrun "${nodes[@]}" --nproc_per_node="$nproc" -m mbt.cli train --preset "${PRESET:-audioset-mini}" \
    --run-dir "${RUN_DIR:-runs/my-videos-ddp}" --no-progress --set dataset.format=folder \
    "dataset.train=[$videos/train]" "dataset.test=[$videos/test]" dataset.val_fraction=0.1 \
    train.batch_size=64 train.num_workers=8 train.amp=auto "$@"
