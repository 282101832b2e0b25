#!/usr/bin/env bash
# Start a real single-node Slurm cluster on this machine, for tests of the Slurm profile.
#
#   tests/slurm/start_slurm.sh        # prints the partition name on success
#   tests/slurm/stop_slurm.sh         # stops exactly the daemons this script started
#
# What it does (see the notes on a single-node Slurm this was built from):
#   - installs slurmctld, slurmd, slurm-client and munge with apt-get if they are missing
#     (only as root and only where apt-get exists);
#   - writes /etc/slurm/slurm.conf and /etc/slurm/gres.conf (the jobstep plugin strips SLURM_CONF
#     inside jobs, so the configuration must be at the default path) with one node, one partition,
#     no accounting, MinJobAge=600 (so `squeue`/`scontrol show job` still see finished jobs) and
#     two fake GPUs (symlinks to /dev/null);
#   - starts munged, slurmctld and slurmd in the foreground mode (-F/-D) in the background, waits
#     until the node is idle and writes the three PIDs to $SLURM_TEST_DIR/pids.
# Running it again while that cluster is up does nothing. It refuses to overwrite a slurm.conf it
# did not write (a real cluster's).
#
# Exit status: 0 ready; 3 not possible here (not root, no apt-get, packages not installable, a
# foreign slurm.conf) — callers may skip; anything else: a real failure (see the logs it names).
#
# Environment: SLURM_TEST_DIR (state, spool, logs, fake devices; default /tmp/layercrit-slurm),
#              SLURM_TEST_PARTITION (default: layercrit).
set -euo pipefail

DIR=${SLURM_TEST_DIR:-/tmp/layercrit-slurm}
PARTITION=${SLURM_TEST_PARTITION:-layercrit}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARKER="# written by layercrit tests/slurm/start_slurm.sh"
PIDS=$DIR/pids

unavailable() { echo "start_slurm: $*" >&2; exit 3; }
fail() { echo "start_slurm: $*" >&2; exit 1; }

# a PID that exists and is not a zombie (an exited daemon nobody reaped yet)
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

node_state() { sinfo -h -N -o %T 2>/dev/null | head -n1 || true; }

# Already running (our daemons alive and the node usable)? Nothing to do.
if [ -f "$PIDS" ]; then
    read -r MUNGE_PID CTLD_PID SLURMD_PID <"$PIDS" || true
    if alive "${CTLD_PID:-}" && alive "${SLURMD_PID:-}" && [[ "$(node_state)" =~ ^(idle|mixed|allocated)$ ]]; then
        echo "start_slurm: cluster already running (PIDs in $PIDS)" >&2
        echo "$PARTITION"
        exit 0
    fi
    # stale: stop whatever of ours is left, then start afresh
    "$(dirname "$0")/stop_slurm.sh" >/dev/null 2>&1 || true
fi

[ "$(id -u)" = 0 ] || unavailable "needs root (to run slurmd and write $CONF)"

# --- packages -------------------------------------------------------------------------------------
need_install=0
for cmd in slurmctld slurmd sbatch munged; do
    command -v "$cmd" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin
    command -v "$cmd" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" = 1 ]; then
    command -v apt-get >/dev/null 2>&1 || unavailable "Slurm is not installed and apt-get is not available"
    echo "start_slurm: installing slurmctld slurmd slurm-client munge" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge; } >&2 \
        || unavailable "apt-get could not install slurmctld slurmd slurm-client munge"
fi
command -v setpriv >/dev/null 2>&1 || unavailable "setpriv (util-linux) is missing"
id munge >/dev/null 2>&1 || unavailable "no munge user (munge package broken?)"

# --- configuration -------------------------------------------------------------------------------
if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    unavailable "$CONF exists and was not written by this script; refusing to replace a real cluster's configuration"
fi

HOST=$(hostname -s)
NODE_LINE=$(slurmd -C | head -n1)   # NodeName=<host> CPUs=... RealMemory=...
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
[ -n "$CPUS" ] && [ -n "$MEM" ] || fail "cannot read CPUs/RealMemory from 'slurmd -C': $NODE_LINE"

rm -rf "$DIR/state" "$DIR/spool"
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/dev" "$CONF_DIR"
# Fake GPUs: GRES needs device files; character devices work, so point them at /dev/null.
ln -sfn /dev/null "$DIR/dev/gpu0"
ln -sfn /dev/null "$DIR/dev/gpu1"

cat >"$CONF" <<EOF
$MARKER
# A one-node test cluster; stop it with tests/slurm/stop_slurm.sh.
ClusterName=layercrit
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
GresTypes=gpu
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol for 10 minutes: the executor's squeue status
# checks need MinJobAge >= 3 x --slurm-init-seconds-before-status-checks.
MinJobAge=600
KillWait=5
InactiveLimit=0
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

cat >"$CONF_DIR/gres.conf" <<EOF
$MARKER
AutoDetect=off
NodeName=$HOST Name=gpu File=$DIR/dev/gpu[0-1]
EOF

# --- daemons -------------------------------------------------------------------------------------
: >"$PIDS.partial"
MUNGE_PID=""
if munge -n >/dev/null 2>&1; then
    echo "start_slurm: a munged is up already; using it" >&2
else
    mkdir -p /run/munge
    chown munge:munge /run/munge
    chmod 0755 /run/munge
    # setpriv execs munged, so $! is munged's own PID.
    setpriv --reuid=munge --regid=munge --init-groups munged -F >"$DIR/log/munged.out" 2>&1 &
    MUNGE_PID=$!
    for _ in $(seq 100); do
        munge -n >/dev/null 2>&1 && break
        alive "$MUNGE_PID" || fail "munged exited; see $DIR/log/munged.out and /var/log/munge/munged.log"
        sleep 0.1
    done
    munge -n >/dev/null 2>&1 || fail "munged did not come up; see /var/log/munge/munged.log"
fi

slurmctld -D -i >"$DIR/log/slurmctld.out" 2>&1 &
CTLD_PID=$!
slurmd -D >"$DIR/log/slurmd.out" 2>&1 &
SLURMD_PID=$!
echo "$MUNGE_PID $CTLD_PID $SLURMD_PID" >"$PIDS"
rm -f "$PIDS.partial"

for _ in $(seq 300); do
    state=$(node_state)
    [ "$state" = idle ] && break
    alive "$CTLD_PID" || fail "slurmctld exited; see $DIR/log/slurmctld.log and $DIR/log/slurmctld.out"
    alive "$SLURMD_PID" || fail "slurmd exited; see $DIR/log/slurmd.log and $DIR/log/slurmd.out"
    sleep 0.2
done
[ "$(node_state)" = idle ] || fail "node not idle after 60 s (state: '$(node_state)'); see $DIR/log/"
echo "$PARTITION"
