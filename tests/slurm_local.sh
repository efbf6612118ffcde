#!/usr/bin/env bash
# Bring up a real single-node Slurm cluster on this machine, for the tests of dmpf's
# `--launcher slurm` (they submit real jobs through submitit). Idempotent and quiet:
#
#   bash tests/slurm_local.sh          # install if needed, configure, start, wait until ready
#   bash tests/slurm_local.sh --stop   # cancel every job, stop every daemon this script starts
#
# On success it prints one line, `slurm_local: ready (partition debug, N CPUs)`; on failure it
# exits non-zero with one line on stderr saying why (details in /var/log/slurm-local/).
#
# What it does, as root on Debian (bookworm; no systemd needed, daemons are started directly):
#  * installs slurmctld, slurmd, slurm-client, slurmdbd, munge and the MariaDB server/client cores
#    (apt-get --no-install-recommends: 17 packages, 12 MB download, 76 MB on disk, ~7 s) when
#    any of them is missing;
#  * writes /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf for one node named after this
#    host (all CPUs from nproc, partition `debug`, no cgroups: proctrack/linuxproc, task/none).
#    A config file that this script did not write is never overwritten: it stops instead;
#  * starts munged, a private MariaDB (datadir /var/spool/slurm-local/db, 127.0.0.1:6820,
#    independent of any system MySQL), slurmdbd, slurmctld and slurmd if they are not running,
#    restarting the Slurm daemons when the generated config changed; slurmctld starts with no
#    jobs (-c), so jobs of an earlier start never come back to hold the node's CPUs;
#  * waits (at most 30 s) until the node is idle (resuming it once if an earlier run left it
#    drained or down).
#
# State: /var/spool/slurm-local (Slurm state, MariaDB data), logs: /var/log/slurm-local,
# pid files: /run/slurm-local. A cold start (packages installed) takes ~2 s, a re-run ~0.4 s.
#
# Why slurmdbd + MariaDB: submitit learns a job's state from `sacct`, which needs accounting
# storage. Without it a job that ends without a result (scancel, time limit, crash) leaves
# job.result() waiting forever; with it submitit raises UncompletedJobError.
set -euo pipefail

ME=slurm_local
MARK="# Written by dmpf tests/slurm_local.sh; edit that script, not this file."
OLD_MARK="# Written by dmpf scripts/slurm_local.sh; edit that script, not this file."  # before it moved
ETC=/etc/slurm
CONF_FILE=$ETC/slurm.conf
DBD_CONF=$ETC/slurmdbd.conf
SPOOL=/var/spool/slurm-local
LOGS=/var/log/slurm-local
RUN=/run/slurm-local
DB_DIR=$SPOOL/db
DB_CNF=$SPOOL/mariadb.cnf
DB_PORT=6820
DB_PASS=slurm_local   # the accounting DB listens on 127.0.0.1 only; it holds nothing secret
WAIT_S=30
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server-core mariadb-client-core)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
unset SLURM_CONF   # the Slurm commands below must read /etc/slurm/slurm.conf

die() { echo "$ME: $*" >&2; exit 1; }

action=start
for arg in "$@"; do
  case "$arg" in
    --stop) action=stop ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "$ME: unknown option '$arg' (expected --stop)" >&2; exit 2 ;;
  esac
done
[[ $EUID -eq 0 ]] || die "must run as root (it installs packages and starts system daemons)"

# is_running PID NAME: PID is a live process (not a zombie awaiting its reaper) named NAME*.
is_running() {
  local comm state
  comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
  [[ $comm == "$2"* ]] || return 1
  state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 1
  [[ $state != Z ]]
}

# alive NAME PIDFILE: the process in PIDFILE is running and is NAME.
alive() {
  local pid
  [[ -r $2 ]] || return 1
  pid=$(<"$2") || return 1
  [[ $pid =~ ^[0-9]+$ ]] && is_running "$pid" "$1"
}

# stop_daemon NAME PIDFILE: SIGTERM, wait up to 20 s for the process to be gone, then SIGKILL.
# (Daemons remove their pid file before they have exited, so wait on the process itself.)
stop_daemon() {
  alive "$1" "$2" || return 0
  local pid i
  pid=$(<"$2")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    is_running "$pid" "$1" || break
    sleep 0.1
  done
  if ((i == 200)); then
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$2"
}

# wait_for SECONDS COMMAND...: run COMMAND every 0.2 s until it succeeds.
wait_for() {
  local n=$(($1 * 5)) i
  shift
  for ((i = 0; i < n; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

MUNGE_PID=/run/munge/munged.pid
DB_PID=$RUN/mariadb.pid
DBD_PID=$RUN/slurmdbd.pid
CTLD_PID=$RUN/slurmctld.pid
SLURMD_PID=$RUN/slurmd.pid

# drop_jobs: cancel every job and wait (up to 20 s) for the queue to empty. A job left running when the daemons
# stop outlives them (its slurmstepd) and comes back with the next start, holding CPUs a new job then waits for.
drop_jobs() {
  alive slurmctld "$CTLD_PID" || return 0
  squeue -h -o %i 2>/dev/null | xargs -r scancel >/dev/null 2>&1 || true
  for ((i = 0; i < 100; i++)); do
    [[ -z $(squeue -h -o %i 2>/dev/null) ]] && return 0
    sleep 0.2
  done
}

# kill_steps: job steps left behind (a job the controller could not cancel), with everything they started.
kill_tree() {
  local child
  for child in $(pgrep -P "$1" || true); do kill_tree "$child"; done
  kill -KILL "$1" 2>/dev/null || true
}
kill_steps() {
  local step
  for step in $(pgrep -x slurmstepd || true); do kill_tree "$step"; done
}

stop_slurm() {
  drop_jobs
  stop_daemon slurmd "$SLURMD_PID"
  kill_steps
  stop_daemon slurmctld "$CTLD_PID"
  stop_daemon slurmdbd "$DBD_PID"
}

if [[ $action == stop ]]; then
  stop_slurm
  stop_daemon mariadbd "$DB_PID"
  stop_daemon munged "$MUNGE_PID"
  echo "$ME: stopped"
  exit 0
fi

# --- (a) packages -----------------------------------------------------------------------------
need_install=0
for exe in slurmctld slurmd slurmdbd sinfo sacct munged mariadbd mariadb-install-db mariadb; do
  command -v "$exe" >/dev/null 2>&1 || need_install=1
done
mkdir -p "$LOGS"
if ((need_install)); then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } \
    >"$LOGS/apt.log" 2>&1 || die "apt-get install ${PACKAGES[*]} failed (see $LOGS/apt.log)"
fi

# --- (b) configuration ------------------------------------------------------------------------
node=$(hostname -s 2>/dev/null || uname -n)
node=${node%%.*}
[[ -n $node ]] || die "cannot determine the host name"
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)   # nproc obeys those variables
mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
mem_mb=$((mem_mb * 8 / 10))
((mem_mb > 4000)) && mem_mb=4000

slurm_conf="$MARK
ClusterName=dmpflocal
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Start a batch job as soon as it is submitted (the default waits up to 3 s).
SchedulerParameters=batch_sched_delay=0
# Refuse at submission what the partition can never run (instead of pending forever).
EnforcePartLimits=ALL
# Use the node definition below even where the hardware differs (no drain on small CI runners).
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP"

dbd_conf="$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$DBD_PID
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db"

db_cnf="$MARK
[mysqld]
user=root
datadir=$DB_DIR
socket=$RUN/mariadb.sock
pid-file=$DB_PID
log-error=$LOGS/mariadb.log
bind-address=127.0.0.1
port=$DB_PORT
skip-name-resolve
innodb_buffer_pool_size=128M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
innodb_use_native_aio=0
[client]
user=root
socket=$RUN/mariadb.sock"

# put_file PATH CONTENT MODE: write unless identical; refuse to replace a file we did not write.
# Returns 0 when the file changed.
put_file() {
  if [[ -f $1 ]]; then
    [[ "$(cat "$1")" == "$2" ]] && return 1
    [[ "$(head -n1 "$1")" == "$MARK" || "$(head -n1 "$1")" == "$OLD_MARK" ]] ||
      die "$1 exists and was not written by this script; move it away to use the local cluster"
  fi
  mkdir -p "$(dirname "$1")"
  printf '%s\n' "$2" >"$1.tmp.$$"
  chmod "$3" "$1.tmp.$$"
  mv -f "$1.tmp.$$" "$1"
  return 0
}

slurm_changed=0 db_changed=0
put_file "$CONF_FILE" "$slurm_conf" 644 && slurm_changed=1
put_file "$DBD_CONF" "$dbd_conf" 600 && slurm_changed=1
put_file "$DB_CNF" "$db_cnf" 644 && db_changed=1
mkdir -p "$SPOOL/ctld" "$SPOOL/slurmd" "$RUN"
# A changed config takes effect by restarting what reads it (the start below).
if ((slurm_changed || db_changed)); then stop_slurm; fi
if ((db_changed)); then stop_daemon mariadbd "$DB_PID"; fi

# --- (c) daemons ------------------------------------------------------------------------------
# munge: the key comes with the package; make one if it is missing.
if [[ ! -s /etc/munge/munge.key ]]; then
  install -d -o munge -g munge -m 700 /etc/munge
  runuser -u munge -- mungekey --create >/dev/null 2>&1 ||
    die "could not create /etc/munge/munge.key"
fi
if ! munge -n </dev/null >/dev/null 2>&1; then
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- munged >"$LOGS/munged.out" 2>&1 ||
    die "munged did not start: $(tail -n1 "$LOGS/munged.out")"
  wait_for 10 munge -n || die "munged is not answering (see /var/log/munge/munged.log)"
fi

db() { mariadb --defaults-file="$DB_CNF" "$@"; }
if ! alive mariadbd "$DB_PID"; then
  if [[ ! -d $DB_DIR/mysql ]]; then
    rm -rf "$DB_DIR"
    mariadb-install-db --defaults-file="$DB_CNF" --auth-root-authentication-method=socket \
      --skip-test-db >"$LOGS/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed (see $LOGS/mariadb-install.log)"
  fi
  setsid mariadbd --defaults-file="$DB_CNF" </dev/null >>"$LOGS/mariadb.log" 2>&1 &
  wait_for 30 db -e 'SELECT 1' || die "MariaDB did not start (see $LOGS/mariadb.log)"
fi
db -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
       CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
       GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" >/dev/null 2>&1 ||
  die "could not create the accounting database in MariaDB (see $LOGS/mariadb.log)"

if ! alive slurmdbd "$DBD_PID"; then
  slurmdbd >>"$LOGS/slurmdbd.out" 2>&1 || die "slurmdbd did not start (see $LOGS/slurmdbd.log)"
fi
wait_for 30 sacctmgr -n list cluster || die "slurmdbd is not answering (see $LOGS/slurmdbd.log)"

if ! alive slurmctld "$CTLD_PID"; then
  # -c: start with no jobs; a test cluster never brings back the jobs of an earlier start
  slurmctld -c >>"$LOGS/slurmctld.out" 2>&1 || die "slurmctld did not start (see $LOGS/slurmctld.log)"
fi
if ! alive slurmd "$SLURMD_PID"; then
  kill_steps   # steps of jobs from before, which slurmctld -c has forgotten
  slurmd >>"$LOGS/slurmd.out" 2>&1 || die "slurmd did not start (see $LOGS/slurmd.log)"
fi

# --- (d) wait until the node takes jobs -------------------------------------------------------
# check_daemon NAME PIDFILE LOG: stop with the daemon's last error if it has exited.
check_daemon() {
  alive "$1" "$2" && return 0
  local why
  why=$(grep -E '(fatal|error):' "$3" 2>/dev/null | tail -n1 | sed 's/^\[[^]]*\] //')
  die "$1 exited: ${why:-no error logged} (see $3)"
}
resumed=0
for ((i = 0; i < WAIT_S * 5; i++)); do
  if ((i >= 5)); then   # daemons write their pid file just after forking
    check_daemon slurmctld "$CTLD_PID" "$LOGS/slurmctld.log"
    check_daemon slurmd "$SLURMD_PID" "$LOGS/slurmd.log"
  fi
  state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
  case $state in
    idle | mixed | allocated | completing)
      # (e) ready
      echo "$ME: ready (partition debug, $cpus CPUs)"
      exit 0
      ;;
    drain* | down*)
      # A node left drained/down by an earlier run (other config, daemon killed): it is ours.
      if ((!resumed && i >= 10)); then
        scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
        resumed=1
      fi
      ;;
  esac
  sleep 0.2
done
reason=$(sinfo -h -n "$node" -o '%T (%E)' 2>/dev/null || echo "sinfo failed")
die "node $node not ready after ${WAIT_S}s: ${reason:-no state} (see $LOGS/)"
