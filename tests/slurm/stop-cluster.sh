#!/usr/bin/env bash
# Stop the local test cluster that start-cluster.sh started: slurmd, slurmctld, slurmdbd, MariaDB,
# munged, each by its pid file (for developers; the tests never stop the cluster). State (jobs in
# /var/spool/slurmctld, accounting in MariaDB) is kept, so the next start recovers it.
set -uo pipefail
[[ $EUID -eq 0 ]] || { echo "stop-cluster.sh: must run as root" >&2; exit 1; }

# stop PIDFILE NAME: SIGTERM the process the pid file names (if it is NAME) and wait up to 20 s.
stop() {
    local pid
    [[ -s "$1" ]] || { echo "$2: not running"; return 0; }
    pid=$(<"$1")
    if [[ ! -r /proc/$pid/comm || "$(<"/proc/$pid/comm")" != "$2" ]]; then
        echo "$2: not running (stale pid file)"
        return 0
    fi
    kill "$pid"
    for _ in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then echo "$2: stopped (pid $pid)"; return 0; fi
        sleep 0.2
    done
    echo "$2: pid $pid still running after 20 s" >&2
    return 1
}

rc=0
stop /run/slurmd.pid slurmd || rc=1
stop /run/slurmctld.pid slurmctld || rc=1
stop /run/slurmdbd.pid slurmdbd || rc=1
if mysqladmin --connect-timeout=2 ping >/dev/null 2>&1; then
    # mysqld_safe exits by itself after a clean shutdown.
    mysqladmin shutdown && echo "mariadb: stopped" || rc=1
else
    echo "mariadb: not running"
fi
stop /run/munge/munged.pid munged || rc=1
exit $rc
