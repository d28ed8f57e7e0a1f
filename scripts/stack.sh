#!/usr/bin/env bash
# Local stack: PostgreSQL 15, Redis and Mosquitto as local processes on 127.0.0.1 (no system
# services), then the platform services from build/bin. Everything runs in the background with a
# pid file and a log file under the state dir; starting twice does not start a second copy.
#
# Usage: scripts/stack.sh COMMAND
#   start            infra-start, then services-start
#   stop             services-stop, then infra-stop
#   status           what runs where: pid, port, health (exit 1 if something started has died)
#   infra-start      PostgreSQL (+ database `iot`), Redis, Mosquitto; writes $IOT_STATE_DIR/env
#   infra-stop
#   services-start   the services that are built in build/bin, then waits until they are SERVING
#   services-stop    SIGTERM (drain), SIGKILL after IOT_STACK_STOP_TIMEOUT seconds
#   env              prints the export lines of the infra URLs (eval "$(scripts/stack.sh env)")
#   logs [-f] [NAME] last lines of NAME's log (all logs without NAME); -f follows
#
# Environment (defaults in brackets):
#   IOT_STATE_DIR          state: data, pid files, logs, env   [/tmp/iot-platform/dev]
#   IOT_BUILD_DIR          where bin/ and lib/ are             [<repo>/build]
#   IOT_STACK_PG_PORT      PostgreSQL port [5432]    IOT_STACK_REDIS_PORT  Redis port [6379]
#   IOT_STACK_MQTT_PORT    Mosquitto port [1883]
#     An unset port whose default is taken by another program (e.g. a system PostgreSQL) moves
#     to the next free port, with a warning; a port that is set explicitly must be free.
#   IOT_<SERVICE>_GRPC_PORT / _METRICS_PORT   service ports [50051..50055 / 9101..9105]
#   IOT_<SERVICE>_LISTEN_ADDRESS              [127.0.0.1]
#   IOT_<SERVICE>_ADDR     where the services find each other [127.0.0.1:<that service's gRPC port>]
#   secrets (IOT_SECRET_KEY, IOT_SERVICE_API_KEY, IOT_THING_MODEL_BOOTSTRAP_API_KEY, the MQTT
#     accounts IOT_DEVICE_GATEWAY_MQTT_* / IOT_RULE_FORWARDING_MQTT_*): generated once into
#     $IOT_STATE_DIR/secrets; a value in the environment wins
#   IOT_STACK_DURABLE      1: fsync on (dev data); 0: fsync/AOF off, for throwaway test data [1]
#   IOT_STACK_START_TIMEOUT  seconds to wait for readiness [60]
#   IOT_STACK_STOP_TIMEOUT   seconds to wait for a graceful stop before SIGKILL [30]
#   IOT_LOG_LEVEL          passed to the services [info]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE_DIR=${IOT_STATE_DIR:-/tmp/iot-platform/dev}
BUILD_DIR=${IOT_BUILD_DIR:-$IOT_REPO_ROOT/build}
PG_BIN=${IOT_PG_BIN:-/usr/lib/postgresql/15/bin}
DURABLE=${IOT_STACK_DURABLE:-1}
START_TIMEOUT=${IOT_STACK_START_TIMEOUT:-60}
STOP_TIMEOUT=${IOT_STACK_STOP_TIMEOUT:-30}
MOSQUITTO_CONF_SRC=$IOT_REPO_ROOT/deploy/mosquitto/mosquitto.conf

RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/logs
ENV_FILE=$STATE_DIR/env

# name  env-prefix  grpc-port  metrics-port, in start order (the gateway talks to the others).
SERVICES=(
  "thing-model THING_MODEL 50052 9102"
  "shadow SHADOW 50054 9104"
  "command-dispatch COMMAND_DISPATCH 50053 9103"
  "rule-forwarding RULE_FORWARDING 50055 9105"
  "device-gateway DEVICE_GATEWAY 50051 9101"
)
INFRA=(postgres redis mosquitto)

usage() {
  iot::usage "${BASH_SOURCE[0]}"
}

prepare_dirs() {
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  # Servers run as another user (postgres) must be able to traverse the state dir.
  chmod 755 "$STATE_DIR" "$RUN_DIR" "$LOG_DIR" 2>/dev/null || true
  load_secrets
}

# The stack's secrets, generated once per state dir (mode 600) and exported to every process:
# the device-secret encryption key (thing-model and the broker plugin), the platform's service
# credential, the bootstrap admin API key, and the broker accounts of the platform's two MQTT
# clients (device-gateway; rule-forwarding, for republish actions). A secret missing from an
# older file is added. A value already in the environment wins, so a caller can pin them.
# IOT_MQTT_SERVICE_ACCOUNTS (the broker plugin's list) is derived from the effective user names
# and passwords, so it always matches what the services present.
SECRETS_FILE=$STATE_DIR/secrets
SECRET_NAMES=(IOT_SECRET_KEY IOT_SERVICE_API_KEY IOT_THING_MODEL_BOOTSTRAP_API_KEY
  IOT_DEVICE_GATEWAY_MQTT_USERNAME IOT_DEVICE_GATEWAY_MQTT_PASSWORD
  IOT_RULE_FORWARDING_MQTT_USERNAME IOT_RULE_FORWARDING_MQTT_PASSWORD IOT_STACK_MQTT_SALT)
MQTT_CLIENT_PREFIXES=(IOT_DEVICE_GATEWAY IOT_RULE_FORWARDING)

new_secret() {
  case "$1" in
    IOT_SECRET_KEY) openssl rand -hex 32 ;;
    IOT_SERVICE_API_KEY) echo "svc_$(openssl rand -hex 24)" ;;
    IOT_THING_MODEL_BOOTSTRAP_API_KEY) echo "iot_$(openssl rand -hex 24)" ;;
    IOT_DEVICE_GATEWAY_MQTT_USERNAME) echo device-gateway ;;
    IOT_RULE_FORWARDING_MQTT_USERNAME) echo rule-forwarding ;;
    *_MQTT_PASSWORD) openssl rand -hex 24 ;;
    IOT_STACK_MQTT_SALT) openssl rand -hex 8 ;;
    *) iot::die "no generator for secret $1" ;;
  esac
}

# name:salt:sha256hex(salt+password) of each platform MQTT client, from NAME=VALUE pairs given
# as an associative array name.
service_accounts_of() {
  local -n values=$1
  local prefix user password salt=${values[IOT_STACK_MQTT_SALT]} entries=()
  for prefix in "${MQTT_CLIENT_PREFIXES[@]}"; do
    user=${values[${prefix}_MQTT_USERNAME]}
    password=${values[${prefix}_MQTT_PASSWORD]}
    entries+=("$user:$salt:$(printf '%s%s' "$salt" "$password" | sha256sum | cut -c1-64)")
  done
  (
    IFS=,
    echo "${entries[*]}"
  )
}

load_secrets() {
  local -A stored=() effective=()
  local line name changed=0
  if [[ -f "$SECRETS_FILE" ]]; then
    while IFS= read -r line; do
      [[ "$line" == *=* ]] && stored[${line%%=*}]=${line#*=}
    done <"$SECRETS_FILE"
  else
    changed=1
  fi
  for name in "${SECRET_NAMES[@]}"; do
    if [[ -z "${stored[$name]:-}" ]]; then
      stored[$name]=$(new_secret "$name")
      changed=1
    fi
  done
  local accounts
  accounts=$(service_accounts_of stored)
  [[ "${stored[IOT_MQTT_SERVICE_ACCOUNTS]:-}" == "$accounts" ]] || changed=1
  stored[IOT_MQTT_SERVICE_ACCOUNTS]=$accounts
  if ((changed)); then
    (
      umask 077
      for name in "${SECRET_NAMES[@]}" IOT_MQTT_SERVICE_ACCOUNTS; do
        echo "$name=${stored[$name]}"
      done >"$SECRETS_FILE.tmp"
      mv "$SECRETS_FILE.tmp" "$SECRETS_FILE"
    )
  fi
  local pinned_accounts=${IOT_MQTT_SERVICE_ACCOUNTS:-}
  for name in "${SECRET_NAMES[@]}"; do
    effective[$name]=${!name:-${stored[$name]}}
    [[ "$name" == IOT_STACK_* ]] || export "$name=${effective[$name]}"
  done
  export IOT_MQTT_SERVICE_ACCOUNTS=${pinned_accounts:-$(service_accounts_of effective)}
  return 0
}

pidfile() { echo "$RUN_DIR/$1.pid"; }
portfile() { echo "$RUN_DIR/$1.port"; }
logfile() { echo "$LOG_DIR/$1.log"; }
recorded_port() { cat "$(portfile "$1")" 2>/dev/null || true; }

# Command-line fragment that identifies each component's process (guards against recycled pids).
pattern_of() {
  case "$1" in
    postgres) echo "postgres" ;;
    redis) echo "redis-server" ;;
    mosquitto) echo "mosquitto" ;;
    device-sim) echo "$BUILD_DIR/bin/iot-device-sim" ;;
    alink-device) echo "deploy/demo/alink_thermostat.js" ;;
    *) echo "$BUILD_DIR/bin/$1" ;;
  esac
}

running_pid() { iot::pid_from "$(pidfile "$1")" "$(pattern_of "$1")"; }
any_service_running() {
  local entry
  for entry in "${SERVICES[@]}"; do
    running_pid "${entry%% *}" >/dev/null && return 0
  done
  return 1
}

# choose_port NAME ENV_VAR DEFAULT: the port to start NAME on: ENV_VAR's value when set; else
# the port NAME had in this state dir when it is free (a component restarted after a crash
# comes back where the services and the env file expect it); else DEFAULT or the next free one.
# When a service of this state dir still runs, NAME must come back on its recorded port: on
# another one the running services would never find it, so a taken port fails the start.
choose_port() {
  local name=$1 var=$2 default=$3 port recorded
  recorded=$(recorded_port "$name")
  if [[ -n "${!var:-}" ]]; then
    port=${!var}
    [[ "$port" =~ ^[0-9]+$ ]] || iot::die "$var=$port is not a port number"
    iot::port_open "$port" && iot::die "$name: port $port ($var) is already in use by another program"
  elif [[ "$recorded" =~ ^[0-9]+$ ]] && ! iot::port_open "$recorded"; then
    port=$recorded
  elif [[ "$recorded" =~ ^[0-9]+$ ]] && any_service_running; then
    iot::die "$name: its port $recorded was taken by another program while it was down, and the running services expect it there; stop the stack (scripts/stack.sh stop) or free the port"
  else
    port=$(iot::free_port "$default") || iot::die "$name: no free port near $default"
    if [[ "$port" != "$default" ]]; then
      iot::warn "$name: port $default is taken by another program; using $port (set $var to choose)"
    fi
  fi
  echo "$port"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

as_postgres() {
  if iot::is_root; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

# The PostgreSQL directory: inside the state dir when user postgres can reach it there (a state
# dir under /root is not), else a fixed directory under /tmp derived from the state dir.
pg_root() {
  local dir=$STATE_DIR/postgres
  if iot::is_root; then
    mkdir -p "$dir"
    chown postgres:postgres "$dir"
    if ! as_postgres test -w "$dir" -a -x "$dir"; then
      dir=/tmp/iot-platform-pg/$(printf '%s' "$STATE_DIR" | md5sum | cut -c1-12)
      mkdir -p "$dir"
      chmod 755 /tmp/iot-platform-pg
      chown postgres:postgres "$dir"
    fi
  else
    mkdir -p "$dir"
  fi
  echo "$dir"
}

pg_start() {
  local pid port root
  if pid=$(running_pid postgres); then
    iot::info "postgres already running (pid $pid, port $(recorded_port postgres))"
    return 0
  fi
  [[ -x "$PG_BIN/postgres" ]] || iot::die "PostgreSQL not found in $PG_BIN (run scripts/install-deps.sh)"
  port=$(choose_port postgres IOT_STACK_PG_PORT 5432)
  root=$(pg_root)
  if [[ ! -f "$root/data/PG_VERSION" ]]; then
    iot::info "postgres: initdb in $root/data"
    rm -rf "$root/data"
    local sync=()
    [[ "$DURABLE" == 1 ]] || sync=(--no-sync)
    as_postgres "$PG_BIN/initdb" -D "$root/data" -A trust -U postgres -E UTF8 --locale=C \
      "${sync[@]}" >>"$(logfile postgres)" 2>&1 ||
      iot::die "initdb failed; see $(logfile postgres)"
  fi
  remove_stale_pg_locks "$root/data" "$root/socket"
  as_postgres mkdir -p "$root/socket"
  local opts=(-c listen_addresses=127.0.0.1 -c max_connections=300)
  if [[ "$DURABLE" != 1 ]]; then
    opts+=(-c fsync=off -c synchronous_commit=off -c full_page_writes=off)
  fi
  iot::info "postgres: starting on 127.0.0.1:$port (data $root/data)"
  echo "$port" >"$(portfile postgres)"
  # setpriv execs (no intermediate process), so the pid file names the postmaster itself.
  if iot::is_root; then
    iot::spawn "$(pidfile postgres)" "$(logfile postgres)" \
      setpriv --reuid=postgres --regid=postgres --init-groups -- \
      "$PG_BIN/postgres" -D "$root/data" -p "$port" -k "$root/socket" "${opts[@]}"
  else
    iot::spawn "$(pidfile postgres)" "$(logfile postgres)" \
      "$PG_BIN/postgres" -D "$root/data" -p "$port" -k "$root/socket" "${opts[@]}"
  fi
  wait_ready postgres pg_isready -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 2
  # The services apply their own migrations inside database `iot`; it must exist.
  local exists
  exists=$(psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAqc \
    "SELECT 1 FROM pg_database WHERE datname = 'iot'")
  if [[ "$exists" != 1 ]]; then
    psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc 'CREATE DATABASE iot' >/dev/null
    iot::info "postgres: created database iot"
  fi
}

# A postmaster that was killed (SIGKILL, OOM) leaves its lock files behind: postmaster.pid in
# the data directory and one per socket (.s.PGSQL.PORT.lock). PostgreSQL takes a lock as stale
# when its pid no longer exists, but a killed postmaster whose parent has not reaped it yet (an
# init that reaps lazily) is a zombie, which kill(pid, 0) still finds: the restart then fails
# with "lock file ... already exists". The locks are removed when their postmaster is dead or a
# zombie and no process of that server is left (every PostgreSQL process runs in the data
# directory).
remove_stale_pg_locks() {
  local data=$1 sockets=$2 owner proc lock
  [[ -f "$data/postmaster.pid" ]] || return 0
  read -r owner <"$data/postmaster.pid" || return 0
  [[ "$owner" =~ ^[0-9]+$ ]] || return 0
  iot::alive "$owner" && return 0
  data=$(realpath "$data")
  for proc in /proc/[0-9]*; do
    if [[ "$(readlink "$proc/cwd" 2>/dev/null)" == "$data" ]] && iot::alive "${proc#/proc/}"; then
      iot::warn "postgres: process ${proc#/proc/} of the dead postmaster $owner is still there; leaving its locks"
      return 0
    fi
  done
  iot::warn "postgres: removing the locks of postmaster $owner, which is gone"
  rm -f "$data/postmaster.pid"
  for lock in "$sockets"/.s.PGSQL.*.lock; do
    [[ -f "$lock" ]] || continue
    read -r owner <"$lock" || continue
    [[ "$owner" =~ ^[0-9]+$ ]] && ! iot::alive "$owner" && rm -f "$lock"
  done
  return 0
}

pg_stop() {
  local pid
  pid=$(running_pid postgres) || {
    rm -f "$(pidfile postgres)"
    return 0
  }
  iot::info "postgres: stopping (pid $pid)"
  # SIGINT = fast shutdown (SIGTERM would wait for every client to disconnect); SIGQUIT = immediate.
  iot::terminate "$pid" postgres "$STOP_TIMEOUT" INT
  rm -f "$(pidfile postgres)"
}

# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------

redis_start() {
  local pid port dir=$STATE_DIR/redis
  if pid=$(running_pid redis); then
    iot::info "redis already running (pid $pid, port $(recorded_port redis))"
    return 0
  fi
  port=$(choose_port redis IOT_STACK_REDIS_PORT 6379)
  mkdir -p "$dir"
  local aof=yes
  [[ "$DURABLE" == 1 ]] || aof=no
  cat >"$dir/redis.conf" <<EOF
# Generated by scripts/stack.sh; edits are overwritten on the next start.
bind 127.0.0.1
port $port
protected-mode yes
daemonize no
logfile ""
dir $dir
# Durability comes from the append-only file, fsynced once a second; no RDB snapshots.
appendonly $aof
appendfsync everysec
save ""
EOF
  iot::info "redis: starting on 127.0.0.1:$port (dir $dir)"
  echo "$port" >"$(portfile redis)"
  iot::spawn "$(pidfile redis)" "$(logfile redis)" redis-server "$dir/redis.conf"
  wait_ready redis redis_ping "$port"
}

redis_ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]; }

# ---------------------------------------------------------------------------------------------
# Mosquitto
# ---------------------------------------------------------------------------------------------

# Writes the effective broker config for the local stack from deploy/mosquitto/mosquitto.conf.
mosquitto_conf() {
  local port=$1 dir=$2 out=$3 redis_url=$4
  local plugin=$BUILD_DIR/lib/libiot_auth.so
  sed -E \
    -e "s|^listener 1883[[:space:]]*\$|listener $port 127.0.0.1|" \
    -e "s|^persistence_location .*|persistence_location $dir/|" \
    -e "s|^plugin[[:space:]]+[^[:space:]]*/libiot_auth\\.so[[:space:]]*\$|plugin $plugin|" \
    -e "s|^(plugin_opt_[A-Za-z0-9_]+)[[:space:]]+redis://.*|\\1 $redis_url|" \
    -e '/^user[[:space:]]/d' \
    "$MOSQUITTO_CONF_SRC" >"$out.tmp"
  {
    echo
    echo "# Appended by scripts/stack.sh: run as the invoking user (root does not drop to user"
    echo "# mosquitto), so the broker can use the state dir and the build tree's plugin as they are."
    echo "user $(id -un)"
  } >>"$out.tmp"
  grep -q "^listener $port 127.0.0.1\$" "$out.tmp" ||
    iot::die "$MOSQUITTO_CONF_SRC has no 'listener 1883' line for stack.sh to rewrite"
  if grep -q "^plugin " "$out.tmp" && [[ ! -f "$plugin" ]]; then
    iot::die "the broker config loads the iot_auth plugin but $plugin is not built"
  fi
  mv "$out.tmp" "$out"
}

mosquitto_start() {
  local pid port dir=$STATE_DIR/mosquitto
  if pid=$(running_pid mosquitto); then
    iot::info "mosquitto already running (pid $pid, port $(recorded_port mosquitto))"
    return 0
  fi
  port=$(choose_port mosquitto IOT_STACK_MQTT_PORT 1883)
  mkdir -p "$dir"
  local redis_port
  redis_port=$(recorded_port redis)
  mosquitto_conf "$port" "$dir" "$dir/mosquitto.conf" "redis://127.0.0.1:${redis_port:-6379}/0"
  iot::info "mosquitto: starting on 127.0.0.1:$port (config $dir/mosquitto.conf)"
  echo "$port" >"$(portfile mosquitto)"
  # A sanitizer build's plugin needs the sanitizer runtime loaded first in the (uninstrumented)
  # broker: cmake/IotSanitizers.cmake names it in lib/sanitizer-preload.
  local preload=()
  if [[ -s "$BUILD_DIR/lib/sanitizer-preload" ]]; then
    # Debian's mosquitto has no frame pointers: the slow unwinder gives its leak reports whole
    # stacks, which .sanitizers/lsan.supp matches by mosquitto's own function names.
    preload=(env "LD_PRELOAD=$(cat "$BUILD_DIR/lib/sanitizer-preload")"
      "ASAN_OPTIONS=${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0")
  fi
  iot::spawn "$(pidfile mosquitto)" "$(logfile mosquitto)" "${preload[@]}" /usr/sbin/mosquitto -c "$dir/mosquitto.conf"
  wait_ready mosquitto iot::port_open "$port"
}

# ---------------------------------------------------------------------------------------------
# Common start/stop
# ---------------------------------------------------------------------------------------------

# wait_ready NAME CHECK...: waits until CHECK succeeds; fails early (with the log's tail) when
# the process dies.
wait_ready() {
  local name=$1
  shift
  local deadline=$((SECONDS + START_TIMEOUT))
  while ! "$@" >/dev/null 2>&1; do
    if ! running_pid "$name" >/dev/null; then
      tail -n 30 "$(logfile "$name")" >&2 || true
      iot::die "$name exited during start-up; log: $(logfile "$name")"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$(logfile "$name")" >&2 || true
      iot::die "$name not ready after ${START_TIMEOUT}s; log: $(logfile "$name")"
    fi
    sleep 0.2
  done
  iot::info "$name: ready"
}

stop_component() {
  local name=$1 pid
  if pid=$(running_pid "$name"); then
    iot::info "$name: stopping (pid $pid)"
    iot::terminate "$pid" "$name" "$STOP_TIMEOUT" TERM
  fi
  rm -f "$(pidfile "$name")"
}

write_env() {
  local pg redis mqtt
  pg=$(recorded_port postgres)
  redis=$(recorded_port redis)
  mqtt=$(recorded_port mosquitto)
  cat >"$ENV_FILE.tmp" <<EOF
export IOT_PG_URL=postgresql://postgres@127.0.0.1:$pg/iot
export IOT_REDIS_URL=redis://127.0.0.1:$redis/0
export IOT_MQTT_URL=mqtt://127.0.0.1:$mqtt
EOF
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

infra_start() {
  prepare_dirs
  pg_start
  redis_start
  mosquitto_start
  write_env
  iot::info "infra URLs (also in $ENV_FILE):"
  cat "$ENV_FILE"
}

infra_stop() {
  [[ -d "$RUN_DIR" ]] || return 0
  stop_component mosquitto
  stop_component redis
  pg_stop
}

# ---------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------

service_ports() { # NAME PREFIX GRPC METRICS -> "grpc metrics"
  local grpc_var="IOT_${2}_GRPC_PORT" metrics_var="IOT_${2}_METRICS_PORT"
  echo "${!grpc_var:-$3} ${!metrics_var:-$4}"
}

# IOT_<SERVICE>_ADDR of every service, from its gRPC port here (a caller's value wins), so that
# the services find each other when ports are moved (as compose and Helm wire them by name).
export_peer_addresses() {
  local entry name prefix grpc metrics ports addr_var
  for entry in "${SERVICES[@]}"; do
    read -r name prefix grpc metrics <<<"$entry"
    read -r grpc metrics <<<"$(service_ports "$name" "$prefix" "$grpc" "$metrics")"
    # A running service keeps the port it was started on.
    if running_pid "$name" >/dev/null && ports=$(cat "$(portfile "$name")" 2>/dev/null); then
      grpc=${ports%% *}
    fi
    addr_var="IOT_${prefix}_ADDR"
    export "$addr_var=${!addr_var:-127.0.0.1:$grpc}"
  done
}

services_start() {
  prepare_dirs
  [[ -f "$ENV_FILE" ]] || iot::die "infra is not started (no $ENV_FILE): run scripts/stack.sh infra-start"
  # shellcheck source=/dev/null
  source "$ENV_FILE"
  export IOT_LOG_LEVEL=${IOT_LOG_LEVEL:-info}
  export_peer_addresses
  local entry name prefix grpc metrics pid started=() addresses=() missing=()
  for entry in "${SERVICES[@]}"; do
    read -r name prefix grpc metrics <<<"$entry"
    read -r grpc metrics <<<"$(service_ports "$name" "$prefix" "$grpc" "$metrics")"
    if pid=$(running_pid "$name"); then
      iot::info "$name already running (pid $pid)"
      addresses+=("127.0.0.1:$grpc")
      continue
    fi
    local bin=$BUILD_DIR/bin/$name
    if [[ ! -x "$bin" ]]; then
      missing+=("$name")
      continue
    fi
    local port
    for port in "$grpc" "$metrics"; do
      iot::port_open "$port" && iot::die "$name: port $port is in use by another program"
    done
    echo "$grpc $metrics" >"$(portfile "$name")"
    iot::info "$name: starting (gRPC 127.0.0.1:$grpc, metrics :$metrics)"
    (
      export "IOT_${prefix}_GRPC_PORT=$grpc" "IOT_${prefix}_METRICS_PORT=$metrics"
      # Loopback only, like the infra, unless the caller chose otherwise.
      listen_var="IOT_${prefix}_LISTEN_ADDRESS"
      export "$listen_var=${!listen_var:-127.0.0.1}"
      iot::spawn "$(pidfile "$name")" "$(logfile "$name")" "$bin"
    )
    started+=("$name")
    addresses+=("127.0.0.1:$grpc")
  done
  if ((${#missing[@]})); then
    iot::warn "not built, not started: ${missing[*]} (build: cmake --build --preset dev)"
  fi
  ((${#addresses[@]})) || return 0
  wait_services_serving "${started[@]}"
}

# Waits until every running service answers gRPC health SERVING; fails early if one dies.
wait_services_serving() {
  local names=("$@") health=$BUILD_DIR/bin/iot-health
  local deadline=$((SECONDS + START_TIMEOUT)) name addresses=() entry prefix grpc metrics
  ((${#names[@]})) || return 0
  for entry in "${SERVICES[@]}"; do
    read -r name prefix grpc metrics <<<"$entry"
    [[ " ${names[*]} " == *" $name "* ]] || continue
    addresses+=("127.0.0.1:$(cut -d' ' -f1 "$(portfile "$name")")")
  done
  iot::info "waiting for ${names[*]} to be SERVING (up to ${START_TIMEOUT}s)"
  while true; do
    for name in "${names[@]}"; do
      if ! running_pid "$name" >/dev/null; then
        tail -n 30 "$(logfile "$name")" >&2 || true
        iot::die "$name exited during start-up; log: $(logfile "$name")"
      fi
    done
    if [[ -x "$health" ]]; then
      "$health" -q --timeout 2 "${addresses[@]}" && break
    else
      local all=1 a
      for a in "${addresses[@]}"; do iot::port_open "${a##*:}" || all=0; done
      ((all)) && break
    fi
    if ((SECONDS >= deadline)); then
      if [[ -x "$health" ]]; then "$health" --timeout 2 "${addresses[@]}" >&2 || true; fi
      iot::die "services not SERVING after ${START_TIMEOUT}s; logs in $LOG_DIR"
    fi
    sleep 0.5
  done
  iot::info "services SERVING: ${names[*]}"
}

services_stop() {
  [[ -d "$RUN_DIR" ]] || return 0
  local i entry name pids=() names=()
  # The demo's devices (scripts/demo.sh), if any, go first.
  stop_component device-sim
  stop_component alink-device
  # Stop in reverse start order: the gateway first, so that it drains into live peers. All get
  # SIGTERM at once (each drains on its own), then each is waited for.
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    read -r name _ <<<"${SERVICES[$i]}"
    local pid
    if pid=$(running_pid "$name"); then
      iot::info "$name: stopping (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$name")
    fi
    rm -f "$(pidfile "$name")"
  done
  for i in "${!pids[@]}"; do
    iot::terminate "${pids[$i]}" "${names[$i]}" "$STOP_TIMEOUT" TERM
  done
}

# ---------------------------------------------------------------------------------------------
# status / logs
# ---------------------------------------------------------------------------------------------

status() {
  local rc=0 name pid port state health entry prefix grpc metrics
  printf '%-17s %-8s %-22s %-8s %s\n' NAME PID ADDRESS STATE HEALTH
  for name in "${INFRA[@]}"; do
    port=$(recorded_port "$name")
    health=-
    if pid=$(running_pid "$name"); then
      state=running
      health=not-ready
      case "$name" in
        postgres) if pg_isready -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 2; then health=ready; fi ;;
        redis) if redis_ping "$port"; then health=ready; fi ;;
        mosquitto) if iot::port_open "$port"; then health=ready; fi ;;
      esac
    elif [[ -f "$(pidfile "$name")" ]]; then
      pid=- state=DEAD rc=1
    else
      pid=- state=stopped
    fi
    printf '%-17s %-8s %-22s %-8s %s\n' "$name" "$pid" "${port:+127.0.0.1:$port}" "$state" "$health"
  done
  for entry in "${SERVICES[@]}"; do
    read -r name prefix grpc metrics <<<"$entry"
    local ports
    ports=$(cat "$(portfile "$name")" 2>/dev/null || true)
    [[ -n "$ports" ]] && read -r grpc metrics <<<"$ports"
    health=-
    if pid=$(running_pid "$name"); then
      state=running
      if [[ -x "$BUILD_DIR/bin/iot-health" ]]; then
        health=$("$BUILD_DIR/bin/iot-health" --timeout 2 "127.0.0.1:$grpc" 2>&1 | cut -d' ' -f2-) || true
      elif iot::port_open "$grpc"; then
        health="port open (no iot-health)"
      else
        health="port closed"
      fi
      health="$health metrics=:$metrics"
    elif [[ -f "$(pidfile "$name")" ]]; then
      pid=- state=DEAD rc=1
    elif [[ -x "$BUILD_DIR/bin/$name" ]]; then
      pid=- state=stopped
    else
      pid=- state=stopped health="(not built)"
    fi
    printf '%-17s %-8s %-22s %-8s %s\n' "$name" "$pid" "127.0.0.1:$grpc" "$state" "$health"
  done
  # The demo's simulated devices (scripts/demo.sh), when it was started.
  if pid=$(running_pid device-sim); then
    printf '%-17s %-8s %-22s %-8s %s\n' device-sim "$pid" - running "scripts/demo.sh status"
  elif [[ -f "$(pidfile device-sim)" ]]; then
    printf '%-17s %-8s %-22s %-8s %s\n' device-sim - - DEAD "log: $(logfile device-sim)"
    rc=1
  fi
  if pid=$(running_pid alink-device); then
    printf '%-17s %-8s %-22s %-8s %s\n' alink-device "$pid" - running "scripts/demo.sh status"
  elif [[ -f "$(pidfile alink-device)" ]]; then
    printf '%-17s %-8s %-22s %-8s %s\n' alink-device - - DEAD "log: $(logfile alink-device)"
    rc=1
  fi
  echo "state dir: $STATE_DIR   logs: $LOG_DIR   env: $ENV_FILE"
  return "$rc"
}

logs() {
  local follow=() name=""
  for arg in "$@"; do
    case "$arg" in
      -f | --follow) follow=(-F) ;;
      *) name=$arg ;;
    esac
  done
  if [[ -n "$name" ]]; then
    [[ -f "$(logfile "$name")" ]] || iot::die "no log for '$name' in $LOG_DIR"
    exec tail -n "${IOT_LOG_LINES:-100}" "${follow[@]}" "$(logfile "$name")"
  fi
  compgen -G "$LOG_DIR/*.log" >/dev/null || iot::die "no logs in $LOG_DIR"
  exec tail -n "${IOT_LOG_LINES:-20}" "${follow[@]}" "$LOG_DIR"/*.log
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case "$cmd" in
  start)
    infra_start
    services_start
    ;;
  stop)
    services_stop
    infra_stop
    iot::info "stack stopped"
    ;;
  status) status ;;
  infra-start) infra_start ;;
  infra-stop) infra_stop ;;
  services-start) services_start ;;
  services-stop) services_stop ;;
  env)
    [[ -f "$ENV_FILE" ]] || iot::die "infra is not started (no $ENV_FILE)"
    cat "$ENV_FILE"
    ;;
  logs) logs "$@" ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
