#!/usr/bin/env bash
# InfoGAN training on a Slurm cluster: one `accelerate launch` per node (c10d rendezvous),
# checkpoint-and-requeue on preemption or time limit, resume from the run directory.
#
# Submit from the repository root (the job cds to $SLURM_SUBMIT_DIR):
#   sbatch slurm/infogan.sh                                   # 2 nodes x 8 GPUs, configs/mnist.yaml
#   sbatch --nodes=4 --export=ALL,CONFIG=configs/mnist.yaml slurm/infogan.sh
#   sbatch --nodes=2 --gpus-per-node=4 --export=ALL,OVERRIDES="train.max_steps=20000" slurm/infogan.sh
#   sbatch --nodes=2 --gpus-per-node=0 --cpus-per-task=4 \
#          --export=ALL,GPUS_PER_NODE=0,CONFIG=configs/smoke.yaml slurm/infogan.sh   # CPU-only nodes
#
# Run directory: $RUN_DIR/$SLURM_JOB_ID (the job id survives requeues), so a requeued job
# resumes from its newest complete checkpoint (train.resume=auto). Log: infogan-<jobid>.log
# in the submit directory, appended to by every requeued segment.
#
# Stopping: Slurm sends USR1 to this shell 300 s before the time limit
# (--signal=B:USR1@300); `scancel --signal=USR1 --batch <job>` does the same by hand.
# The shell creates STOP in the run directory; every rank stops after the same step,
# saves a checkpoint there, deletes STOP and exits 0; the shell then requeues the job.
# A run that finishes is not requeued; a run that fails exits non-zero and is not requeued,
# except for an outage: training that ends because a store (S3/HTTP) stayed unreachable
# past data.retry_s exits 75 (EX_TEMPFAIL) and writes <run dir>/OUTAGE; the shell then
# requeues the job, at most MAX_OUTAGE_REQUEUES times in a row (the launcher reports every
# worker failure as exit 1, so the marker file, not the status, carries the news).
# `touch runs/<jobid>/STOP` stops (with a checkpoint) without a requeue.
#
# A crashed rank (killed, out of memory, a lost collective) costs minutes, not the job:
# torchrun restarts every worker up to MAX_RESTARTS times (default 3) within the job, and
# each restart resumes from the newest complete checkpoint (train.resume=auto), replaying
# the lost steps exactly. MAX_RESTARTS=0 ends the job at the first failure. Restarts need
# torchrun, i.e. more than one process in all (a single process runs without a launcher);
# across nodes they need TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, set below (docs/checkpoints.md
# "In-job restarts").
#
#SBATCH --job-name=infogan
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --open-mode=append
#SBATCH --output=infogan-%j.log

# ---- settings: set them in the environment of sbatch (exported by default) or with
# ---- sbatch --export=ALL,NAME=value,...  (values without commas there) ------------------
CONFIG=${CONFIG:-configs/mnist.yaml}            # training config, relative to the repo root
# GPUs (= processes) per node; defaults to the GPUs Slurm gave the job. 0: CPU-only nodes,
# one process each, DDP over gloo. Keep it equal to sbatch --gpus-per-node.
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-0}}
RUN_DIR=${RUN_DIR:-runs}                        # parent of the run directory $RUN_DIR/$RUN_NAME
RUN_NAME=${RUN_NAME:-${SLURM_JOB_ID:-}}         # the job id (kept by requeues); an old id continues that run
OVERRIDES=${OVERRIDES:-}                        # extra section.key=value, space separated
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-launch/multi_node.yaml}  # "" = flags only
TRAIN_SCRIPT=${TRAIN_SCRIPT:-train.py}          # entry point, relative to the repo root
MAX_RESTARTS=${MAX_RESTARTS:-3}                 # in-job restarts of all workers after a crash
MAX_OUTAGE_REQUEUES=${MAX_OUTAGE_REQUEUES:-10}  # requeues after a store outage (exit 75), per job
REPO_DIR=${REPO_DIR:-${SLURM_SUBMIT_DIR:-$PWD}} # where train.py and .venv live

set -uo pipefail

# Credentials in a URL (user info, query values) never reach the log (docs/safety.md).
redact() { sed -E 's#(://)[^/[:space:]]*@#\1***@#g; s#([?&;][^=&;#[:space:]]*)=[^&;#[:space:]]*#\1=***#g'; }
log() { echo "infogan.sh [$(date '+%F %T')] $*" | redact; }
die() { log "error: $*" >&2; exit 2; }

# USR1 (Slurm, --signal=B:USR1@300, or scancel --signal=USR1 --batch) and TERM: ask
# training to stop by creating STOP_FILE, then requeue once it has saved and exited.
# Trapped from the start: bash's default for USR1 would end the job without a requeue.
STOP_SIGNAL=""
STOP_FILE=""
request_stop() {
  [ -n "$STOP_SIGNAL" ] && return  # asked already
  STOP_SIGNAL=$1
  log "got SIG$1: asking training to stop at the next step (creating ${STOP_FILE:-STOP})"
  [ -z "$STOP_FILE" ] || { mkdir -p "${STOP_FILE%/*}" && touch "$STOP_FILE"; }
}
trap 'request_stop USR1' USR1
trap 'request_stop TERM' TERM

[ -n "${SLURM_JOB_ID:-}" ] || die "not inside a Slurm job; submit with: sbatch slurm/infogan.sh"
cd "$REPO_DIR" || die "cannot cd to REPO_DIR=$REPO_DIR"
[ -f "$TRAIN_SCRIPT" ] || die "no $TRAIN_SCRIPT in $PWD: submit from the repository root (or set REPO_DIR)"
[ -f "$CONFIG" ] || die "CONFIG=$CONFIG not found in $PWD"
[ -z "$ACCELERATE_CONFIG" ] || [ -f "$ACCELERATE_CONFIG" ] \
  || die "ACCELERATE_CONFIG=$ACCELERATE_CONFIG not found in $PWD"
[[ "$GPUS_PER_NODE" =~ ^[0-9]+$ ]] || die "GPUS_PER_NODE=$GPUS_PER_NODE is not a count"
[[ "$MAX_RESTARTS" =~ ^[0-9]+$ ]] || die "MAX_RESTARTS=$MAX_RESTARTS is not a count"
[[ "$MAX_OUTAGE_REQUEUES" =~ ^[0-9]+$ ]] || die "MAX_OUTAGE_REQUEUES=$MAX_OUTAGE_REQUEUES is not a count"
case " $OVERRIDES" in *" run.output_dir="* | *" run.name="*)
  die "set RUN_DIR and RUN_NAME instead of run.output_dir/run.name in OVERRIDES (the STOP file must be where training looks)" ;;
esac

if [ -x .venv/bin/accelerate ]; then
  ACCELERATE=$PWD/.venv/bin/accelerate
elif command -v accelerate >/dev/null; then
  ACCELERATE=$(command -v accelerate)
else
  die "no .venv/bin/accelerate in $PWD and no accelerate on PATH (run launch/setup.sh)"
fi

NNODES=${SLURM_NNODES:-${SLURM_JOB_NUM_NODES:-1}}
PROCS_PER_NODE=$(( GPUS_PER_NODE > 0 ? GPUS_PER_NODE : 1 ))
NUM_PROCESSES=$(( NNODES * PROCS_PER_NODE ))
case "$RUN_DIR" in /*) ;; *) RUN_DIR=$PWD/$RUN_DIR ;; esac
JOB_DIR=$RUN_DIR/$RUN_NAME

# Rendezvous on the first node of the allocation, at the address Slurm itself uses for it
# (NodeAddr), not a guess from its name. The port is derived from the job id, so it is the
# same after a requeue and differs between jobs sharing a node.
node_addr() {
  scontrol show node "$1" 2>/dev/null | tr ' ' '\n' | sed -n 's/^NodeAddr=//p' | head -n 1
}
MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_ADDR=$(node_addr "$MAIN_NODE")
[ -n "$MAIN_ADDR" ] || die "could not read NodeAddr of $MAIN_NODE from scontrol show node"
MAIN_PORT=${MAIN_PORT:-$(( 20000 + SLURM_JOB_ID % 20000 ))}
# c10d across nodes. On one node: static at 127.0.0.1:MAIN_PORT (accelerate passes no
# endpoint for one machine, and c10d would then fall back to a fixed localhost:29400).
if [ "$NNODES" -gt 1 ]; then RDZV_BACKEND=c10d; else RDZV_BACKEND=static; fi
# c10d shares its agent's TCPStore with the workers by default and keeps it across
# restarts; the workers then tell attempts apart by TORCHELASTIC_RESTART_COUNT, which a
# node whose workers did not fail does not increment, so after a rank dies the nodes
# join the new attempt under different keys (gloo: "connectFullMesh failed ... Connect
# timeout"; pytorch/pytorch#135712). Without sharing, each attempt's rank 0 hosts a
# fresh store: restarts across nodes work (tests/integration/test_recovery.py).
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

# accelerate 1.15: --multi_gpu goes through torchrun, which starts PROCS_PER_NODE workers
# per node; with no GPU each worker comes up as MULTI_CPU over gloo (--cpu would start only
# one process per node). A single process in all needs no launcher flags at all.
LAUNCH_FLAGS=(--num_processes "$NUM_PROCESSES" --num_machines "$NNODES")
[ "$NUM_PROCESSES" -gt 1 ] && LAUNCH_FLAGS=(--multi_gpu "${LAUNCH_FLAGS[@]}" --max_restarts "$MAX_RESTARTS")
[ -n "$ACCELERATE_CONFIG" ] && LAUNCH_FLAGS=(--config_file "$ACCELERATE_CONFIG" "${LAUNCH_FLAGS[@]}")
read -r -a EXTRA_OVERRIDES <<< "$OVERRIDES"
TRAIN_ARGS=("$TRAIN_SCRIPT" --config "$CONFIG" "run.output_dir=$RUN_DIR"
            "run.name=$RUN_NAME" train.resume=auto "${EXTRA_OVERRIDES[@]}")

# Read by the srun tasks below.
export ACCELERATE MAIN_ADDR MAIN_PORT NNODES RDZV_BACKEND
export TORCHELASTIC_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1
export PET_SIGNALS_TO_HANDLE=$TORCHELASTIC_SIGNALS_TO_HANDLE  # torch >= 2.14 reads this one
export PYTHONUNBUFFERED=1
if [ -z "${OMP_NUM_THREADS:-}" ]; then
  cpus=${SLURM_CPUS_PER_TASK:-$PROCS_PER_NODE}
  export OMP_NUM_THREADS=$(( cpus / PROCS_PER_NODE > 0 ? cpus / PROCS_PER_NODE : 1 ))
fi
[ "$GPUS_PER_NODE" -eq 0 ] && export CUDA_VISIBLE_DEVICES=""  # CPU-only, even where GPUs exist

log "job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST: $NNODES node(s) x" \
    "$PROCS_PER_NODE process(es) ($( [ "$GPUS_PER_NODE" -eq 0 ] && echo CPU/gloo || echo "GPU" ))," \
    "rendezvous $MAIN_ADDR:$MAIN_PORT, run dir $JOB_DIR"
log "$ACCELERATE launch ${LAUNCH_FLAGS[*]} --machine_rank \$SLURM_NODEID ... ${TRAIN_ARGS[*]}"

rm -f "$JOB_DIR/STOP"  # a STOP that outlived its segment would stop this one at once
OUTAGE_FILE=$JOB_DIR/OUTAGE  # written by training when a store stayed unreachable (exit 75)
rm -f "$OUTAGE_FILE"
STOP_FILE=$JOB_DIR/STOP
if [ -n "$STOP_SIGNAL" ]; then  # signalled during set-up: no training started, none to save
  log "stop requested before training started; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID" || { log "error: scontrol requeue $SLURM_JOB_ID failed"; exit 1; }
  exit 0
fi

# One task per node. Single quotes: $SLURM_NODEID etc. are expanded by each node's own
# shell, so every node gets its own machine rank (double quotes would give all of them 0).
# torchrun's c10d rendezvous ignores --machine_rank (it assigns the group ranks itself);
# accelerate uses it to check the port on machine 0 only. The store is hosted by node 0
# (is_host, not torch's guess from host names), and every node announces its NodeAddr
# (PET_LOCAL_ADDR = torchrun --local-addr), which becomes the workers' MASTER_ADDR on
# whichever node gets group rank 0.
srun --nodes="$NNODES" --ntasks="$NNODES" --ntasks-per-node=1 \
     ${SLURM_CPUS_PER_TASK:+--cpus-per-task="$SLURM_CPUS_PER_TASK"} \
     --kill-on-bad-exit=1 --label \
  bash -c '
    is_host=0; [ "$SLURM_NODEID" -eq 0 ] && is_host=1
    addr=$(scontrol show node "$SLURMD_NODENAME" 2>/dev/null | tr " " "\n" | sed -n "s/^NodeAddr=//p" | head -n 1)
    export PET_LOCAL_ADDR=${addr:-$(hostname)}
    echo "infogan.sh: node $SLURM_NODEID of $NNODES ($SLURMD_NODENAME, $PET_LOCAL_ADDR): machine_rank $SLURM_NODEID, rendezvous $MAIN_ADDR:$MAIN_PORT"
    n=$1; shift  # $1: how many of the arguments are launcher flags; the rest: train.py ...
    exec "$ACCELERATE" launch "${@:1:n}" --machine_rank "$SLURM_NODEID" \
      --main_process_ip "$MAIN_ADDR" --main_process_port "$MAIN_PORT" \
      --rdzv_backend "$RDZV_BACKEND" --rdzv_conf "is_host=$is_host" "${@:n+1}"
  ' infogan-node "${#LAUNCH_FLAGS[@]}" "${LAUNCH_FLAGS[@]}" "${TRAIN_ARGS[@]}" &
SRUN_PID=$!

# `wait` returns early (status > 128) whenever a trapped signal arrives; keep waiting
# until srun itself has ended, then collect its status (bash remembers it).
while kill -0 "$SRUN_PID" 2>/dev/null; do wait "$SRUN_PID"; done
wait "$SRUN_PID"; rc=$?
trap '' USR1 TERM

if [ -z "$STOP_SIGNAL" ]; then
  if [ "$rc" -eq 0 ]; then
    log "training ended (exit 0: finished, or stopped by a STOP file); not requeued"
  elif [ -f "$OUTAGE_FILE" ]; then  # an outage, not a failure: try again later
    outages=$(( ${SLURM_RESTART_COUNT:-0} ))
    log "training stopped for an outage: $(head -c 2000 "$OUTAGE_FILE")"
    if [ "$outages" -ge "$MAX_OUTAGE_REQUEUES" ]; then
      log "error: $outages requeues already (MAX_OUTAGE_REQUEUES=$MAX_OUTAGE_REQUEUES); not requeued"
      exit 75
    fi
    rm -f "$OUTAGE_FILE"
    log "requeueing job $SLURM_JOB_ID after the outage (requeue $(( outages + 1 )) of at most $MAX_OUTAGE_REQUEUES); it resumes from the newest checkpoint"
    scontrol requeue "$SLURM_JOB_ID" || { log "error: scontrol requeue $SLURM_JOB_ID failed"; exit 75; }
    exit 0
  else
    log "training failed (exit $rc); not requeued"
  fi
  exit "$rc"
fi
if [ "$rc" -ne 0 ]; then
  log "training failed while stopping (exit $rc) after SIG$STOP_SIGNAL; not requeued"
  exit "$rc"
fi
if [ -e "$STOP_FILE" ]; then  # training ended before it saw STOP: nothing left to do
  rm -f "$STOP_FILE"
  log "training finished before it saw the stop request; not requeued"
  exit 0
fi
log "training stopped and saved a checkpoint after SIG$STOP_SIGNAL; requeueing job $SLURM_JOB_ID"
scontrol requeue "$SLURM_JOB_ID" || { log "error: scontrol requeue $SLURM_JOB_ID failed"; exit 1; }
exit 0
