#!/usr/bin/env bash
# A one-machine Slurm cluster for trying exported sbatch scripts (and for CI).
#
#   scripts/slurm-local.sh start    install slurm + munge if missing, write slurm.conf, start the daemons
#   scripts/slurm-local.sh status   show the daemons this script started and `sinfo`
#   scripts/slurm-local.sh stop     stop the daemons this script started (by their pid files)
#
# Needs root (it writes /etc/slurm/slurm.conf and starts munged, slurmctld and slurmd directly,
# without systemd). The node is this machine under its short hostname, with all its CPUs and its
# memory less 1 GiB, in one partition `debug`. No cgroups: proctrack/linuxproc and task/none, so it
# also runs in containers. No accounting: `sacct` answers nothing; use `sbatch --wait` or
# `scontrol show job ID` right after a job ends. A requeued job may start again after 10 s
# (AuthInfo=cred_expire=10; Slurm's default holds it for 120 s), and the scheduler looks at pending
# jobs every 2 s (sched_interval, bf_interval; by default 60 and 30 s).
#
# Environment: SLURM_LOCAL_DIR (state, logs and pid files; default /tmp/kd-slurm-local),
# SLURM_LOCAL_FORCE=1 to replace a slurm.conf this script did not write.
set -euo pipefail

STATE=${SLURM_LOCAL_DIR:-/tmp/kd-slurm-local}
CONF=/etc/slurm/slurm.conf
MARK="# written by kd-planner scripts/slurm-local.sh"
MUNGE_PID=/run/munge/munged.pid

die() { echo "slurm-local: $*" >&2; exit 1; }
say() { echo "slurm-local: $*" >&2; }

install_missing() {
    local need=()
    command -v munged >/dev/null || need+=(munge)
    command -v slurmctld >/dev/null || need+=(slurmctld)
    command -v slurmd >/dev/null || need+=(slurmd)
    command -v sbatch >/dev/null || need+=(slurm-client)
    command -v shellcheck >/dev/null || need+=(shellcheck)
    if ((${#need[@]})); then
        say "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
}

start_munge() {
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge /var/lib/munge /var/log/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged already running"
        return
    fi
    # The pid file says whether this script started munged (stop only kills what it started).
    runuser -u munge -- munged --pid-file="$MUNGE_PID"
    cp "$MUNGE_PID" "$STATE/munged.pid"
    munge -n </dev/null | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(free -m | awk '/^Mem:/ {print $2}')
    mem=$((mem > 2048 ? mem - 1024 : mem / 2))
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF" && [[ ${SLURM_LOCAL_FORCE:-0} != 1 ]]; then
        die "$CONF exists and was not written by this script; set SLURM_LOCAL_FORCE=1 to replace it"
    fi
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
    cat >"$CONF" <<EOF
$MARK: a one-machine cluster.
ClusterName=kdlocal
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    say "wrote $CONF (node $host, $cpus CPUs, $mem MiB)"
}

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    [[ $(id -u) == 0 ]] || die "start needs root"
    mkdir -p "$STATE"
    install_missing
    start_munge
    alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid" && { say "already running"; status; return; }
    write_conf
    alive "$STATE/slurmctld.pid" || slurmctld -i  # -i: ignore state left by an earlier run
    alive "$STATE/slurmd.pid" || slurmd
    local host i
    host=$(hostname -s)
    for i in $(seq 60); do
        if sinfo -h -n "$host" -o %T 2>/dev/null | grep -qx idle; then
            say "ready: node $host idle in partition debug (${i}s)"
            return
        fi
        sleep 1
    done
    sinfo >&2 || true
    tail -n 20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
    die "node $host did not become idle within 60 s (logs above, in $STATE)"
}

stop_one() {  # name, pid file: kill the daemon the pid file names, wait for it to go
    local name=$1 pidf=$2 pid i
    alive "$pidf" || { rm -f "$pidf"; return; }
    pid=$(cat "$pidf")
    kill "$pid"
    for i in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$pidf"
    say "stopped $name ($pid)"
}

stop() {
    stop_one slurmd "$STATE/slurmd.pid"
    stop_one slurmctld "$STATE/slurmctld.pid"
    stop_one munged "$STATE/munged.pid"
}

status() {
    local name
    for name in munged slurmctld slurmd; do
        if alive "$STATE/$name.pid"; then echo "$name: running ($(cat "$STATE/$name.pid"))"; else echo "$name: not started here"; fi
    done
    sinfo 2>/dev/null || echo "sinfo: no answer"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
