# shellcheck shell=bash
# Shared shell functions for scripts/*.sh. Source it; it defines functions and IOT_REPO_ROOT only.

IOT_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export IOT_REPO_ROOT

iot::_ts() { date +%H:%M:%S; }
iot::info() { printf '[%s] %s\n' "$(iot::_ts)" "$*" >&2; }
iot::warn() { printf '[%s] WARNING: %s\n' "$(iot::_ts)" "$*" >&2; }
iot::die() {
  printf '[%s] ERROR: %s\n' "$(iot::_ts)" "$*" >&2
  exit 1
}
iot::section() { printf '\n==== %s ====\n' "$*" >&2; }

iot::is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Prefix for commands that need root: empty as root, sudo otherwise.
iot::sudo() {
  if iot::is_root; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    iot::die "need root for: $* (not root and sudo is missing)"
  fi
}

# Succeeds when something accepts TCP connections on 127.0.0.1:PORT.
iot::port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# iot::free_port PREFERRED: prints PREFERRED when nothing listens there, else the first port above
# it that is free (scanning at most 200).
iot::free_port() {
  local p=$1 last=$(($1 + 200))
  while ((p < last)); do
    if ! iot::port_open "$p"; then
      echo "$p"
      return 0
    fi
    p=$((p + 1))
  done
  return 1
}

# iot::wait_until SECONDS DESCRIPTION CMD...: polls CMD every 0.2 s until it succeeds or the
# deadline passes; fails with a message naming DESCRIPTION.
iot::wait_until() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      iot::warn "timed out after ${timeout}s waiting for ${what}"
      return 1
    fi
    sleep 0.2
  done
}

# Succeeds while process PID exists and is not a zombie (an exited child that its parent, often
# an init that reaps lazily, has not collected yet).
iot::alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ "${stat%% *}" != Z ]]
}

# iot::pid_from FILE [PATTERN]: prints the pid in FILE when that process is alive (and, given
# PATTERN, its command line contains PATTERN, so that a recycled pid is not taken for ours).
iot::pid_from() {
  local file=$1 pattern=${2:-} pid cmdline
  [[ -f "$file" ]] || return 1
  read -r pid <"$file" || true
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  iot::alive "$pid" || return 1
  if [[ -n "$pattern" ]]; then
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmdline" == *"$pattern"* ]] || return 1
  fi
  echo "$pid"
}

# iot::spawn PIDFILE LOGFILE CMD...: starts CMD detached (own session, stdin from /dev/null,
# stdout+stderr appended to LOGFILE) and writes its pid (the exec'd CMD itself) to PIDFILE.
iot::spawn() {
  local pidfile=$1 logfile=$2
  shift 2
  rm -f "$pidfile"
  # The child writes its own pid before exec so that PIDFILE names CMD even if setsid forks.
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s "$pidfile" ]] && return 0
    sleep 0.02
  done
  iot::die "could not start $1 (no pid file $pidfile)"
}

# iot::terminate PID NAME [GRACE_SECONDS] [SIGNAL]: sends SIGNAL (default TERM), waits up to
# GRACE_SECONDS (default 30) for exit, then SIGKILL.
iot::terminate() {
  local pid=$1 name=$2 grace=${3:-30} sig=${4:-TERM}
  iot::alive "$pid" || return 0
  kill "-$sig" "$pid" 2>/dev/null || return 0
  local ticks=$((grace * 10))
  while iot::alive "$pid"; do
    if ((ticks-- <= 0)); then
      iot::warn "$name (pid $pid) still running ${grace}s after SIG$sig; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
}

# Packages that scripts/install-deps.sh installs; other scripts check them to decide whether an
# install is needed.
IOT_DEB_PACKAGES=(
  build-essential cmake ninja-build pkg-config git clang-format
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libpqxx-dev libhiredis-dev libmosquitto-dev mosquitto mosquitto-clients mosquitto-dev
  prometheus-cpp-dev nlohmann-json3-dev libsimdjson-dev libspdlog-dev libcli11-dev
  libssl-dev libcurl4-openssl-dev libgtest-dev libgmock-dev libbenchmark-dev
  postgresql redis-server
  # prometheus: the server itself, run as a local process by the Prometheus integration test
  # (its system service is never started). jq: scripts/demo.sh and the demo test read iotctl --json.
  prometheus jq
  # ccache: CI's native build and the image build stage share compiled objects (.ci/run).
  ccache
  # clang-tidy (14 on Debian 12): scripts/check-tidy.sh.
  clang-tidy
)

# Prints the packages of IOT_DEB_PACKAGES that are not installed (one a line).
iot::missing_packages() {
  local p status
  for p in "${IOT_DEB_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ "$status" == installed ]] || echo "$p"
  done
}

# Test tooling from npm: Alibaba's Node device SDK for the Alink tests (tests/alink, exact
# versions in its package-lock.json), installed by `npm ci` into tests/alink/node_modules. Skipped
# (no network) when what is there was installed from the current lock file. Returns 1 (with a
# line saying why) when it cannot install.
iot::npm_test_tools() {
  local dir=$IOT_REPO_ROOT/tests/alink stamp want
  stamp=$dir/node_modules/.iot-package-lock.sha256
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  if ! command -v npm >/dev/null; then
    iot::info "npm not found: the Alink tests need Node.js 20 with npm (tests/alink)"
    return 1
  fi
  iot::info "npm ci in tests/alink (Alibaba's Node device SDK for the Alink tests)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || return 1
  printf '%s\n' "$want" >"$stamp"
}

# iot::usage FILE: prints the comment block at the top of FILE (after the #! line).
iot::usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}
