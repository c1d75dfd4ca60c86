#!/bin/bash
# quiet evaluation: shipped vs light predictor, toy oracle, 5 landmarks
cd /work/main && . .venv/bin/activate
export HF_HUB_OFFLINE=1
L=/work/scratch/light/toyfaces-64-auto-light.safetensors
O=/work/scratch/light/eval
mkdir -p $O
echo "start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
python -m draggan experiment landmarks --model toyfaces-64 --pairs 100 --points 5 --methods draggan,auto,auto-refine --json $O/q100-shipped.json 2>/dev/null | tail -4
python -m draggan experiment landmarks --model toyfaces-64 --pairs 100 --points 5 --methods auto,auto-refine --predictor $L --json $O/q100-light.json 2>/dev/null | tail -3
for r in 1 2 3; do
  python -m draggan experiment landmarks --model toyfaces-64 --pairs 30 --points 5 --methods draggan,auto,auto-refine --json $O/t30-shipped-$r.json 2>/dev/null | tail -4
  python -m draggan experiment landmarks --model toyfaces-64 --pairs 30 --points 5 --methods auto,auto-refine --predictor $L --json $O/t30-light-$r.json 2>/dev/null | tail -3
done
echo "end $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
