#!/bin/sh
# pitr-wait-open.sh PORT SERVICE STALL_SECONDS DATA_DIR: waits while a restored cluster replays WAL.
# Exits 0 once it is open (out of recovery); 1 when PostgreSQL stopped during the replay (the archive
# ended before the target); 2 when the replay made no progress for STALL_SECONDS. Progress is the
# replayed LSN, or before the cluster accepts connections, the segment its startup process (a child of
# this cluster's postmaster, not of another cluster's) recovers.
set -u
port=$1 service=$2 stall=$3 data=$4
last="" still=0
while :; do
    state=$(runuser -u postgres -- psql -XAtq -p "$port" -d postgres \
        -c "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()" 2>/dev/null) || state=""
    case "$state" in
        f\|*) echo "open"; exit 0 ;;
    esac
    if ! systemctl is-active --quiet "$service"; then
        echo "PostgreSQL stopped during the replay"
        exit 1
    fi
    if [ -z "$state" ] && postmaster=$(head -n 1 "$data/postmaster.pid" 2>/dev/null); then
        state=$(ps --ppid "$postmaster" -o args= 2>/dev/null | sed -n 's/.*startup recovering //p' | head -n 1)
    fi
    if [ -n "$state" ] && [ "$state" != "$last" ]; then
        last=$state still=0
    else
        still=$((still + 2))
    fi
    if [ "$still" -ge "$stall" ]; then
        echo "the replay made no progress for $stall s (last at ${last:-startup})"
        exit 2
    fi
    sleep 2
done
