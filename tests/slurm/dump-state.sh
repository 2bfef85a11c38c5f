#!/usr/bin/env bash
# Print the local test cluster's state for a failure report: sinfo, squeue, sacct -l for the last hour,
# and the last 50 lines of the slurmctld, slurmd and slurmdbd logs. Never fails: it reports what it can.
LOG_DIR=/var/log/slurm
section() { echo "---- $*"; }
run() { section "$*"; timeout 10 "$@" 2>&1 || echo "(exit $?)"; }

run sinfo
run sinfo -N -l
run squeue -l
since=$(date -d '1 hour ago' +%Y-%m-%dT%H:%M:%S)
run sacct -X -a --starttime "$since" -o JobID,JobName%20,Partition,State%20,ExitCode,Elapsed,NodeList,Reason%20
# -l's 70 columns padded to width are unreadable in a test log: print them delimited instead.
run sacct -l -X -a --parsable2 --starttime "$since"
for name in slurmctld slurmd slurmdbd; do
    section "tail -n 50 $LOG_DIR/$name.log"
    tail -n 50 "$LOG_DIR/$name.log" 2>&1 || true
done
exit 0
