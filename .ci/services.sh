#!/usr/bin/env bash
#
# .ci/services.sh -- install and start the servers penchant's test suite needs.
#
# USAGE
#   From CI (.ci/run):
#       source .ci/services.sh
#       penchant_start_services        # returns non-zero on failure
#   By hand (a developer):
#       eval "$(bash .ci/services.sh)"  # start, then export the variables below
#       bash .ci/services.sh env        # only print the export lines
#       bash .ci/services.sh stop       # or: bash .ci/stop-services.sh
#
# WHAT IT STARTS (all bound to 127.0.0.1 only, no persistence, daemonized,
# everything under the private dir ${PENCHANT_CI_DIR:-/tmp/penchant-ci}):
#   - a standalone Redis on port 6390
#   - a Redis Cluster of 3 masters, no replicas, on ports 7101 7102 7103
#   - a PostgreSQL server on port 5433 (trust auth on loopback, fsync=off)
#     with an empty database `penchant_test`
# Missing packages (redis-server, postgresql) are installed from Debian with
# apt-get. No systemd/service is used. Re-running it first stops and wipes any
# instances it started before in the same private dir, then starts fresh.
#
# VARIABLES EXPORTED
#   PENCHANT_TEST_REDIS_URL=redis://127.0.0.1:6390/0
#   PENCHANT_TEST_REDIS_CLUSTER_URL=redis://127.0.0.1:7101
#   PENCHANT_TEST_REDIS_CLUSTER_NODES=127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
#   PENCHANT_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5433/penchant_test
#   PENCHANT_TEST_REDIS_SERVER   absolute path of redis-server
#   PENCHANT_TEST_REDIS_PORT     6390 (the standalone Redis)
#   PENCHANT_TEST_REDIS_CONF     its config file (daemonize yes, so
#                                `$PENCHANT_TEST_REDIS_SERVER $PENCHANT_TEST_REDIS_CONF`
#                                starts it again in the background)
#   PENCHANT_TEST_REDIS_CTL      absolute path of .ci/redis-standalone.sh
#   PENCHANT_CI_DIR              the private runtime dir (logs are there)
#
# RESTARTING THE STANDALONE REDIS (for the reliability test)
#   "$PENCHANT_TEST_REDIS_CTL" kill      # SIGKILL, like a crash
#   "$PENCHANT_TEST_REDIS_CTL" stop      # SHUTDOWN NOSAVE, waits until gone
#   "$PENCHANT_TEST_REDIS_CTL" start     # starts it, waits until PING answers
#   "$PENCHANT_TEST_REDIS_CTL" restart   # stop + start
#   Each exits 0 on success, non-zero (with the server log) on failure.
#   e.g. subprocess.run([os.environ["PENCHANT_TEST_REDIS_CTL"], "kill"], check=True)
#   The data is NOT kept across a restart (no persistence).
#
# KNOBS (environment)
#   PENCHANT_CI_DIR       private runtime dir (default /tmp/penchant-ci); the
#                         `postgres` OS user must be able to reach it, so do not
#                         put it under /root.
#   PENCHANT_CI_TIMEOUT   seconds to wait for each server (default 60)
#   PENCHANT_CI_PORT_OFFSET  added to every port above (default 0), so that two runs
#                         can share a machine
#   PENCHANT_PG_BIN       PostgreSQL bin dir (default: newest
#                         /usr/lib/postgresql/*/bin that has a server)
#
# Everything happens in a child `bash` process with `set -euo pipefail`, so
# sourcing this file changes no shell option or trap of the caller, and errors
# are caught even if the caller runs `penchant_start_services || ...`.

_PENCHANT_SERVICES_SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
_PENCHANT_CI_SRC_DIR="$(dirname "$_PENCHANT_SERVICES_SELF")"

# ---------------------------------------------------------------------------
# Public functions (safe to call from a sourcing shell)
# ---------------------------------------------------------------------------

# Start everything and export the PENCHANT_TEST_* variables in this shell.
penchant_start_services() {
    bash "$_PENCHANT_SERVICES_SELF" __start || {
        echo "penchant services: FAILED to start (see messages above)" >&2
        return 1
    }
    local _env
    _env="$(bash "$_PENCHANT_SERVICES_SELF" env)" || return 1
    eval "$_env"
}

# Stop everything that a previous start left in the private dir.
penchant_stop_services() {
    bash "$_PENCHANT_SERVICES_SELF" __stop
}

# ---------------------------------------------------------------------------
# Internals (run in a child bash with set -euo pipefail)
# ---------------------------------------------------------------------------

_pcs_setup() {
    PCS_DIR="${PENCHANT_CI_DIR:-/tmp/penchant-ci}"
    PCS_TIMEOUT="${PENCHANT_CI_TIMEOUT:-60}"
    # PENCHANT_CI_PORT_OFFSET shifts every port, so that two runs can share a machine.
    local off="${PENCHANT_CI_PORT_OFFSET:-0}"
    PCS_REDIS_PORT=$((6390 + off))
    PCS_CLUSTER_PORTS=($((7101 + off)) $((7102 + off)) $((7103 + off)))
    PCS_PG_PORT=$((5433 + off))
    PCS_PG_DB=penchant_test
    PCS_PG_DIR="$PCS_DIR/pg"             # owned by postgres; socket + log here
    PCS_PG_DATA="$PCS_PG_DIR/data"
    PCS_PG_LOG="$PCS_PG_DIR/postgres.log"
    case "$PCS_DIR" in
        /*) ;;
        *) _pcs_die "PENCHANT_CI_DIR must be an absolute path (got '$PCS_DIR')" ;;
    esac
    [ "$PCS_DIR" != / ] || _pcs_die "PENCHANT_CI_DIR must not be /"
}

_pcs_log() { printf '[services] %s\n' "$*" >&2; }
_pcs_die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# Print a server log to stderr (for failures).
_pcs_show_log() {
    local f="$1"
    if [ -f "$f" ]; then
        printf '[services] ----- last lines of %s -----\n' "$f" >&2
        tail -n 60 "$f" >&2 || true
        printf '[services] ----- end of %s -----\n' "$f" >&2
    else
        printf '[services] (no log file %s)\n' "$f" >&2
    fi
}

# Newest /usr/lib/postgresql/N/bin that holds a server (client-only packages
# also create such dirs, without initdb/postgres).
_pcs_find_pg_bin() {
    if [ -n "${PENCHANT_PG_BIN:-}" ]; then
        echo "$PENCHANT_PG_BIN"
        return 0
    fi
    local d found=""
    while IFS= read -r d; do
        if [ -d "$d" ] && [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            found="$d"
        fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
    echo "$found"
}

_pcs_have_redis() {
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1
}

_pcs_have_postgres() {
    local bin
    bin="$(_pcs_find_pg_bin)"
    [ -n "$bin" ] || return 1
    [ -x "$bin/psql" ] && [ -x "$bin/pg_isready" ] || return 1
    id -u postgres >/dev/null 2>&1
}

# Install redis-server / postgresql (and openssl) from Debian if (and only if) missing.
_pcs_install() {
    local pkgs=()
    _pcs_have_redis || pkgs+=(redis-server redis-tools)
    _pcs_have_postgres || pkgs+=(postgresql)
    command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)  # the TLS tests' certificate
    if [ "${#pkgs[@]}" -eq 0 ]; then
        _pcs_log "redis-server, postgresql and openssl already installed"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || _pcs_die "need root to apt-get install ${pkgs[*]}"
    command -v apt-get >/dev/null 2>&1 || _pcs_die "no apt-get: install ${pkgs[*]} by hand"
    _pcs_log "installing from Debian: ${pkgs[*]}"

    # Keep the packages' maintainer scripts from starting their own daemons
    # (system redis on 6379, the 'main' PostgreSQL cluster on 5432): with no
    # init system they are not wanted. Only if no policy-rc.d exists already.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi

    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -q >&2 || rc=$?
    if [ "$rc" -eq 0 ]; then
        apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${pkgs[@]}" >&2 || rc=$?
    fi
    if [ "$added_policy" -eq 1 ]; then rm -f "$policy"; fi
    [ "$rc" -eq 0 ] || _pcs_die "apt-get failed (exit $rc) installing ${pkgs[*]}"

    _pcs_have_redis || _pcs_die "redis-server/redis-cli still missing after install"
    _pcs_have_postgres || _pcs_die "PostgreSQL server still missing after install (no /usr/lib/postgresql/*/bin with postgres+initdb+pg_ctl+psql+pg_isready, or no postgres user)"
}

# Is process $1 alive and not a zombie? (PID 1 on these machines may reap
# daemonized children late; a zombie still passes kill -0.)
_pcs_alive() {
    kill -0 "$1" 2>/dev/null || return 1
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Is $1 a live process whose command name contains $2?
_pcs_pid_is() {
    local pid="$1" name="$2" comm
    [ -n "$pid" ] && [ "$pid" -gt 0 ] 2>/dev/null || return 1
    _pcs_alive "$pid" || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    case "$comm" in *"$name"*) return 0 ;; esac
    return 1
}

# Kill the redis-server whose pid is in pidfile $1 (TERM, then KILL).
_pcs_kill_redis_pidfile() {
    local pidfile="$1" pid
    [ -f "$pidfile" ] || return 0
    pid="$(head -n1 "$pidfile" 2>/dev/null | tr -dc '0-9')"
    if _pcs_pid_is "$pid" redis; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            _pcs_alive "$pid" || break
            sleep 0.1
        done
        if _pcs_alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$pidfile"
}

_pcs_stop_postgres() {
    local pidfile="$PCS_PG_DATA/postmaster.pid" pid bin
    [ -f "$pidfile" ] || return 0
    pid="$(head -n1 "$pidfile" 2>/dev/null | tr -dc '0-9')"
    if _pcs_pid_is "$pid" postgres; then
        bin="$(_pcs_find_pg_bin)"
        if [ -n "$bin" ]; then
            _pcs_as_postgres "$bin/pg_ctl" -D "$PCS_PG_DATA" stop -m immediate -w -t 30 >&2 || true
        fi
        if _pcs_alive "$pid"; then
            kill -QUIT "$pid" 2>/dev/null || true   # immediate shutdown
            for _ in $(seq 1 100); do
                _pcs_alive "$pid" || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
}

# Stop all our servers and remove the dirs this script creates.
_pcs_stop_all() {
    local p
    _pcs_kill_redis_pidfile "$PCS_DIR/redis-$PCS_REDIS_PORT/redis.pid"
    for p in "${PCS_CLUSTER_PORTS[@]}"; do
        _pcs_kill_redis_pidfile "$PCS_DIR/redis-$p/redis.pid"
    done
    _pcs_stop_postgres
    rm -rf "$PCS_DIR/redis-$PCS_REDIS_PORT" "$PCS_PG_DIR" "$PCS_DIR/redis-cluster-create.log"
    for p in "${PCS_CLUSTER_PORTS[@]}"; do
        rm -rf "$PCS_DIR/redis-$p"
    done
}

# Run a command as the postgres OS user, from a dir it can enter, in a locale
# that exists on every Debian 12 (C.UTF-8 is built into glibc).
_pcs_as_postgres() {
    (cd / && LC_ALL=C.UTF-8 LANG=C.UTF-8 runuser -u postgres -- "$@")
}

# Fail if something (not ours: ours were stopped) already listens on port $1.
_pcs_port_free_or_die() {
    local port="$1"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        _pcs_die "port $port on 127.0.0.1 is already in use by another process (not started from $PCS_DIR); stop it first"
    fi
}

# Write a redis.conf for port $1 in $PCS_DIR/redis-$1; extra lines on stdin.
_pcs_write_redis_conf() {
    local port="$1" dir="$PCS_DIR/redis-$1"
    mkdir -p "$dir"
    {
        echo "# written by .ci/services.sh"
        echo "port $port"
        echo "bind 127.0.0.1"
        echo "daemonize yes"
        echo "pidfile $dir/redis.pid"
        echo "logfile $dir/redis.log"
        echo "dir $dir"
        echo 'save ""'
        echo "appendonly no"
        cat
    } >"$dir/redis.conf"
}

_pcs_wait_redis() {
    local port="$1" log="$2" deadline=$((SECONDS + PCS_TIMEOUT))
    until [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            _pcs_show_log "$log"
            _pcs_die "Redis on 127.0.0.1:$port did not answer PING within ${PCS_TIMEOUT}s"
        fi
        sleep 0.1
    done
}

_pcs_start_redis_standalone() {
    _pcs_write_redis_conf "$PCS_REDIS_PORT" </dev/null
    PENCHANT_CI_DIR="$PCS_DIR" PENCHANT_CI_TIMEOUT="$PCS_TIMEOUT" \
        PENCHANT_TEST_REDIS_PORT="$PCS_REDIS_PORT" \
        PENCHANT_TEST_REDIS_SERVER="$(command -v redis-server)" \
        bash "$_PENCHANT_CI_SRC_DIR/redis-standalone.sh" start \
        || _pcs_die "standalone Redis on port $PCS_REDIS_PORT failed to start"
}

_pcs_start_redis_cluster() {
    local p dir nodes=() deadline state
    for p in "${PCS_CLUSTER_PORTS[@]}"; do
        dir="$PCS_DIR/redis-$p"
        _pcs_write_redis_conf "$p" <<EOF
cluster-enabled yes
cluster-config-file $dir/nodes.conf
cluster-node-timeout 5000
EOF
        if ! redis-server "$dir/redis.conf" >&2; then
            _pcs_show_log "$dir/redis.log"
            _pcs_die "redis-server on port $p failed to start"
        fi
        nodes+=("127.0.0.1:$p")
    done
    for p in "${PCS_CLUSTER_PORTS[@]}"; do
        _pcs_wait_redis "$p" "$PCS_DIR/redis-$p/redis.log"
    done

    _pcs_log "creating Redis Cluster ${nodes[*]}"
    if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
            >"$PCS_DIR/redis-cluster-create.log" 2>&1; then
        cat "$PCS_DIR/redis-cluster-create.log" >&2
        _pcs_die "redis-cli --cluster create failed"
    fi

    deadline=$((SECONDS + PCS_TIMEOUT))
    for p in "${PCS_CLUSTER_PORTS[@]}"; do
        while :; do
            state="$(redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | tr -d '\r' | grep '^cluster_state:' || true)"
            [ "$state" = "cluster_state:ok" ] && break
            if [ "$SECONDS" -ge "$deadline" ]; then
                cat "$PCS_DIR/redis-cluster-create.log" >&2
                redis-cli -h 127.0.0.1 -p "$p" cluster info >&2 2>&1 || true
                _pcs_show_log "$PCS_DIR/redis-$p/redis.log"
                _pcs_die "Redis Cluster node $p not cluster_state:ok within ${PCS_TIMEOUT}s (got '${state:-nothing}')"
            fi
            sleep 0.1
        done
    done
}

_pcs_start_postgres() {
    local bin
    bin="$(_pcs_find_pg_bin)"
    [ -n "$bin" ] || _pcs_die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"

    # $PCS_DIR must be traversable by postgres; $PCS_PG_DIR is postgres' own.
    mkdir -p "$PCS_PG_DIR"
    chown postgres:postgres "$PCS_PG_DIR"
    chmod 700 "$PCS_PG_DIR"
    if ! _pcs_as_postgres test -w "$PCS_PG_DIR"; then
        _pcs_die "the postgres user cannot write $PCS_PG_DIR (is a parent dir of PENCHANT_CI_DIR=$PCS_DIR closed to other users, e.g. under /root?)"
    fi

    _pcs_log "initdb ($bin) in $PCS_PG_DATA"
    if ! _pcs_as_postgres "$bin/initdb" -D "$PCS_PG_DATA" -U postgres -A trust \
            --encoding=UTF8 --locale=C.UTF-8 --no-sync \
            >"$PCS_PG_DIR/initdb.log" 2>&1; then
        cat "$PCS_PG_DIR/initdb.log" >&2
        _pcs_die "initdb failed"
    fi

    cat >>"$PCS_PG_DATA/postgresql.conf" <<EOF

# --- added by .ci/services.sh: throwaway test server ---
listen_addresses = '127.0.0.1'
port = $PCS_PG_PORT
unix_socket_directories = '$PCS_PG_DIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    cat >"$PCS_PG_DATA/pg_hba.conf" <<'EOF'
# written by .ci/services.sh: trust on loopback only
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   trust
host    all       all   ::1/128        trust
EOF
    chown postgres:postgres "$PCS_PG_DATA/postgresql.conf" "$PCS_PG_DATA/pg_hba.conf"

    _pcs_log "starting PostgreSQL on 127.0.0.1:$PCS_PG_PORT"
    if ! _pcs_as_postgres "$bin/pg_ctl" -D "$PCS_PG_DATA" -l "$PCS_PG_LOG" \
            -w -t "$PCS_TIMEOUT" start >&2; then
        _pcs_show_log "$PCS_PG_LOG"
        _pcs_die "pg_ctl start failed"
    fi

    local deadline=$((SECONDS + PCS_TIMEOUT))
    until "$bin/pg_isready" -q -h 127.0.0.1 -p "$PCS_PG_PORT" -U postgres; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            _pcs_show_log "$PCS_PG_LOG"
            _pcs_die "PostgreSQL on 127.0.0.1:$PCS_PG_PORT not ready within ${PCS_TIMEOUT}s"
        fi
        sleep 0.1
    done

    if ! "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PCS_PG_PORT" -U postgres \
            -d postgres -c "CREATE DATABASE $PCS_PG_DB" >&2; then
        _pcs_show_log "$PCS_PG_LOG"
        _pcs_die "could not create database $PCS_PG_DB"
    fi
}

_pcs_start() {
    local t0=$SECONDS
    _pcs_install
    _pcs_log "stopping any previous instances in $PCS_DIR"
    _pcs_stop_all

    local p
    for p in "$PCS_REDIS_PORT" "${PCS_CLUSTER_PORTS[@]}" "$PCS_PG_PORT"; do
        _pcs_port_free_or_die "$p"
    done

    mkdir -p "$PCS_DIR"
    chmod 755 "$PCS_DIR"     # postgres must traverse it

    _pcs_start_redis_standalone
    _pcs_start_redis_cluster
    _pcs_start_postgres
    _pcs_log "all services up in $((SECONDS - t0))s (runtime dir $PCS_DIR)"
}

_pcs_env() {
    local redis_server
    redis_server="$(command -v redis-server || true)"
    [ -n "$redis_server" ] || _pcs_die "redis-server not found in PATH"
    local node_list="" p
    for p in "${PCS_CLUSTER_PORTS[@]}"; do
        node_list="${node_list:+$node_list,}127.0.0.1:$p"
    done
    local k v q="'"
    while read -r k v; do
        # single-quoted, so the lines are safe to eval
        printf "export %s='%s'\n" "$k" "${v//$q/$q\\$q$q}"
    done <<EOF
PENCHANT_CI_DIR $PCS_DIR
PENCHANT_TEST_REDIS_URL redis://127.0.0.1:$PCS_REDIS_PORT/0
PENCHANT_TEST_REDIS_CLUSTER_URL redis://127.0.0.1:${PCS_CLUSTER_PORTS[0]}
PENCHANT_TEST_REDIS_CLUSTER_NODES $node_list
PENCHANT_TEST_POSTGRES_URL postgresql://postgres@127.0.0.1:$PCS_PG_PORT/$PCS_PG_DB
PENCHANT_TEST_REDIS_SERVER $redis_server
PENCHANT_TEST_REDIS_PORT $PCS_REDIS_PORT
PENCHANT_TEST_REDIS_CONF $PCS_DIR/redis-$PCS_REDIS_PORT/redis.conf
PENCHANT_TEST_REDIS_CTL $_PENCHANT_CI_SRC_DIR/redis-standalone.sh
EOF
}

_pcs_main() {
    set -euo pipefail
    exec </dev/null   # CI gives no stdin; nothing here should read one
    _pcs_setup
    case "${1:-start}" in
        start)
            _pcs_start
            _pcs_env
            ;;
        __start) _pcs_start ;;
        stop | __stop)
            _pcs_stop_all
            _pcs_log "stopped (runtime dir $PCS_DIR)"
            ;;
        env) _pcs_env ;;
        *)
            echo "usage: bash $0 [start|stop|env]   or: source $0; penchant_start_services" >&2
            exit 2
            ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    _pcs_main "$@"
fi
