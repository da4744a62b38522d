#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for tests/test_slurm.py (no systemd needed):
#   tests/slurm/cluster.sh start DIR   # installs Debian's slurm + munge if missing (root), starts
#                                      # munged, slurmctld, slurmd
#   tests/slurm/cluster.sh stop DIR
# The configuration is written to /etc/slurm/slurm.conf (state and logs in DIR). No slurmdbd: accounting is off,
# so the Snakemake profile must use `slurm-status-command: squeue`.
set -euo pipefail
cmd=${1:?start|stop}; dir=$(realpath -m "${2:?state directory}")
mkdir -p "$dir"
# slurm.conf goes where every SLURM tool (and srun inside a job) looks for it by default
export SLURM_CONF=/etc/slurm/slurm.conf
mkdir -p /etc/slurm

stop_daemons() {  # this machine's slurmctld/slurmd (and job steps), whoever started them
  pkill -x slurmctld 2>/dev/null || true
  pkill -x slurmd 2>/dev/null || true
  pkill -f '^slurmstepd' 2>/dev/null || true
  for _ in $(seq 20); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || return 0; sleep 0.5; done
  pkill -9 -x slurmctld 2>/dev/null || true; pkill -9 -x slurmd 2>/dev/null || true
}

MARK="# written by tests/slurm/cluster.sh"
if [ "$cmd" = stop ]; then
  stop_daemons
  # leave no slurm.conf of a stopped cluster behind: with one, every SLURM client call (and so
  # importing snakemake's SLURM plugin, i.e. every snakemake start) waits ~9 s for the controller
  if head -1 "$SLURM_CONF" 2>/dev/null | grep -qF "$MARK"; then rm -f "$SLURM_CONF"; fi
  [ -f "$SLURM_CONF.preempt-backup" ] && mv "$SLURM_CONF.preempt-backup" "$SLURM_CONF"
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "cluster.sh: SLURM is not installed and this is not root" >&2; exit 3; }
  command -v apt-get >/dev/null || { echo "cluster.sh: no apt-get to install SLURM with" >&2; exit 3; }
  apt-get update -qq >"$dir/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >>"$dir/apt.log" 2>&1
fi

# munge: one shared key, daemon as user munge
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --force
  sleep 1
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$dir/ctld" "$dir/d"
if [ -f "$SLURM_CONF" ] && ! head -1 "$SLURM_CONF" | grep -qF "$MARK"; then
  mv "$SLURM_CONF" "$SLURM_CONF.preempt-backup"  # the machine's own; restored by `stop`
fi
cat >"$SLURM_CONF" <<CONF
$MARK
ClusterName=preempt-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# keep ended jobs in the controller for an hour: tests read each job's rule from `scontrol show job`
MinJobAge=3600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

stop_daemons  # a cluster left from an earlier run would hold the ports with its own config
/usr/sbin/slurmctld -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "cluster.sh: one-node cluster up ($host, $cpus CPUs, ${mem} MB); SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 1
done
echo "cluster.sh: the node did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
sinfo >&2 || true
exit 1
