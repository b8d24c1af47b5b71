#!/bin/bash
# Alternate old (HEAD before the seam, /tmp/orig) and new engine_speed runs on a quiet machine.
PIDS=$(pgrep -f "o2o datasets make|o2o.cli bench|budget_study.py|o2o train|-m o2o train" | tr '\n' ' ')
echo "pausing: $PIDS"
kill -STOP $PIDS
for i in 1 2; do
  for side in orig new; do
    if [ $side = orig ]; then dir=/tmp/orig; else dir=/work/main; fi
    (cd $dir && PYTHONPATH=$dir /work/main/.venv/bin/python benchmarks/engine_speed.py --reps 3 --updates 1000 --out /tmp/speed-$side-$i.json > /tmp/speed-$side-$i.log 2>&1)
  done
done
kill -CONT $PIDS
echo done
