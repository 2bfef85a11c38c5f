#!/usr/bin/env bash
# Re-record the SLURM output that tests/unit/test_slurm_parse.py parses, from the local test cluster
# (tests/slurm/start-cluster.sh). Takes about 2 minutes (a job must hit its 1-minute time limit).
# The command lines match orchestrator/backends/slurm/commands.py's; the unit tests name the job ids below, so after a
# re-recording update them there. Cancels every job it submits. sacct_array_stale_range.txt is not
# made here (it needs a lucky moment): it is `sacct ... -j A` polled until task 2 of
# `sbatch -a 0-5%2 --wrap 'sleep 3'` had a row of its own while the range row still covered it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck disable=SC2054  # -o takes one comma-separated word
SACCT=(sacct -X --parsable2 --noheader -o JobID,JobIDRaw,State,ExitCode,ElapsedRaw,NodeList,Start,End,Reason)
SQUEUE=(squeue -h -r -t all -o '%i|%T|%M|%N|%S|%e|%r')
submit() { sbatch --parsable -o /dev/null --mem=100M "$@"; }

timeout_job=$(submit -p cpu -t 1 -J rec-timeout --wrap 'sleep 600')
ok=$(submit -p cpu -J rec-ok --wrap true)
fail=$(submit -p cpu -J rec-fail --wrap 'exit 3')
running=$(submit -p cpu -J rec-run --wrap 'sleep 600')
cancelled=$(submit -p cpu -J rec-cancel --wrap 'sleep 600')
requeued=$(submit -p cpu -J rec-requeue --wrap 'sleep 600')
throttled=$(submit -p cpu -a 0-9%2 -J rec-array --wrap 'sleep 600')
held=$(submit -p cpu -a 1,3,5-7 --hold -J rec-array-held --wrap 'sleep 600')
gpus=$(submit -p t4 --gres=gpu:t4:2 -J rec-gpu-both --wrap 'sleep 600')
gpu_pending=$(submit -p t4 --gres=gpu:t4:1 -J rec-gpu-pending --wrap 'sleep 600')
ids="$timeout_job,$ok,$fail,$running,$cancelled,$requeued,$throttled,$held,$gpus,$gpu_pending"
echo "job ids: timeout=$timeout_job ok=$ok fail=$fail running=$running cancelled=$cancelled" \
    "requeued=$requeued throttled=$throttled held=$held gpus=$gpus gpu_pending=$gpu_pending" | tee job_ids.txt
sleep 3
scancel "$cancelled"
scontrol requeue "$requeued"
scancel "${throttled}_1" # lets task 2 start while sacct still shows the range 2-9 pending
sleep 3

"${SACCT[@]}" -j "$ids" >sacct_live.txt
"${SQUEUE[@]}" -j "$ids" >squeue_live.txt
"${SACCT[@]}" -D -j "$requeued" >sacct_requeue_duplicates.txt
scontrol show config >scontrol_show_config.txt
sacctmgr -n -P show assoc where user=root format=MaxSubmit,QOS >sacctmgr_assoc_unlimited.txt
sacctmgr -n -P show qos where name=normal format=Name,MaxSubmitPU >sacctmgr_qos_unlimited.txt
# The same with limits set for a moment (and cleared again: other tests share this cluster).
sacctmgr -i modify user root set MaxSubmitJobs=500 >/dev/null
sacctmgr -i modify qos normal set MaxSubmitJobsPerUser=300 >/dev/null
sacctmgr -n -P show assoc where user=root format=MaxSubmit,QOS >sacctmgr_assoc_limited.txt
sacctmgr -n -P show qos where name=normal format=Name,MaxSubmitPU >sacctmgr_qos_limited.txt
sacctmgr -i modify user root set MaxSubmitJobs=-1 >/dev/null
sacctmgr -i modify qos normal set MaxSubmitJobsPerUser=-1 >/dev/null

echo "waiting for job $timeout_job to time out"
until [[ "$(sacct -n -X -P -o State -j "$timeout_job")" == TIMEOUT ]]; do sleep 2; done
scancel "$running" "$throttled" "$held" "$gpus" "$gpu_pending" "$requeued"
sleep 3
"${SACCT[@]}" -j "$ids" >sacct_finished.txt
"${SQUEUE[@]}" -j "$ids" >squeue_finished.txt
echo "recorded into $(pwd)"
