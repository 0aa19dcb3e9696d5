#!/usr/bin/env bash
# Your own classes from a folder of videos: split, look, train, evaluate, predict, export.
#
#   bash examples/own_videos/run.sh all_videos            # all_videos/<class>/<video>
#
# Writes my_videos/ (the split, as links), runs/my-videos/ (the run: curves.png to watch it,
# best/ and final/ models, eval/) and runs/my-videos/model.onnx. EPOCHS=2 for a quick try.
set -euo pipefail
source=${1:?usage: run.sh FOLDER_OF_CLASS_FOLDERS}
here=$(dirname "$0")
run=runs/my-videos

# 1. prepare: hold 20% of each class out for the test (links, reproducible)
python "$here/split.py" "$source" my_videos --test-fraction 0.2

# 2. look: classes, videos per class, unreadable or missing files
mbt data summary --format folder my_videos/train

# 3. train: the small model (a laptop is enough); 20% of the training videos choose the best
#    weights. For MBT-B from ImageNet-21k, use --preset audioset-mini as in the README.
mbt train --preset tiny --run-dir "$run" --no-progress --set \
    'dataset.train=[my_videos/train]' 'dataset.test=[my_videos/test]' dataset.val_fraction=0.2 \
    train.batch_size=8 train.epochs="${EPOCHS:-10}" 'train.loggers=[csv]'

# 4. evaluate the best weights on the test videos: metrics.json, per_class.csv, confusion.png
mbt eval "$run" --data my_videos/test --format folder --no-progress

# 5. predict: the three most likely classes of each test video
mbt predict my_videos/test/*/* --model "$run" --topk 3

# 6. export for deployment (ONNX: inputs rgb and spectrogram, output logits)
mbt export --model "$run" --out "$run/model.onnx"
