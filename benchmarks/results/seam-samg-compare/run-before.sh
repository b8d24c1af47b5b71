cd /tmp/orig
export PYTHONPATH=/tmp/orig
export O2O_REFERENCE_DIR=/work/shared/datasets
PY=/work/main/.venv/bin/python
common="--dataset hopper-medium-lite --offline-steps 1000 --online-steps 2000 --eval-episodes 3 --offline-eval-every 1000 --online-eval-every 1000 --runs-dir /tmp/baseline --no-progress"
taskset -c 0 $PY -m o2o train $common --algo iql --finetune samg --seeds 2 --method-set cvae_steps=1000 --method-set adaptive_every=1000 --name iql-samg > /tmp/baseline/iql.log 2>&1
taskset -c 0 $PY -m o2o train $common --algo iql --finetune samg-even --seeds 2 --name iql-samg-even > /tmp/baseline/iql-even.log 2>&1
taskset -c 0 $PY -m o2o train $common --algo cql --set cql_n_actions=2 --finetune samg --seeds 1 --method-set cvae_steps=1000 --method-set guidance_steps=1500 --name cql-samg > /tmp/baseline/cql.log 2>&1
taskset -c 0 $PY -m o2o train $common --algo iql --seeds 2 --name iql-vanilla > /tmp/baseline/iql-vanilla.log 2>&1
taskset -c 0 $PY -m o2o train $common --algo iql --finetune samg-even --seeds 2 --method-set seed_transitions=0 --name iql-samg-even-noseed > /tmp/baseline/iql-even-noseed.log 2>&1
taskset -c 0 $PY -m o2o train $common --algo cql --set cql_n_actions=2 --finetune samg-even --seeds 1 --method-set seed_transitions=0 --name cql-samg-even-noseed > /tmp/baseline/cql-even-noseed.log 2>&1
