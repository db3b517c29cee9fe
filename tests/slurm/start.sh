#!/bin/bash
# A private single-node SLURM cluster for the tests: munge, MariaDB, slurmdbd, slurmctld, slurmd,
# all as root, all on loopback, everything (config, state, logs, sockets, PID files) under one folder.
#
#   tests/slurm/start.sh [DIR]     (DIR: default $DRR_SLURM_DIR or /tmp/drr-slurm)
#   . DIR/env      # SLURM_CONF=DIR/etc/slurm.conf, DIR/bin first in PATH; then sinfo, snakemake --profile slurm, ...
#   tests/slurm/stop.sh [DIR]
#
# The node `drrnode` advertises an A100 node (32 cores, 256 GB, 8 GPUs of gres type a100 whose
# device files are symlinks to /dev/null) in two partitions, `cpu` (default) and `a100`, the names
# slurm/config.yaml uses. Jobs run on this machine whatever they ask for; nothing is enforced.
#
# Needs root and Debian's munge slurmctld slurmd slurm-client slurmdbd mariadb-server (installed
# here with apt-get when missing; `make setup` installs them as root). Exit status 77: this machine
# cannot run the cluster (not root, no apt, packages missing); the reason is the last line on stderr.
# Any other non-zero status: a daemon did not come up; its log is printed.
set -euo pipefail

DIR=${1:-${DRR_SLURM_DIR:-/tmp/drr-slurm}}
NODE=drrnode
PACKAGES="munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
HERE=$(cd "$(dirname "$0")" && pwd)

skip() { echo "cannot start SLURM here: $*" >&2; exit 77; }
die() { echo "SLURM did not start: $1" >&2; [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 30 "$2" >&2; exit 1; }

[ "$(id -u)" = 0 ] || skip "not root (the daemons and Debian's packages need root)"
missing() { for c in munged slurmctld slurmd sinfo slurmdbd mariadbd mariadb-install-db; do
  command -v "$c" >/dev/null || { echo "$c"; return; }; done; }
if [ -n "$(missing)" ]; then
  command -v apt-get >/dev/null || skip "$(missing) missing and no apt-get to install $PACKAGES"
  echo "installing $PACKAGES" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null 2>&1; } ||
    skip "apt-get install $PACKAGES failed"
  [ -z "$(missing)" ] || skip "$(missing) missing after apt-get install $PACKAGES"
fi

# A cluster already running from DIR is stopped first (only the PIDs it recorded).
[ -d "$DIR/run" ] && "$HERE/stop.sh" "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR"
mkdir -p "$DIR"/{etc,run,log,state,spool,munge,dev,mysql}
chmod 700 "$DIR" "$DIR/munge"
DIR=$(cd "$DIR" && pwd)

# Five free TCP ports on loopback: slurmctld, slurmd, slurmdbd, MariaDB (chosen, then released).
read -r P_CTLD P_SLURMD P_DBD P_SQL < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)

# munge: a private key and socket.
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
SOCK="$DIR/munge/munge.socket"
munged --force --socket="$SOCK" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
  --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" </dev/null >/dev/null 2>&1 ||
  die "munged" "$DIR/log/munged.log"

# Eight fake GPUs: gres File= entries must be device-like paths; symlinks to /dev/null do.
for i in 0 1 2 3 4 5 6 7; do ln -s /dev/null "$DIR/dev/nvidia$i"; done

cat >"$DIR/etc/slurm.conf" <<EOF
# Written by tests/slurm/start.sh: a private single-node cluster on loopback.
ClusterName=drrtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$P_CTLD
SlurmdPort=$P_SLURMD
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
InactiveLimit=0
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$P_DBD
AccountingStoragePass=$SOCK
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
AccountingStoreFlags=job_comment
# As on many production clusters, jobs are not requeueable unless they ask (sbatch --requeue).
JobRequeue=0
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=32 Boards=1 SocketsPerBoard=2 CoresPerSocket=16 ThreadsPerCore=1 RealMemory=256000 Gres=gpu:a100:8 Feature=a100 State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=a100 Nodes=$NODE MaxTime=INFINITE State=UP
EOF
cat >"$DIR/etc/gres.conf" <<EOF
NodeName=$NODE Name=gpu Type=a100 File=$DIR/dev/nvidia[0-7]
EOF

# MariaDB for slurmdbd: private data folder, 127.0.0.1 only.
mariadb-install-db --no-defaults --innodb-log-file-size=16M --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=normal \
  --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db" "$DIR/log/mariadb-install.log"
setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --bind-address=127.0.0.1 --port="$P_SQL" \
  --socket="$DIR/run/mysqld.sock" --pid-file="$DIR/run/mariadb.pid" --log-error="$DIR/log/mariadb.log" \
  --skip-name-resolve --innodb-buffer-pool-size=64M --innodb-log-file-size=16M </dev/null >/dev/null 2>&1 &
echo $! >"$DIR/run/mariadb.pid"
SQL=(mariadb --no-defaults --socket="$DIR/run/mysqld.sock" -uroot)
for _ in $(seq 100); do "${SQL[@]}" -e "select 1" >/dev/null 2>&1 && break; sleep 0.2; done
"${SQL[@]}" -e "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'drrtest';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" 2>>"$DIR/log/mariadb.log" ||
  die "MariaDB" "$DIR/log/mariadb.log"

cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
CommunicationParameters=NoInAddrAny
DbdPort=$P_DBD
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$P_SQL
StorageUser=slurm
StoragePass=drrtest
StorageLoc=slurm_acct_db
EOF
chmod 600 "$DIR/etc/slurmdbd.conf"

export SLURM_CONF="$DIR/etc/slurm.conf"
# Client commands that find this cluster without SLURM_CONF, as on a cluster with /etc/slurm: the
# Snakemake job-step executor strips SLURM_* variables (SLURM_CONF too) before its nested `srun`.
mkdir -p "$DIR/bin"
for c in sbatch srun salloc squeue sacct sacctmgr scontrol scancel sinfo sshare sstat; do
  printf '#!/bin/sh\nSLURM_CONF=%s exec /usr/bin/%s "$@"\n' "$SLURM_CONF" "$c" >"$DIR/bin/$c"
  chmod +x "$DIR/bin/$c"
done
cat >"$DIR/env" <<EOF
export SLURM_CONF=$SLURM_CONF
export PATH=$DIR/bin:\$PATH
EOF

slurmdbd </dev/null >/dev/null 2>&1 || die "slurmdbd" "$DIR/log/slurmdbd.log"
for _ in $(seq 50); do timeout 5 sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
sacctmgr -i add cluster drrtest >/dev/null 2>&1 || true
sacctmgr -n list cluster format=cluster 2>/dev/null | grep -q drrtest || die "slurmdbd" "$DIR/log/slurmdbd.log"

slurmctld -i </dev/null >/dev/null 2>&1 || die "slurmctld" "$DIR/log/slurmctld.log"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
slurmd -N "$NODE" </dev/null >/dev/null 2>&1 || die "slurmd" "$DIR/log/slurmd.log"
for _ in $(seq 150); do
  [ "$(sinfo -h -n "$NODE" -p cpu -o %T 2>/dev/null)" = idle ] && { echo "SLURM up: SLURM_CONF=$SLURM_CONF"; exit 0; }
  sleep 0.2
done
sinfo >&2 || true
die "node $NODE never idle" "$DIR/log/slurmd.log"
