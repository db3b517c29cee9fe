#!/bin/bash
# Stop the cluster tests/slurm/start.sh started from DIR: cancel its jobs, then end exactly the
# processes whose PID files it wrote (checked against their command lines, so that a PID reused by
# another process is left alone). Never by name. The folder (logs) stays; pass --purge to delete it.
#
#   tests/slurm/stop.sh [DIR] [--purge]
set -uo pipefail

PURGE=
ARGS=()
for a in "$@"; do [ "$a" = --purge ] && PURGE=1 || ARGS+=("$a"); done
DIR=${ARGS[0]:-${DRR_SLURM_DIR:-/tmp/drr-slurm}}
[ -d "$DIR/run" ] || { echo "no cluster in $DIR" >&2; exit 0; }
DIR=$(cd "$DIR" && pwd)
export SLURM_CONF="$DIR/etc/slurm.conf"

# A PID file's process, if it is still the daemon we started: `comm` must match and, for the
# daemons given the folder on their command line, the command line must name it.
alive() {  # pidfile comm
  local pid
  pid=$(cat "$DIR/run/$1" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && [ -d "/proc/$pid" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
  case "$2" in
    munged|mariadbd) tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DIR" || return 1 ;;
    *) tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$SLURM_CONF" || return 1 ;;
  esac
  echo "$pid"
}

stop() {  # pidfile:comm ... (ended together: TERM, then KILL after 10 s)
  local pids=() p pid
  for p in "$@"; do
    pid=$(alive "${p%%:*}" "${p##*:}") && { kill -TERM "$pid" 2>/dev/null; pids+=("$pid:${p##*:}"); }
  done
  for p in "${pids[@]}"; do
    pid=${p%%:*}
    for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null && echo "killed ${p##*:} ($pid) after 10 s" >&2
  done
  return 0
}

# Jobs first, while slurmctld and slurmd can still end their steps (KillWait is 5 s).
if alive slurmctld.pid slurmctld >/dev/null; then
  scancel --full --quiet --user=root 2>/dev/null
  for _ in $(seq 100); do
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && [ -z "$(ls "$DIR/spool" 2>/dev/null | grep -E '^job[0-9]+$|_[0-9]+\.[0-9]+$')" ] && break
    sleep 0.2
  done
fi
stop slurmd.pid:slurmd slurmctld.pid:slurmctld
stop slurmdbd.pid:slurmdbd
stop mariadb.pid:mariadbd munged.pid:munged
[ -n "$PURGE" ] && rm -rf "$DIR"
exit 0
