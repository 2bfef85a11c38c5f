#!/usr/bin/env bash
# Start (or repair) a real single-host SLURM 22.05 cluster with accounting for the integration tests.
#
#   tests/slurm/start-cluster.sh [--check]
#
# Idempotent: when munged, MariaDB, slurmdbd, slurmctld and slurmd are all running, the config files
# are current and the node is usable, it only prints the state (well under 2 s). Otherwise it installs
# what is missing, (re)writes the configs, starts whatever is not running (a half-started state is
# repaired, not restarted from scratch), waits for the node, and proves the cluster with a real job
# (`sbatch -p t4 --gres=gpu:t4:1`, run to completion, and its `sacct` record). --check forces that
# proof on a warm cluster too. Needs root. On failure it prints a diagnosis (dump-state.sh,
# `scontrol show node`) and exits non-zero. The recipe follows /work/shared/OFFLINE.md, "SLURM on
# this machine". Environment: SLURM_START_TIMEOUT_S (default 60) bounds each wait.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER_NAME=orchestrate-test
HOST=$(hostname -s)
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
WORK_DIR=/var/lib/orchestrate-slurm      # fake GPU device files and the check job's output
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=orchestrate-test-only
TIMEOUT_S=${SLURM_START_TIMEOUT_S:-60}
LOCK_FILE=/run/orchestrate-slurm.lock
FORCE_CHECK=0
[[ "${1:-}" == "--check" ]] && FORCE_CHECK=1

START_NS=$(date +%s%N)
elapsed() {
    local centis=$((($(date +%s%N) - START_NS) / 10000000))
    printf '%d.%02d' $((centis / 100)) $((centis % 100))
}
log() { echo "[start-cluster +$(elapsed)s] $*"; }

diagnose() {
    echo "==================== start-cluster.sh diagnosis ===================="
    "$SCRIPT_DIR/dump-state.sh" 2>&1 || true
    echo "---- scontrol show node"
    timeout 5 scontrol show node 2>&1 || true
    echo "---- munged / mysqld logs (tail)"
    tail -n 20 /var/log/munge/munged.log /var/log/mysql/error.log 2>&1 || true
}
CHECK_JOB_ID=""
die() {
    log "FAILED: $*"
    diagnose
    [[ -z "$CHECK_JOB_ID" ]] || scancel "$CHECK_JOB_ID" 2>/dev/null || true
    exit 1
}
on_error() {
    local status=$? line=$1
    log "unexpected error (exit $status) at line $line: $BASH_COMMAND"
    diagnose
    exit "$status"
}
trap 'on_error $LINENO' ERR

[[ $EUID -eq 0 ]] || { echo "start-cluster.sh: must run as root" >&2; exit 1; }

# One start at a time: several pytest sessions may call this concurrently.
exec 9>"$LOCK_FILE"
flock -w "$TIMEOUT_S" 9 || die "another start-cluster.sh held $LOCK_FILE for ${TIMEOUT_S}s"

# ---------------------------------------------------------------- helpers
# pid_alive PIDFILE NAME: the pid file names a live process whose command is NAME (not a reused pid).
pid_alive() {
    local pid
    [[ -s "$1" ]] || return 1
    pid=$(<"$1")
    [[ -r "/proc/$pid/comm" && "$(<"/proc/$pid/comm")" == "$2" ]]
}
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
mysql_ok() { mysqladmin --connect-timeout=2 ping >/dev/null 2>&1; }
dbd_ok() {
    pid_alive /run/slurmdbd.pid slurmdbd && timeout 5 sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1
}
ctld_ok() { pid_alive /run/slurmctld.pid slurmctld && timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; }
slurmd_ok() { pid_alive /run/slurmd.pid slurmd; }
# node_state: the node's state in lower case without the flags sinfo appends (*, ~, #, ...).
node_state() { timeout 5 sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1 | tr -d '*~#!%$@^-' || true; }
node_usable() {
    case "$(node_state)" in
    idle | mixed | allocated | completing | planned) return 0 ;;
    *) return 1 ;;
    esac
}
# wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.2 s.
wait_for() {
    local limit_s=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s) + limit_s))
    until "$@"; do
        (($(date +%s) < deadline)) || die "timed out after ${limit_s}s waiting for $what"
        sleep 0.2
    done
}
# stop_pid PIDFILE NAME: stop a daemon this cluster started (by its pid file), e.g. after a config change.
stop_pid() {
    pid_alive "$1" "$2" || return 0
    local pid
    pid=$(<"$1")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    die "$2 (pid $pid) did not stop"
}

# ---------------------------------------------------------------- configuration
MEM_TOTAL_MIB=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
REAL_MEMORY_MIB=$((MEM_TOTAL_MIB - 1024))
NPROC=$(nproc)

# Over-subscription: the tests run arrays of 4-8 single-CPU jobs at once on a 2-core machine. The node
# declares its real CPU count and the partitions share each core among up to 4 jobs
# (OverSubscribe=FORCE:4; no gang scheduling, so jobs on one core simply run side by side), hence
# 4 * nproc concurrent 1-CPU jobs. Memory stays a consumable resource (CR_Core_Memory): --mem is
# never over-committed. The alternative, declaring CPUs=8 with SlurmdParameters=config_overrides,
# makes slurm.conf lie about the hardware (SLURM_CPUS_ON_NODE=8 on a 2-core box) and hides drift.
OVERSUBSCRIBE=FORCE:4

SLURM_CONF="# Written by tests/slurm/start-cluster.sh: a single-host test cluster. Edits are overwritten.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, one job takes the node's whole memory and arrays run one task at a time.
DefMemPerCPU=1000
ReturnToService=2
GresTypes=gpu
MaxArraySize=1001
# Keep finished jobs in squeue / scontrol for 5 minutes.
MinJobAge=300
KillWait=10
# A requeued job (scontrol requeue, preemption, node failure) may start again only after the job
# credential's lifetime, 120 s by default (slurm.conf(5), AuthInfo cred_expire); SLURM shows it pending
# with reason BeginTime meanwhile. The fault tests requeue a job each: 30 s keeps that wait, and what
# the product sees during it, while cutting ~90 s a requeue from CI. 30 s still leaves room for a step
# launch on a loaded 2-core machine (the credential must be verified within its lifetime).
AuthInfo=cred_expire=30
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
# Preemption, as on a shared partition: a job in 'urgent' requeues the t4/cpu jobs it needs room from.
# As on most clusters (no preempt_send_user_signal), only SIGTERM warns, GraceTime seconds before SIGKILL.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=$HOST CPUs=$NPROC RealMemory=$REAL_MEMORY_MIB Gres=gpu:t4:2 State=UNKNOWN
PartitionName=t4 Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=$OVERSUBSCRIBE PriorityTier=1 GraceTime=60
PartitionName=cpu Nodes=$HOST Default=NO MaxTime=INFINITE State=UP OverSubscribe=$OVERSUBSCRIBE PriorityTier=1 GraceTime=60
PartitionName=urgent Nodes=$HOST Default=NO MaxTime=INFINITE State=UP OverSubscribe=EXCLUSIVE PriorityTier=10 PreemptMode=OFF
"
# Without File= the node registers 0 GPUs and is set INVAL/DRAIN; plain empty files are enough.
GRES_CONF="NodeName=$HOST Name=gpu Type=t4 File=$WORK_DIR/fakegpu[0-1]
"
SLURMDBD_CONF="AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
LogFile=$LOG_DIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
"

# conf_current FILE CONTENT: the file already holds exactly CONTENT.
conf_current() { [[ -f "$1" && "$(<"$1")" == "${2%$'\n'}" ]]; }
configs_current() {
    conf_current "$CONF_DIR/slurm.conf" "$SLURM_CONF" && conf_current "$CONF_DIR/gres.conf" "$GRES_CONF" &&
        conf_current "$CONF_DIR/slurmdbd.conf" "$SLURMDBD_CONF"
}

print_state() {
    log "cluster $CLUSTER_NAME on $HOST: node $(node_state); partitions:"
    timeout 5 sinfo -o '  %10P %6a %10l %5D %8T %G' 2>&1 || true
}

# ---------------------------------------------------------------- warm fast path
if [[ $FORCE_CHECK -eq 0 ]] && command -v slurmctld >/dev/null && configs_current && munge_ok && mysql_ok &&
    dbd_ok && ctld_ok && slurmd_ok && node_usable; then
    print_state
    log "already running and healthy; nothing to do ($(elapsed) s)"
    exit 0
fi

# ---------------------------------------------------------------- install
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v munged >/dev/null ||
    ! command -v mysqld_safe >/dev/null; then
    log "installing slurm-wlm munge slurmdbd mariadb-server"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge slurmdbd mariadb-server >/dev/null
fi

mkdir -p "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR" "$WORK_DIR" /run/munge /run/mysqld
touch "$WORK_DIR/fakegpu0" "$WORK_DIR/fakegpu1"

# ---------------------------------------------------------------- munge
if munge_ok; then
    log "munged: running"
else
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
    chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
    chmod 0400 /etc/munge/munge.key
    log "munged: starting"
    # --force: as root munged refuses to start over a stale socket or lock file otherwise.
    runuser -u munge -- /usr/sbin/munged --force </dev/null >/dev/null 2>&1 9>&- ||
        /usr/sbin/munged --force </dev/null >/dev/null 2>&1 9>&- || die "munged failed to start"
    wait_for 10 "munge -n | unmunge" munge_ok
fi

# ---------------------------------------------------------------- MariaDB
if mysql_ok; then
    log "mariadb: running"
else
    mkdir -p /var/log/mysql
    chown mysql:mysql /run/mysqld /var/log/mysql
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        log "mariadb: initialising the data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    log "mariadb: starting"
    # Debian's mysqld_safe config logs to syslog, which a container lacks: log to a file mysql can write.
    setsid mysqld_safe --user=mysql --skip-syslog --log-error=/var/log/mysql/error.log \
        </dev/null >/dev/null 2>&1 9>&- &
    wait_for 30 "mysqladmin ping" mysql_ok
fi
mysql -u root <<SQL
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
SQL

# ---------------------------------------------------------------- configs
write_conf() { # write_conf FILE MODE CONTENT: returns 0 when the file changed
    conf_current "$1" "$3" && return 1
    printf '%s\n' "${3%$'\n'}" >"$1.tmp"
    chmod "$2" "$1.tmp"
    mv "$1.tmp" "$1"
    log "wrote $1"
}
DBD_CONF_CHANGED=0
SLURM_CONF_CHANGED=0
write_conf "$CONF_DIR/slurmdbd.conf" 600 "$SLURMDBD_CONF" && DBD_CONF_CHANGED=1
write_conf "$CONF_DIR/slurm.conf" 644 "$SLURM_CONF" && SLURM_CONF_CHANGED=1
write_conf "$CONF_DIR/gres.conf" 644 "$GRES_CONF" && SLURM_CONF_CHANGED=1
if [[ $DBD_CONF_CHANGED -eq 1 ]]; then stop_pid /run/slurmdbd.pid slurmdbd; fi
if [[ $SLURM_CONF_CHANGED -eq 1 ]]; then
    # Node and partition definitions change only on a restart of both daemons.
    stop_pid /run/slurmd.pid slurmd
    stop_pid /run/slurmctld.pid slurmctld
fi

# ---------------------------------------------------------------- slurmdbd + cluster registration
if dbd_ok; then
    log "slurmdbd: running"
else
    stop_pid /run/slurmdbd.pid slurmdbd # alive but not answering
    log "slurmdbd: starting"
    /usr/sbin/slurmdbd </dev/null >/dev/null 2>&1 9>&- || die "slurmdbd failed to start"
    wait_for 30 "slurmdbd to answer sacctmgr" dbd_ok
fi
if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER_NAME"; then
    log "sacctmgr: adding cluster $CLUSTER_NAME"
    sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null
fi

# ---------------------------------------------------------------- slurmctld + slurmd
if ctld_ok; then
    log "slurmctld: running"
else
    stop_pid /run/slurmctld.pid slurmctld
    log "slurmctld: starting"
    /usr/sbin/slurmctld </dev/null >/dev/null 2>&1 9>&- || die "slurmctld failed to start"
    wait_for 30 "scontrol ping" ctld_ok
fi
if slurmd_ok; then
    log "slurmd: running"
else
    log "slurmd: starting"
    /usr/sbin/slurmd </dev/null >/dev/null 2>&1 9>&- || die "slurmd failed to start"
fi

# ---------------------------------------------------------------- node ready
deadline=$(($(date +%s) + TIMEOUT_S))
until node_usable; do
    state=$(node_state)
    case "$state" in
    *drain* | down | inval* | fail*)
        log "node $HOST is '$state': resuming"
        scontrol update nodename="$HOST" state=resume 2>&1 || true
        ;;
    esac
    (($(date +%s) < deadline)) || die "node $HOST not usable after ${TIMEOUT_S}s (state '$state')"
    sleep 0.2
done
log "node $HOST: $(node_state)"

# ---------------------------------------------------------------- real check
# Submit and poll rather than `sbatch --wait`: --wait sleeps 2 s and then 8 s between its polls, which
# made the check take 10 s of a 12 s cold start for a job that runs in well under a second.
log "check: sbatch -p t4 --gres=gpu:t4:1 (polling every 0.2 s)"
check_since=$(date -d '1 minute ago' +%Y-%m-%dT%H:%M:%S) # job ids restart at 1 when the state dir is new
# shellcheck disable=SC2016  # $SLURM_GPUS_ON_NODE is the job's, not ours
job_id=$(sbatch --parsable -p t4 --gres=gpu:t4:1 --cpus-per-task=1 --mem=100M -J start-cluster-check \
    -o "$WORK_DIR/check-%j.out" --wrap 'echo "ok gpus=$SLURM_GPUS_ON_NODE"') || die "sbatch of the check job failed"
job_id=${job_id%%;*}
CHECK_JOB_ID=$job_id
job_state() { timeout 5 scontrol show job -o "$job_id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true; }
job_finished() {
    case "$(job_state)" in
    COMPLETED) return 0 ;;
    FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED)
        die "check job $job_id ended $(job_state)" ;;
    *) return 1 ;;
    esac
}
wait_for "$TIMEOUT_S" "check job $job_id to complete" job_finished
out_file="$WORK_DIR/check-$job_id.out"
grep -qx 'ok gpus=1' "$out_file" || die "check job $job_id wrote '$(cat "$out_file" 2>&1)', expected 'ok gpus=1'"
rm -f "$out_file"
sacct_state() {
    [[ "$(sacct -n -X -P -j "$job_id" -S "$check_since" -o State 2>/dev/null | tail -n 1)" == COMPLETED ]]
}
wait_for 20 "sacct to record job $job_id as COMPLETED" sacct_state
CHECK_JOB_ID=""
log "check: job $job_id ran on a t4 GPU and sacct records it COMPLETED"
print_state
log "cluster ready after $(elapsed) s"
