#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, from Debian's packages (Slurm 22.05, munge), for the
# tests marked `slurm` (docs/long-runs.md, "A one-node cluster"). Run as root; no systemd needed.
#
#   bash benchmarks/slurm/cluster.sh up       # install if missing, write the config, start
#   bash benchmarks/slurm/cluster.sh status   # sinfo and squeue; exit 1 when it is not up
#   bash benchmarks/slurm/cluster.sh down     # cancel every job, stop the daemons
#
# `up` is idempotent: run twice, the second call finds the cluster up with the same config and
# does nothing. The node gets this machine's CPU count and memory; its one partition is `debug`.
# `up` also starts slurmdbd on a local MariaDB, so that `sacct` answers: submitit polls it for
# each job's state. SK_SLURM_ACCOUNTING=0 leaves accounting out.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
PARTITION=debug
ACCOUNTING="${SK_SLURM_ACCOUNTING:-1}"

say() { echo "cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons); got uid $(id -u)"
}

install_packages() {
  local packages=(slurmctld slurmd slurm-client munge)
  [ "$ACCOUNTING" = 1 ] && packages+=(slurmdbd mariadb-server)
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
}

write_config() {  # the config as it should be, on stdout
  local host cpus mem
  host="$(hostname -s)"
  cpus="$(nproc)"
  mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
  cat <<EOF
# Written by benchmarks/slurm/cluster.sh: a one-node cluster for stabilitykit's slurm tests.
ClusterName=stabilitykit
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again once its old credentials expired: 10 s here, not 120.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# No cgroups without systemd: processes are tracked by their parent, and not bound to cores.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
# Quick turnaround for tests: a job killed at its limit gets 5 s between SIGTERM and SIGKILL.
KillWait=5
MinJobAge=300
InactiveLimit=0
MpiDefault=none
JobAcctGatherType=jobacct_gather/linux
$(if [ "$ACCOUNTING" = 1 ]; then echo "AccountingStorageType=accounting_storage/slurmdbd"; echo "AccountingStorageHost=localhost"; else echo "AccountingStorageType=accounting_storage/none"; fi)
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

running() { pgrep -x "$1" >/dev/null; }

start_munge() {
  running munged && return 0
  [ -s /etc/munge/munge.key ] || { mungekey --create --force >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  munge -n </dev/null | unmunge >/dev/null || die "munge does not answer; see /var/log/munge/munged.log"
}

start_accounting() {
  [ "$ACCOUNTING" = 1 ] || return 0
  if ! running mariadbd && ! running mysqld; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    (mysqld_safe >/dev/null 2>&1 &)
    for _ in $(seq 60); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  cat >"$CONF_DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$CONF_DIR/slurmdbd.conf"
  running slurmdbd || slurmdbd
  for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
  sacctmgr -i add cluster stabilitykit >/dev/null 2>&1 || true
}

wait_idle() {
  local host deadline=$((SECONDS + 60)) state=""
  host="$(hostname -s)"
  while [ $SECONDS -lt $deadline ]; do
    state="$(timeout 5 sinfo -h -n "$host" -o %t 2>/dev/null || true)"
    case "$state" in
      idle|mix|alloc) return 0 ;;
      down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  die "the node did not become idle within 60 s (state: ${state:-none}); see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log"
}

up() {
  need_root
  local t0=$SECONDS
  install_packages
  mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR"
  local want
  want="$(write_config)"
  if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$want" ] && running slurmctld && running slurmd \
    && { [ "$ACCOUNTING" != 1 ] || running slurmdbd; } && scontrol ping >/dev/null 2>&1; then
    wait_idle
    say "already up ($(nproc) CPUs, partition $PARTITION)"
    return 0
  fi
  stop_daemons slurmd slurmctld slurmdbd
  printf '%s\n' "$want" >"$CONF"
  start_munge || die "munged did not start; see /var/log/munge/munged.log"
  start_accounting
  slurmctld || die "slurmctld did not start; see $LOG_DIR/slurmctld.log"
  slurmd || die "slurmd did not start; see $LOG_DIR/slurmd.log"
  wait_idle
  say "up in $((SECONDS - t0)) s: node $(hostname -s), $(nproc) CPUs, partition $PARTITION"
}

stop_daemons() {
  for d in "$@"; do
    if running "$d"; then
      pkill -x "$d" || true
      for _ in $(seq 40); do running "$d" || break; sleep 0.25; done
    fi
  done
}

down() {
  need_root
  if running slurmctld; then scancel --full --quiet --user=root 2>/dev/null || true; fi
  stop_daemons slurmd slurmctld slurmdbd munged
  if running mariadbd; then mysqladmin shutdown 2>/dev/null || true; fi
  say "down"
}

status() {
  scontrol ping >/dev/null 2>&1 || { say "not up (scontrol ping fails)"; exit 1; }
  sinfo
  squeue
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  config) write_config ;;
  *) die "usage: $0 up|down|status|config (got '${1:-}')" ;;
esac
