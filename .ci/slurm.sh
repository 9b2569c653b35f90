#!/usr/bin/env bash
# The one-node Slurm that DSS tests submit pilots to: munged + slurmctld + slurmd as node
# `localhost` on 127.0.0.1, everything (config, state, logs, job output) under one base dir.
#
#   bash .ci/slurm.sh start    # install if needed, start (or find running), print `export SLURM_CONF=...`
#   bash .ci/slurm.sh stop     # stop the daemons started from this base dir
#   bash .ci/slurm.sh status   # exit 0 when the node answers idle/mixed/allocated
#   eval "$(bash .ci/slurm.sh start | grep ^export)"
#
# Settings (environment): DSS_SLURM_BASE (default /tmp/dss-slurm), DSS_SLURM_CTLD_PORT
# (default 16817; slurmd uses the next port). No slurmdbd: finished jobs are read with
# `scontrol show job` (MinJobAge keeps them 10 min) and the jobcomp/filetxt log.
# Must run as root (no systemd here; the daemons run as root, as SlurmUser).
set -euo pipefail

BASE=${DSS_SLURM_BASE:-/tmp/dss-slurm}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONF=$BASE/etc/slurm.conf
export SLURM_CONF=$CONF

log() { echo "slurm.sh: $*" >&2; }

# A zombie counts as gone: in containers PID 1 may reap orphans only every few seconds.
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
pid_alive() { [ -f "$1" ] && alive "$(cat "$1")"; }

stop_pidfile() {
  local f=$1 pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then log "WARN: pid $pid ($f) still alive after 15 s; sending SIGKILL"; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$f"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_up() { sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }

install_packages() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v gcc >/dev/null && return 0
  log "installing slurm-wlm, munge, gcc with apt-get"
  apt-get update -q
  # libc6-dev: gcc without recommends has no headers to build the bind shim
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    slurm-wlm slurmctld slurmd slurm-client munge gcc libc6-dev >"$BASE/log/apt.log" 2>&1 \
    || { tail -20 "$BASE/log/apt.log" >&2; exit 1; }
}

write_config() {
  local ctld_port=$1 slurmd_port=$2 cpus mem_mb
  cpus=$(nproc)
  # Declare a little less memory than the machine has: slurmd drains a node whose real
  # memory is below RealMemory.
  mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  cat >"$CONF" <<EOF
# Written by .ci/slurm.sh: single-node Slurm for DSS tests, loopback only.
ClusterName=dss
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$BASE/munge/munge.socket.2
CommunicationParameters=NoInAddrAny
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/slurmd.%n
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.txt
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
# Finished jobs stay visible to scontrol for 10 min: the portal reads their exit code there.
MinJobAge=600
KillWait=5
SchedulerParameters=sched_interval=2
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  local t0=$SECONDS ctld_port slurmd_port i
  mkdir -p "$BASE"/{etc,munge,munge-key,state,spool,log,run,jobs}
  if [ -f "$CONF" ] && pid_alive "$BASE/run/slurmctld.pid" && pid_alive "$BASE/run/slurmd.pid" && node_up; then
    log "already running"
    echo "export SLURM_CONF=$CONF"
    return 0
  fi
  install_packages
  # Half-started leftovers (a crashed slurmd, a stale pid file) would confuse the checks below.
  stop_daemons

  ctld_port=${DSS_SLURM_CTLD_PORT:-16817}
  if [ -z "${DSS_SLURM_CTLD_PORT:-}" ]; then
    # Someone else (another base dir, another service) may hold the default pair: take the next free one.
    for i in $(seq 0 2 40); do
      if ! port_busy $((16817 + i)) && ! port_busy $((16818 + i)); then ctld_port=$((16817 + i)); break; fi
    done
  fi
  slurmd_port=$((ctld_port + 1))
  if port_busy "$ctld_port" || port_busy "$slurmd_port"; then
    log "ports $ctld_port/$slurmd_port are in use"; exit 1
  fi
  write_config "$ctld_port" "$slurmd_port"

  chmod 755 "$BASE/munge"      # munged: clients need o+x on the socket dir
  chmod 700 "$BASE/munge-key"
  [ -f "$BASE/munge-key/munge.key" ] || mungekey -c -k "$BASE/munge-key/munge.key"
  if [ ! -f "$BASE/bindlo.so" ] || [ "$HERE/bindlo.c" -nt "$BASE/bindlo.so" ]; then
    gcc -shared -fPIC -O2 -o "$BASE/bindlo.so" "$HERE/bindlo.c" -ldl
  fi
  munged --socket="$BASE/munge/munge.socket.2" --key-file="$BASE/munge-key/munge.key" \
    --log-file="$BASE/log/munged.log" --pid-file="$BASE/run/munged.pid" --seed-file="$BASE/munge-key/munged.seed"

  cd "$BASE/run"
  # slurmctld 22.05 listens on 0.0.0.0 despite NoInAddrAny: the shim keeps it on loopback.
  # -c: cold start, forget jobs of a previous run.
  LD_PRELOAD=$BASE/bindlo.so slurmctld -f "$CONF" -c
  slurmd -f "$CONF" -N localhost
  for i in $(seq 1 300); do
    if node_up; then
      log "up in $((SECONDS - t0)) s (ports $ctld_port/$slurmd_port, base $BASE)"
      echo "export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 0.2
  done
  log "slurm did not come up; last log lines:"
  tail -n 20 "$BASE"/log/*.log >&2 || true
  exit 1
}

stop_daemons() {
  local p
  for p in slurmd slurmctld munged; do stop_pidfile "$BASE/run/$p.pid"; done
}

case "${1:-}" in
  start) start ;;
  stop) stop_daemons; log "stopped" ;;
  status) if node_up; then sinfo; else log "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
