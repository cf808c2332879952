#!/usr/bin/env bash
# The paper's protocol on a GPU: Tables 1 and 2, the AR ablation and the histograms, three seeds,
# 250 epochs, on RSNA and/or VinBigData from their Kaggle downloads (never downloaded here).
#
#   bash scripts/reproduce_paper.sh --rsna PATH/rsna-pneumonia-detection-challenge \
#        [--vinbigdata PATH/vinbigdata-chest-xray-abnormalities-detection] [--out results]
#
# Each dataset: `ddad prepare` (once) then `ddad reproduce --protocol paper --device cuda`.
# Run it again after a stop: prepared data and finished runs are reused, a stopped run resumes.
set -euo pipefail
out=results; rsna=; vin=
while [ $# -gt 0 ]; do
  case "$1" in
    --rsna) rsna=$2; shift 2 ;;
    --vinbigdata) vin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown option $1 (use --rsna, --vinbigdata, --out)" >&2; exit 2 ;;
  esac
done
[ -n "$rsna$vin" ] || { echo "give --rsna PATH and/or --vinbigdata PATH" >&2; exit 2; }
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: use --protocol cpu with ddad reproduce instead')"
mkdir -p "$out"
for name in rsna vinbigdata; do
  src=$rsna; [ "$name" = vinbigdata ] && src=$vin
  [ -n "$src" ] || continue
  [ -f "$out/data-$name/dataset.json" ] || ddad prepare "$name" --root "$src" --out "$out/data-$name"
  ddad reproduce --data "$out/data-$name" --out "$out/paper-$name" --protocol paper --device cuda
done
