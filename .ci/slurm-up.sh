#!/usr/bin/env bash
# Start a real one-node SLURM cluster on this machine (munged, slurmctld, slurmd) for the workflow's
# SLURM test. Runs as root without systemd. State, logs and pid files go under $OUTCROP_SLURM_DIR
# (default /tmp/outcrop-slurm); .ci/slurm-down.sh stops the daemons by those pid files.
#
# Usage: .ci/slurm-up.sh            then: export SLURM_CONF=$OUTCROP_SLURM_DIR/slurm.conf
set -euo pipefail

DIR="${OUTCROP_SLURM_DIR:-/tmp/outcrop-slurm}"
PARTITION="${OUTCROP_SLURM_PARTITION:-debug}"
NODE="$(hostname)"

if [ "$(id -u)" != 0 ]; then
    echo "slurm-up: must run as root (munged and slurmd are started here)" >&2
    exit 1
fi

# --- packages ---
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurm-wlm munge
fi

mkdir -p "$DIR"/{state,spool,log,run}

# --- munge: a key and its directories, owned by the munge user ---
mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
chmod 700 /etc/munge
chmod 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    # --pid-file is not in every munged release; the default pid file is read below instead.
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 1 30); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.5
    done
    # Only a munged started here is stopped by slurm-down.sh.
    if [ -s /run/munge/munged.pid ]; then
        cp /run/munge/munged.pid "$DIR/run/munged.pid"
    fi
fi
munge -n | unmunge | grep -q Success || { echo "slurm-up: munge does not work" >&2; exit 1; }

# --- slurm.conf: this node, all its CPUs, a little less memory than it has ---
# getconf, not nproc: nproc follows OMP_NUM_THREADS, which a caller may have set for its own threads.
CPUS="$(getconf _NPROCESSORS_ONLN)"
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)"
REAL_MB=$(( MEM_MB - MEM_MB / 10 - 512 ))
cat > "$DIR/slurm.conf" <<EOF
# One-node test cluster written by .ci/slurm-up.sh.
ClusterName=outcrop-ci
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
SchedulerType=sched/backfill
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
NodeName=$NODE CPUs=$CPUS RealMemory=$REAL_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$DIR/slurm.conf"
# Client commands (sbatch, squeue, sinfo) read /etc/slurm/slurm.conf unless SLURM_CONF says
# otherwise; point it at ours when the machine has none of its own.
if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
    mkdir -p /etc/slurm
    ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf
fi

# --- daemons: controller first, then the node ---
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running "$DIR/run/slurmctld.pid" || /usr/sbin/slurmctld -f "$SLURM_CONF"
for _ in $(seq 1 60); do
    scontrol ping 2>/dev/null | grep -q UP && break
    sleep 0.5
done
running "$DIR/run/slurmd.pid" || /usr/sbin/slurmd -f "$SLURM_CONF"

# --- wait until the node takes jobs ---
for _ in $(seq 1 120); do
    state="$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -n1 || true)"
    case "$state" in
        idle|mix|alloc) break ;;
        drain*|down*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
done
state="$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -n1 || true)"
if [ "$state" != idle ] && [ "$state" != mix ] && [ "$state" != alloc ]; then
    echo "slurm-up: node $NODE is '$state', not idle; logs in $DIR/log" >&2
    exit 1
fi
echo "slurm-up: partition $PARTITION, node $NODE ($CPUS CPUs, ${REAL_MB} MB) is $state; SLURM_CONF=$SLURM_CONF"
