#!/usr/bin/env bash
# A one-node Slurm for tests: munged, slurmctld and slurmd from Debian's
# munge and slurm-wlm packages, with their state, sockets and logs under DIR.
#   slurm_one_node.sh start DIR   prints "export SLURM_CONF=DIR/slurm.conf"
#   slurm_one_node.sh stop DIR
# Runs as root (slurmd starts job steps as the submitting user).
set -euo pipefail
action=$1
dir=$(realpath -m "$2")
host=$(hostname -s)

stop() {
  for pidfile in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

if [ "$action" = stop ]; then
  stop
  exit 0
fi
[ "$action" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "slurm_one_node.sh: needs root (slurmd runs job steps as their user)" >&2; exit 1; }
for p in munged slurmctld slurmd srun; do
  command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] || { echo "slurm_one_node.sh: $p is missing: apt-get install slurm-wlm munge (scripts/install-deps.sh)" >&2; exit 1; }
done
mkdir -p "$dir"/state "$dir"/spool "$dir"/munge
chmod 755 "$dir"
runuser -u munge -- test -x "$dir" ||
  { echo "slurm_one_node.sh: user munge cannot reach $dir (a parent folder is private): pick another" >&2; exit 1; }
chown munge:munge "$dir"/munge
chmod 700 "$dir"/munge

# Ports of our own, so a system Slurm on the default ports is left alone.
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cat > "$dir"/slurm.conf <<CONF
ClusterName=rdmaps-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(port)
SlurmdPort=$(port)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
CONF

# munged runs as munge with its key from the package; socket and pid here.
runuser -u munge -- /usr/sbin/munged --socket="$dir"/munge/munge.socket --pid-file="$dir"/munge/munged.pid \
  --log-file="$dir"/munge/munged.log --seed-file="$dir"/munge/seed --force
cp "$dir"/munge/munged.pid "$dir"/munged.pid
export SLURM_CONF="$dir"/slurm.conf
/usr/sbin/slurmctld -i
/usr/sbin/slurmd
for _ in $(seq 100); do
  if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    echo "export SLURM_CONF=$dir/slurm.conf"
    exit 0
  fi
  sleep 0.2
done
echo "slurm_one_node.sh: the node did not come up within 20 s; logs:" >&2
tail -n 20 "$dir"/slurmctld.log "$dir"/slurmd.log >&2 || true
stop
exit 1
