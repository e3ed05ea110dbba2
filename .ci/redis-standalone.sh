#!/usr/bin/env bash
#
# .ci/redis-standalone.sh start|stop|kill|restart|status
#
# Controls the standalone test Redis (127.0.0.1:6390) that .ci/services.sh set
# up, so a test can take it down and bring it back (e.g. the reliability test):
#   start    start it from its config (daemonized); wait until PING -> PONG
#   stop     SHUTDOWN NOSAVE; wait until the process is gone
#   kill     SIGKILL (simulates a crash); wait until the process is gone
#   restart  stop, then start
#   status   exit 0 if it answers PING, 1 otherwise
# Exit status 0 on success; on failure it prints the server log to stderr.
# No data survives a stop (no persistence is configured).
#
# Uses ${PENCHANT_CI_DIR:-/tmp/penchant-ci}/redis-6390/redis.conf (written by
# .ci/services.sh), redis-server from $PENCHANT_TEST_REDIS_SERVER or PATH, and
# waits at most ${PENCHANT_CI_TIMEOUT:-60} seconds.
set -euo pipefail

port="${PENCHANT_TEST_REDIS_PORT:-6390}"
dir="${PENCHANT_CI_DIR:-/tmp/penchant-ci}/redis-$port"
conf="$dir/redis.conf"
pidfile="$dir/redis.pid"
log="$dir/redis.log"
timeout="${PENCHANT_CI_TIMEOUT:-60}"
server="${PENCHANT_TEST_REDIS_SERVER:-$(command -v redis-server || true)}"
cli="$(command -v redis-cli || true)"

say() { printf '[redis-standalone] %s\n' "$*" >&2; }
fail() {
    say "ERROR: $*"
    if [ -f "$log" ]; then
        say "----- last lines of $log -----"
        tail -n 40 "$log" >&2 || true
    fi
    exit 1
}

# live and not a zombie (PID 1 on these machines may reap daemons late)
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

ping_ok() { [ "$("$cli" -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; }

# pid from the pidfile, if it is a live redis-server
live_pid() {
    local pid comm
    [ -f "$pidfile" ] || return 1
    pid="$(head -n1 "$pidfile" 2>/dev/null | tr -dc '0-9')"
    [ -n "$pid" ] && alive "$pid" || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    case "$comm" in *redis*) echo "$pid" ;; *) return 1 ;; esac
}

wait_gone() {
    local pid="$1" deadline=$((SECONDS + timeout))
    while alive "$pid"; do
        [ "$SECONDS" -lt "$deadline" ] || fail "redis-server pid $pid still alive after ${timeout}s"
        sleep 0.05
    done
    rm -f "$pidfile"
}

do_start() {
    [ -n "$server" ] || fail "redis-server not found"
    [ -n "$cli" ] || fail "redis-cli not found"
    [ -f "$conf" ] || fail "no $conf: run .ci/services.sh first"
    # already running (maybe still loading): only wait for it
    if ! live_pid >/dev/null; then
        "$server" "$conf" >&2 || fail "redis-server $conf exited with an error"
    fi
    local deadline=$((SECONDS + timeout))
    until ping_ok; do
        [ "$SECONDS" -lt "$deadline" ] || fail "no PONG from 127.0.0.1:$port within ${timeout}s"
        sleep 0.05
    done
}

do_stop() {
    local pid
    pid="$(live_pid)" || { rm -f "$pidfile"; return 0; }
    "$cli" -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid"
}

do_kill() {
    local pid
    pid="$(live_pid)" || { rm -f "$pidfile"; return 0; }
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid"
}

case "${1:-}" in
    start) do_start ;;
    stop) do_stop ;;
    kill) do_kill ;;
    restart) do_stop; do_start ;;
    status) ping_ok ;;
    *)
        echo "usage: $0 start|stop|kill|restart|status" >&2
        exit 2
        ;;
esac
