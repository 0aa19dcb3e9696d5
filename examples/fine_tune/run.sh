#!/usr/bin/env bash
# Fine-tune a trained model on new classes: the towers (and the bottlenecks) start from the
# trained run, the classifier is new because the classes differ.
#
#   bash examples/fine_tune/run.sh runs/my-videos new_videos   # new_videos/{train,test}/<class>/...
#
# Writes runs/fine-tuned/. A run folder gives its best weights (else final); a model folder
# (save_pretrained, or `mbt convert`'s) works the same way. EPOCHS, BATCH_SIZE and VAL_FRACTION
# (the share of new_videos/train held out for validation) may be set for small folders.
set -euo pipefail
base=${1:?usage: run.sh TRAINED_RUN_OR_MODEL NEW_VIDEOS}
videos=${2:?usage: run.sh TRAINED_RUN_OR_MODEL NEW_VIDEOS}
run=runs/fine-tuned

# a lower learning rate than from scratch; the clip geometry must be the trained model's
mbt train --preset tiny --run-dir "$run" --no-progress --set \
    train.init_from="$base" train.lr=0.001 train.epochs="${EPOCHS:-5}" train.batch_size="${BATCH_SIZE:-8}" \
    "dataset.train=[$videos/train]" "dataset.test=[$videos/test]" dataset.val_fraction="${VAL_FRACTION:-0.2}"

mbt eval "$run" --data "$videos/test" --format folder --no-progress

# or keep the trained towers fixed and train only the new classifier:
#   mbt train ... --set train.init_from="$base" train.freeze=true ...
