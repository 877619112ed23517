#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by .ci/slurm-up.sh, by the pids in its pid files.
set -uo pipefail

DIR="${OUTCROP_SLURM_DIR:-/tmp/outcrop-slurm}"

stop() {  # stop NAME PIDFILE: TERM, wait up to 10 s, then KILL
    local name="$1" pidfile="$2" pid
    [ -s "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        echo "slurm-down: stopped $name ($pid)"
    fi
    rm -f "$pidfile"
}

stop slurmd "$DIR/run/slurmd.pid"
stop slurmctld "$DIR/run/slurmctld.pid"
stop munged "$DIR/run/munged.pid"
exit 0
