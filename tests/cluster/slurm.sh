#!/usr/bin/env bash
# A real two-node SLURM on this host for the cluster tests (`make test-cluster`), from the OS packages.
#   tests/cluster/slurm.sh up     install slurm-wlm + munge if absent (Debian, as root), write a slurm.conf with two
#                                 nodes, node1 and node2 (Debian's SLURM runs several slurmd on one host: one
#                                 NodeName each, its own port, 127.0.0.1; CPUs from nproc each, no GRES), start
#                                 munged, slurmctld and one slurmd per node; wait for both nodes
#   tests/cluster/slurm.sh down   stop only what `up` started (pids in $STATE/started)
# On a workstation: run it as root (or in a container), then `make test-cluster` does the same.
set -euo pipefail
STATE=${PICO_SLURM_STATE:-/var/spool/pico-slurm}
CONF=/etc/slurm/slurm.conf
NODES="node1 node2"

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
    mkdir -p /etc/slurm "$STATE/ctld" /var/log/slurm
    for node in $NODES; do mkdir -p "$STATE/d-$node"; done
    for node in $NODES; do grep -qw "$node" /etc/hosts || echo "127.0.0.1 $node" >>/etc/hosts; done
    cat >"$CONF" <<CONF
# written by tests/cluster/slurm.sh: two nodes on this host (multiple slurmd), CPU only
ClusterName=pico
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d-%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=30
SchedulerParameters=defer_batch=0
NodeName=node1 NodeHostname=$host NodeAddr=127.0.0.1 Port=17001 CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=node2 NodeHostname=$host NodeAddr=127.0.0.1 Port=17002 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
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
        for node in $NODES; do slurmd -N "$node"; done
        echo slurmd >>"$STATE/started"
    fi
    for _ in $(seq 60); do
        if [ "$(sinfo -h -N -o %t 2>/dev/null | grep -cE '^(idle|mix|alloc)')" -eq 2 ]; then
            sinfo -N
            return 0
        fi
        sleep 1
    done
    echo "slurm.sh: the two nodes did not come up; see /var/log/slurm/" >&2
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
