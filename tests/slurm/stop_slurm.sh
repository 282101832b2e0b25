#!/usr/bin/env bash
# Stop the test cluster started by tests/slurm/start_slurm.sh: cancel its jobs, then end exactly
# the daemons whose PIDs that script recorded (nothing found by name). Safe to run twice.
set -uo pipefail

DIR=${SLURM_TEST_DIR:-/tmp/layercrit-slurm}
PIDS=$DIR/pids
[ -f "$PIDS" ] || exit 0
read -r MUNGE_PID CTLD_PID SLURMD_PID <"$PIDS" || true

# a PID that exists and is not a zombie (an exited daemon nobody reaped yet)
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# Jobs still queued or running on this (test) cluster would leave slurmstepd processes behind.
if alive "${CTLD_PID:-}"; then
    scancel --full --state=PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING 2>/dev/null \
        || scancel -u "$(id -un)" 2>/dev/null || true
    for _ in $(seq 50); do
        [ -z "$(squeue -h -t PD,R,CG,CF,S -o %i 2>/dev/null)" ] && break
        sleep 0.2
    done
fi

stop() {
    local pid=$1
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do
        alive "$pid" || return 0
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# slurmd first, then the controller, then munged (which both use).
stop "${SLURMD_PID:-}"
stop "${CTLD_PID:-}"
stop "${MUNGE_PID:-}"
rm -f "$PIDS"
