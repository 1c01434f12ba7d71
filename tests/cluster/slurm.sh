#!/usr/bin/env bash
# A real one-node SLURM on this host for the cluster tests (`make test-cluster`), from the OS packages.
#   tests/cluster/slurm.sh up     install slurm-wlm + munge if absent (Debian, as root), write a one-node slurm.conf
#                                 (CPUs from nproc, no GRES), start munged, slurmctld and slurmd; wait for the node
#   tests/cluster/slurm.sh down   stop only what `up` started (pids in $STATE/started)
# On a workstation: run it as root (or in a container), then `make test-cluster` does the same.
set -euo pipefail
STATE=${PICO_SLURM_STATE:-/var/spool/pico-slurm}
CONF=/etc/slurm/slurm.conf

install_packages() {
    command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    command -v apt-get >/dev/null || { echo "slurm.sh: no sbatch and no apt-get: install SLURM and munge" >&2; exit 2; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
    local host cpus mem
    if [ -f "$CONF" ] && ! head -1 "$CONF" | grep -q "tests/cluster/slurm.sh"; then
        echo "slurm.sh: $CONF exists and is not ours; start your SLURM yourself, then run: make test-cluster" >&2
        exit 2
    fi
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" /var/log/slurm
    cat >"$CONF" <<CONF
# written by tests/cluster/slurm.sh: one node, this host, CPU only
ClusterName=pico
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MinJobAge=600
KillWait=30
SchedulerParameters=defer_batch=0
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

up() {
    install_packages
    mkdir -p "$STATE"
    : >"$STATE/started"
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        [ -s /etc/munge/munge.key ] || mungekey --create --force 2>/dev/null || \
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
        chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
        chmod 0400 /etc/munge/munge.key
        munged --force
        echo munged >>"$STATE/started"
    fi
    if ! pgrep -x slurmctld >/dev/null; then
        write_conf
        slurmctld -c  # a cold start: no jobs left from an earlier run of these tests
        echo slurmctld >>"$STATE/started"
    fi
    if ! pgrep -x slurmd >/dev/null; then
        slurmd
        echo slurmd >>"$STATE/started"
    fi
    for _ in $(seq 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            sinfo
            return 0
        fi
        sleep 1
    done
    echo "slurm.sh: the node did not come up; see /var/log/slurm/" >&2
    exit 1
}

down() {
    [ -f "$STATE/started" ] || return 0
    for daemon in $(tac "$STATE/started"); do
        pkill -x "$daemon" || true
    done
    rm -f "$STATE/started"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: tests/cluster/slurm.sh up|down" >&2; exit 2 ;;
esac
