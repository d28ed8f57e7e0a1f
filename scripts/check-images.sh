#!/usr/bin/env bash
# Builds the container images and runs docker-compose.yml for real, with Podman from Debian's
# archive (no Docker engine, no registry needed), then checks the running stack from outside
# and tears it down. What CI runs (.ci/run); docs/deploy.md, "Checking the images".
#
# Steps (each timed; the timings and the image sizes are printed at the end):
#   podman       installs podman, buildah, debootstrap, docker-compose (apt) and configures
#                Podman for a root without systemd or CAP_SYS_RESOURCE (containers.conf.d)
#   base images  debian:bookworm and debian:bookworm-slim made with debootstrap from the
#                machine's Debian mirror (kept: later runs reuse them)
#   stand-ins    postgres, redis and prom/prometheus under the names compose uses, built from
#                Debian's packages (tests/containers/; kept)
#   images       deploy/Dockerfile and deploy/Dockerfile.mosquitto (multi-stage; the build stage
#                uses the host's ccache, so a native build of the same commit is reused)
#   up           docker-compose (Debian's 1.29) against `podman system service`, demo profile,
#                own project name and host ports; healthchecks run by this script (no systemd)
#   healthy      every container with a healthcheck healthy, the bootstrap job done
#   smoke        from the host, through the published ports: demo devices ONLINE, a desired
#                change applied and kept by the device (delta {} after its next report), a
#                command answered, a subscription receiving reports, history, a device
#                connecting from outside, Prometheus scraping every service (up == 1)
#   unhealthy    a service and the broker frozen (SIGSTOP) turn unhealthy, and healthy again
#   down         docker-compose down -v; the podman service and the healthcheck runner stop
#
# Usage: scripts/check-images.sh          (as root, or with sudo available)
#        scripts/check-images.sh --down   stop and remove the stack of IOT_CHECK_PROJECT (after
#                                         IOT_CHECK_KEEP=1)
# Environment:
#   IOT_CHECK_PROJECT=NAME       compose project [iotcheck<pid>]: names of containers, network,
#                                volumes; several runs (and a local stack) can run side by side
#   IOT_CHECK_KEEP=1             leave the stack running at the end (down it with the printed
#                                command); the images are kept either way
#   IOT_CHECK_REFRESH_BASE=1     make the base images and stand-ins again (new Debian updates)
#   IOT_IMAGE_CCACHE_DIR=DIR     ccache directory given to the image build stage [the host's,
#                                `ccache --get-config cache_dir`]; "none": the stage's own cache
#   IOT_CHECK_SKIP_INSTALL=1     do not apt-get install (everything is there)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT=$IOT_REPO_ROOT

DOWN_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --down) DOWN_ONLY=1 ;;
    -h | --help)
      iot::usage "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *) iot::die "unknown argument: $arg (see --help)" ;;
  esac
done
if ! iot::is_root; then
  command -v sudo >/dev/null 2>&1 || iot::die "run as root (rootful Podman, apt-get)"
  exec sudo --preserve-env "$0" "$@"
fi

PROJECT=${IOT_CHECK_PROJECT:-iotcheck$$}
[[ $PROJECT =~ ^[a-z0-9][a-z0-9_-]*$ ]] || iot::die "IOT_CHECK_PROJECT=$PROJECT: lower-case letters, digits, - and _"
STATE=/run/iot-check-images/$PROJECT
LOCK=/run/lock/iot-check-images.lock
VERSION=$(sed -n 's/^project(iot_platform VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $REVISION != unknown ]] && ! git -C "$ROOT" diff --quiet HEAD 2>/dev/null; then
  REVISION+="-dirty"
fi
# The images of this run; tagged :latest and :VERSION too once they are built (compose's and
# the chart's defaults).
IMAGE=localhost/iot-platform:$PROJECT
MOSQUITTO_IMAGE=localhost/iot-mosquitto:$PROJECT
BASE=docker.io/library/debian:bookworm
BASE_SLIM=docker.io/library/debian:bookworm-slim
# The images compose pulls, and the stand-in built for each.
declare -A STANDINS=(
  [docker.io/library/postgres:15-bookworm]=postgres
  [docker.io/library/redis:7.2-bookworm]=redis
  [docker.io/prom/prometheus:v2.53.0]=prometheus
)
MADE_BY_LABEL=org.iot-platform.made-by
DEMO_DEVICES=3

mkdir -p "$STATE"
chmod 700 "$STATE"

# ------------------------------------------------------------------------------ bookkeeping
declare -a STEP_NAMES=() STEP_SECONDS=() STEP_RESULTS=()
step() { # step NAME FUNCTION [ARGS...]: runs and times one step
  local name=$1 start=$SECONDS rc=0
  shift
  iot::section "$name"
  "$@" || rc=$?
  STEP_NAMES+=("$name")
  STEP_SECONDS+=("$((SECONDS - start))")
  STEP_RESULTS+=("$([[ $rc == 0 ]] && echo ok || echo FAILED)")
  return "$rc"
}

passed=0
failed=0
ok() {
  passed=$((passed + 1))
  echo "ok: $*"
}
bad() {
  failed=$((failed + 1))
  echo "FAIL: $*"
  return 1
}

# wait_for SECONDS CMD...: polls CMD every second until it succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

summary() {
  local i
  echo
  echo "check-images: step timings (machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
  for i in "${!STEP_NAMES[@]}"; do
    printf '  %-12s %5ss  %s\n' "${STEP_NAMES[$i]}" "${STEP_SECONDS[$i]}" "${STEP_RESULTS[$i]}"
  done
  if [[ -s $STATE/sizes ]]; then
    echo "check-images: image sizes (uncompressed, as podman reports them)"
    sed 's/^/  /' "$STATE/sizes"
  fi
}

# ------------------------------------------------------------------------------ 1. podman
PACKAGES=(podman buildah runc netavark aardvark-dns iptables debootstrap docker-compose jq ccache)

# Root without systemd: cgroupfs, events to a file, runc (crun refuses this host's hybrid
# cgroups), and ulimits the runtime may set without CAP_SYS_RESOURCE (podman would ask for
# more by default). A drop-in, so that an administrator's containers.conf stays as it is.
CONTAINERS_CONF='# Written by scripts/check-images.sh (IoT platform): Podman as root without systemd.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"

[network]
network_backend = "netavark"
'

podman_setup() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
  done
  if ((${#missing[@]})); then
    [[ ${IOT_CHECK_SKIP_INSTALL:-0} == 1 ]] && iot::die "missing packages: ${missing[*]}"
    echo "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
  local conf=/etc/containers/containers.conf.d/50-iot-platform.conf
  if [[ $(cat "$conf" 2>/dev/null) != "$CONTAINERS_CONF" ]]; then
    mkdir -p "$(dirname "$conf")"
    printf '%s' "$CONTAINERS_CONF" >"$conf"
    echo "wrote $conf"
  fi
  podman --version
  docker-compose version --short
  local info
  info=$(podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} {{.Host.EventLogger}} {{.Host.NetworkBackend}}' 2>/dev/null)
  [[ $info == "runc cgroupfs file netavark" ]] || bad "podman does not use the configuration: $info"
}

# ------------------------------------------------------------------------------ 2. base images
# "URI SUITE" of every Debian bookworm archive the machine's apt uses (main, updates, security).
debian_archives() {
  apt-cache policy | awk '
    $1 ~ /^[0-9]+$/ && $2 ~ /^(https?|file):/ { uri = $2; split($3, s, "/"); suite = s[1]; next }
    /^ *release / && uri != "" { if ($0 ~ /o=Debian,/ && suite ~ /^bookworm/) print uri, suite; uri = "" }' |
    sort -u
}

# deb822 sources for the image: one stanza per archive URI with its suites.
image_sources() {
  local uri suites
  while read -r uri; do
    suites=$(awk -v u="$uri" '$1 == u { printf "%s%s", sep, $2; sep = " " }' <<<"$1")
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n' \
      "$uri" "$suites"
  done < <(awk '{ print $1 }' <<<"$1" | sort -u)
}

# What the official Debian images set for apt and dpkg in containers (no caches, no
# translations, compressed indexes, unsafe-io), and no service starts from maintainer scripts.
container_config() {
  local root=$1
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
  echo 'force-unsafe-io' >"$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
    "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/etc/apt/sources.list
  : >"$root/etc/machine-id"
  : >"$root/etc/resolv.conf"
  echo localhost >"$root/etc/hostname"
}

# What debian:*-slim leaves out: documentation, man pages, translations (copyrights stay).
slim_config() {
  local root=$1
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{man,groff,info,lintian,linda}/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
}

import_rootfs() { # import_rootfs DIR NAME
  tar --numeric-owner --xattrs -C "$1" -c . |
    podman import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' \
      --change "LABEL $MADE_BY_LABEL=scripts/check-images.sh" \
      --message "debootstrap --variant=minbase bookworm" - "$2" >/dev/null
}

base_images() {
  if [[ ${IOT_CHECK_REFRESH_BASE:-0} != 1 ]] && podman image exists "$BASE" && podman image exists "$BASE_SLIM"; then
    echo "reusing $BASE and $BASE_SLIM ($(podman image inspect --format '{{.Created}}' "$BASE_SLIM" | cut -d. -f1))"
    return 0
  fi
  local archives mirror work
  archives=$(debian_archives)
  mirror=$(awk '$2 == "bookworm" { print $1; exit }' <<<"$archives")
  [[ -n $mirror ]] || { bad "no Debian bookworm archive in the machine's apt sources (apt-get update?)"; return 1; }
  echo "Debian archives: $(tr '\n' ' ' <<<"$archives")"
  work=$(mktemp -d /var/tmp/iot-base.XXXXXX)
  # shellcheck disable=SC2064  # expand now
  trap "rm -rf '$work'" RETURN
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log"; bad "debootstrap failed"; return 1; }
  image_sources "$archives" >"$work/rootfs/etc/apt/sources.list.d/debian.sources"
  container_config "$work/rootfs"
  import_rootfs "$work/rootfs" "$BASE"
  slim_config "$work/rootfs"
  import_rootfs "$work/rootfs" "$BASE_SLIM"
  echo "made $BASE and $BASE_SLIM"
}

# ------------------------------------------------------------------------------ 3. stand-ins
standins() {
  local name file made
  for name in "${!STANDINS[@]}"; do
    file=$ROOT/tests/containers/${STANDINS[$name]}.Dockerfile
    made=$(podman image inspect --format "{{index .Labels \"$MADE_BY_LABEL\"}}" "$name" 2>/dev/null || true)
    if podman image exists "$name" && [[ $made != scripts/check-images.sh ]]; then
      echo "$name: a real image is there, using it"
      continue
    fi
    # Layer cache: unchanged Dockerfile and base image = nothing rebuilt.
    podman build -q --pull=never --build-arg "BASE_IMAGE=$BASE_SLIM" \
      --label "$MADE_BY_LABEL=scripts/check-images.sh" \
      -f "$file" -t "$name" "$ROOT/tests/containers" >/dev/null ||
      { bad "building the stand-in $name ($file)"; return 1; }
    echo "$name: stand-in from $(basename "$file")"
  done
}

# ------------------------------------------------------------------------------ 4. images
ccache_dir() {
  local dir=${IOT_IMAGE_CCACHE_DIR:-}
  if [[ -z $dir ]] && command -v ccache >/dev/null 2>&1; then
    dir=$(ccache --get-config cache_dir 2>/dev/null || true)
  fi
  [[ $dir == none ]] && return 0
  [[ -n $dir ]] && mkdir -p "$dir" && echo "$dir"
}

build_image() { # build_image DOCKERFILE TAG LOG
  # The labels again on the command line: buildah 1.28 takes a cached LABEL layer built with
  # another REVISION build argument for current (seen: a stale revision label).
  local -a args=(--pull=never --layers -f "$ROOT/$1" -t "$2"
    --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION"
    --label "org.opencontainers.image.version=$VERSION"
    --label "org.opencontainers.image.revision=$REVISION")
  local cache var
  cache=$(ccache_dir)
  if [[ -n $cache ]]; then
    # The host's cache, its size limit, and the locale ccache hashes into every key.
    args+=(--volume "$cache:/host-ccache" --build-arg CCACHE_DIR=/host-ccache
      --build-arg "CCACHE_MAXSIZE=$(ccache --get-config max_size 2>/dev/null || echo 5G)")
    for var in LANG LC_ALL; do
      [[ -n ${!var+set} ]] && args+=(--build-arg "$var=${!var}")
    done
  fi
  if ! podman build "${args[@]}" "$ROOT" >"$3" 2>&1; then
    tail -n 40 "$3"
    bad "podman build -f $1 failed (log: $3)"
    return 1
  fi
  # The compile summary of the build stage (ccache hits) when it ran.
  grep -E '^ *(Hits|Misses):' "$3" | sed "s|^ *|  $1 build stage ccache: |" || true
}

# The image is what it claims: non-root, labelled, the binaries there and runnable.
inspect_image() { # inspect_image TAG NAME
  local user labels
  user=$(podman image inspect --format '{{.Config.User}}' "$1")
  [[ $user =~ ^[1-9][0-9]*(:[1-9][0-9]*)?$ ]] && ok "$2 runs as uid $user" || bad "$2: user '$user' is not a numeric non-root uid"
  labels=$(podman image inspect --format '{{json .Labels}}' "$1")
  [[ $(jq -r '."org.opencontainers.image.version"' <<<"$labels") == "$VERSION" &&
    $(jq -r '."org.opencontainers.image.revision"' <<<"$labels") == "$REVISION" &&
    $(jq -r '."org.opencontainers.image.source"' <<<"$labels") == http* ]] &&
    ok "$2 labels: version $VERSION, revision $REVISION, source $(jq -r '."org.opencontainers.image.source"' <<<"$labels")" ||
    bad "$2 OCI labels: $labels"
}

record_size() { # record_size TAG
  local bytes
  bytes=$(podman image inspect --format '{{.Size}}' "$1")
  printf '%-48s %6s MB\n' "$1" "$((bytes / 1000000))" >>"$STATE/sizes"
}

images() {
  build_image deploy/Dockerfile "$IMAGE" "$STATE/build-platform.log" || return 1
  build_image deploy/Dockerfile.mosquitto "$MOSQUITTO_IMAGE" "$STATE/build-mosquitto.log" || return 1
  inspect_image "$IMAGE" iot-platform || return 1
  inspect_image "$MOSQUITTO_IMAGE" iot-mosquitto || return 1
  local out
  out=$(podman run --rm --network none "$IMAGE" thing-model --version 2>&1) && [[ $out == *"$VERSION"* ]] &&
    ok "the image's thing-model --version: $out" || bad "thing-model --version in the image: $out"
  out=$(podman run --rm --network none --entrypoint /usr/sbin/mosquitto "$MOSQUITTO_IMAGE" -h 2>&1 | head -n 1)
  [[ $out == *"mosquitto version 2.0"* ]] && ok "the broker image runs $out" || bad "mosquitto in the broker image: $out"
  # The names compose and the chart use by default.
  podman tag "$IMAGE" localhost/iot-platform:latest "localhost/iot-platform:$VERSION"
  podman tag "$MOSQUITTO_IMAGE" localhost/iot-mosquitto:latest "localhost/iot-mosquitto:$VERSION"
  : >"$STATE/sizes"
  record_size "$IMAGE"
  record_size "$MOSQUITTO_IMAGE"
  local name
  for name in "${!STANDINS[@]}"; do record_size "$name"; done
  record_size "$BASE_SLIM"
  record_size "$BASE"
}

# ------------------------------------------------------------------------------ 5. up
# Host ports: free ones, bound on 127.0.0.1 only (the defaults may be a local stack's).
free_ports() {
  /usr/bin/python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# Debian's docker-compose 1.29 on this run's own Podman API socket (a command, for `timeout`).
COMPOSE=(env "DOCKER_HOST=unix://$STATE/podman.sock" docker-compose --project-name "$PROJECT"
  --project-directory "$ROOT" --file "$ROOT/docker-compose.yml" --env-file "$STATE/compose.env"
  --profile demo)
compose() { "${COMPOSE[@]}" "$@"; }

project_containers() { # names of the project's containers [podman ps filters...]
  podman ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}' "$@"
}
container_of() { project_containers --filter "label=com.docker.compose.service=$1" | head -n 1; }
health_of() { podman inspect --format '{{.State.Health.Status}}' "$1" 2>/dev/null; }
health_is() { [[ $(health_of "$1") == "$2" ]]; } # health_is CONTAINER STATUS

# Podman runs healthchecks from systemd timers; without systemd nothing does. This loop calls
# `podman healthcheck run` for each running container of the project that has a healthcheck:
# at the container's interval once healthy, every 2 s while starting or unhealthy (as Docker's
# start_interval does), and stops when $STATE/health.run is removed.
health_runner() {
  declare -A next=() interval=()
  local name now status conf
  while [[ -e $STATE/health.run ]]; do
    now=$SECONDS
    for name in $(project_containers --filter status=running); do
      if [[ -z ${interval[$name]:-} ]]; then
        # Seconds between checks; 0 = no healthcheck (Interval is in nanoseconds).
        conf=$(podman inspect --format '{{json .Config.Healthcheck}}' "$name" 2>/dev/null) || continue
        interval[$name]=$(jq -r 'if (.Test // ["NONE"])[0] == "NONE" then 0
          else [((.Interval // 30000000000) / 1000000000 | floor), 1] | max end' <<<"$conf" 2>/dev/null || echo 0)
      fi
      ((interval[$name] > 0)) || continue
      ((now >= ${next[$name]:-0})) || continue
      status=$(health_of "$name")
      if [[ $status == healthy ]]; then
        next[$name]=$((now + interval[$name]))
      else
        next[$name]=$((now + 2))
      fi
      timeout 30 podman healthcheck run "$name" >/dev/null 2>&1 &
    done
    wait
    sleep 1
  done
}

up() {
  local ports
  read -r -a ports <<<"$(free_ports 7)"
  cat >"$STATE/compose.env" <<EOF
IOT_IMAGE=$IMAGE
IOT_MOSQUITTO_IMAGE=$MOSQUITTO_IMAGE
IOT_BIND_ADDRESS=127.0.0.1
IOT_MQTT_BIND_ADDRESS=127.0.0.1
IOT_HOST_MQTT_PORT=${ports[0]}
IOT_HOST_MQTT_TLS_PORT=${ports[1]}
IOT_HOST_THING_MODEL_PORT=${ports[2]}
IOT_HOST_COMMAND_DISPATCH_PORT=${ports[3]}
IOT_HOST_SHADOW_PORT=${ports[4]}
IOT_HOST_RULE_FORWARDING_PORT=${ports[5]}
IOT_HOST_PROMETHEUS_PORT=${ports[6]}
IOT_DEMO_DEVICES=$DEMO_DEVICES
EOF
  echo "project $PROJECT; host ports: $(grep _PORT= "$STATE/compose.env" | tr '\n' ' ')"
  # An own API socket: other Podman users of the machine are not disturbed.
  podman system service --time=0 "unix://$STATE/podman.sock" >"$STATE/podman-service.log" 2>&1 &
  echo $! >"$STATE/podman-service.pid"
  wait_for 30 test -S "$STATE/podman.sock" || { bad "podman system service did not start"; return 1; }
  touch "$STATE/health.run"
  health_runner >"$STATE/health-runner.log" 2>&1 &
  echo $! >"$STATE/health-runner.pid"
  # `up` waits for each service_healthy condition before starting the dependents.
  if ! timeout 900 "${COMPOSE[@]}" up -d --no-build >"$STATE/compose-up.log" 2>&1; then
    cat "$STATE/compose-up.log"
    bad "docker-compose up failed"
    return 1
  fi
  grep -v '^$' "$STATE/compose-up.log" | tail -n 20
}

# ------------------------------------------------------------------------------ 6. healthy
all_healthy() {
  local name status waiting=()
  for name in $(project_containers); do
    status=$(health_of "$name")
    case "$(podman inspect --format '{{.State.Status}}' "$name")/$status" in
      running/healthy | running/) ;;
      exited/) [[ $name == *_bootstrap_* && $(podman inspect --format '{{.State.ExitCode}}' "$name") == 0 ]] ||
        waiting+=("$name(exited)") ;;
      *) waiting+=("$name(${status:-no health})") ;;
    esac
  done
  ((${#waiting[@]} == 0)) || {
    echo "${waiting[*]}" >"$STATE/waiting"
    return 1
  }
}

healthy() {
  if wait_for 300 all_healthy; then
    podman ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '  {{.Names}}  {{.Status}}'
    ok "every container healthy (device-sim running, bootstrap done)"
  else
    bad "not healthy after 300 s: $(cat "$STATE/waiting")"
  fi
}

# ------------------------------------------------------------------------------ 7. smoke
port() { sed -n "s/^IOT_HOST_$1_PORT=//p" "$STATE/compose.env"; }

# The platform's tools from the image, on the host's network: they reach the stack only
# through the ports it publishes on 127.0.0.1, as a user's iotctl would.
tool() {
  podman run --rm --timeout 120 --network host --read-only -v "$STATE/client:/client:ro" \
    -v "$ROOT/deploy/demo:/demo:ro" -e IOTCTL_API_KEY_FILE=/client/tenant-api-key \
    -e "IOTCTL_ADDR=127.0.0.1:$(port THING_MODEL)" \
    -e "IOTCTL_COMMANDS_ADDR=127.0.0.1:$(port COMMAND_DISPATCH)" "$IMAGE" "$@"
}
iotctl() { tool iotctl "$@"; }
shadow_cli() { iotctl --addr "127.0.0.1:$(port SHADOW)" "$@"; }
rules_cli() { iotctl --addr "127.0.0.1:$(port RULE_FORWARDING)" "$@"; }

online_devices() {
  iotctl --json device list --product smartmeter01 --status online --all 2>/dev/null |
    jq '[.devices[]? | select(.device_id | startswith("smartmeter01_meter-"))] | length'
}
devices_online() { [[ $(online_devices) == "$DEMO_DEVICES" ]]; }
has_history() {
  (($(rules_cli --json history --device smartmeter01_meter-1 --service meter --property voltage \
    2>/dev/null | jq '.values | length' 2>/dev/null || echo 0) > 0))
}
outside_reported() {
  [[ $(reported voltage "$(shadow_doc smartmeter01_outside-1 2>/dev/null)" 2>/dev/null) =~ ^[0-9.]+$ ]]
}
shadow_doc() { shadow_cli --json shadow show "$1"; }
reported() { jq -r ".shadow[0].reported.properties_json | fromjson | .$1" <<<"$2"; }

# The device applied relay_state=OFF, report_interval=60 and reported them: delta {}.
applied() {
  local doc
  doc=$(shadow_doc smartmeter01_meter-1) || return 1
  [[ $(reported relay_state "$doc") == OFF && $(reported report_interval "$doc") == 60 &&
    $(jq -r '.shadow[0].delta_json' <<<"$doc") == "{}" &&
    $(jq -r '.last_property_set.result_code' <<<"$doc") == 0 ]] || return 1
  echo "$doc" >"$STATE/applied.json"
}
# A later periodic report than the one in $STATE/applied.json.
reported_again() {
  local doc
  doc=$(shadow_doc smartmeter01_meter-1) || return 1
  [[ $(jq -r '.shadow[0].reported.event_time' <<<"$doc") != \
    $(jq -r '.shadow[0].reported.event_time' "$STATE/applied.json") ]] || return 1
  echo "$doc" >"$STATE/next.json"
}

prometheus_up() {
  /usr/bin/python3 - "$(port PROMETHEUS)" <<'EOF'
import json, sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/api/v1/query?query=up"
result = json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
up = {r["metric"]["job"]: r["value"][1] for r in result}
want = ["device-gateway", "thing-model", "command-dispatch", "shadow", "rule-forwarding"]
print(" ".join(f"{j}={up.get(j, 'missing')}" for j in want))
sys.exit(0 if all(up.get(j) == "1" for j in want) else 1)
EOF
}

smoke() {
  mkdir -p "$STATE/client"
  # The demo tenant's key, read as docs/deploy.md tells the user to.
  compose run --rm --no-deps --entrypoint cat bootstrap /var/lib/iot/tenant-api-key \
    >"$STATE/client/tenant-api-key" 2>"$STATE/read-key.log" && [[ -s $STATE/client/tenant-api-key ]] ||
    { cat "$STATE/read-key.log"; bad "could not read the bootstrap key from the iot-bootstrap volume"; return 1; }
  chmod 644 "$STATE/client/tenant-api-key" # the tool containers run as uid 10001
  local out doc

  if wait_for 120 devices_online; then
    ok "$DEMO_DEVICES demo devices ONLINE"
  else
    bad "ONLINE demo devices: $(online_devices), expected $DEMO_DEVICES"
  fi

  # README: set desired, the device applies it, reported = desired, delta {}; and it keeps the
  # values in its next periodic reports (the simulator used to draw them afresh).
  shadow_cli shadow set-desired smartmeter01_meter-1 --service meter \
    -p relay_state=OFF -p report_interval=60 >/dev/null || bad "shadow set-desired"
  if wait_for 60 applied; then
    ok "desired relay_state=OFF report_interval=60 applied: reported = desired, delta {}"
    if wait_for 30 reported_again; then
      doc=$(cat "$STATE/next.json")
      [[ $(reported relay_state "$doc") == OFF && $(reported report_interval "$doc") == 60 &&
        $(jq -r '.shadow[0].delta_json' <<<"$doc") == "{}" ]] &&
        ok "the device's next report keeps them (delta still {})" ||
        bad "the next report changed them: $(jq -c '.shadow[0] | {reported, delta_json}' <<<"$doc")"
      local a=$STATE/applied.json
      [[ $(reported serial "$doc") == $(reported serial "$(cat "$a")") &&
        $(reported firmware "$doc") == $(reported firmware "$(cat "$a")") ]] &&
        ok "serial $(reported serial "$doc") and firmware $(reported firmware "$doc") stay the same" ||
        bad "identity changed between reports: $(reported serial "$(cat "$a")")/$(reported firmware "$(cat "$a")") -> $(reported serial "$doc")/$(reported firmware "$doc")"
    else
      bad "no later report from smartmeter01_meter-1 in 30 s"
    fi
  else
    bad "desired state not applied in 60 s: $(shadow_doc smartmeter01_meter-1 | jq -c '.shadow[0] | {reported, delta_json}')"
  fi

  if out=$(iotctl command send smartmeter01_meter-1 --service meter --name reboot \
    --paras '{"delay":5}' 2>&1) && [[ $out == *'"response_name": "reboot_response"'* &&
    $out == *'"result_code": 0'* ]]; then
    ok "command reboot answered by the device"
  else
    bad "command reboot: $out"
  fi

  rules_cli group create readings --description "meter readings" >/dev/null &&
    rules_cli rule create -f /demo/meter-readings-rule.json >/dev/null ||
    bad "group / rule create"
  if out=$(rules_cli subscribe --group readings --count 2) &&
    [[ $(jq -s '[.[] | select(.device_id | startswith("smartmeter01_meter-")) |
        select(.payload_json | fromjson | .voltage != null)] | length' <<<"$out") == 2 ]]; then
    ok "a subscription received 2 meter readings"
  else
    bad "subscribe --group readings --count 2: $out"
  fi

  if wait_for 30 has_history; then
    ok "voltage history stored in PostgreSQL"
  else
    bad "no voltage history for smartmeter01_meter-1"
  fi

  # A device outside the stack, through the published MQTT port.
  if out=$(tool iot-device-sim --create 1 --product smartmeter01 --node-prefix outside- \
    --api-key-file /client/tenant-api-key --thing-model-addr "127.0.0.1:$(port THING_MODEL)" \
    --mqtt-host 127.0.0.1 --mqtt-port "$(port MQTT)" --count 2 --report-interval 1 --json 2>&1) &&
    [[ $(tail -n 1 <<<"$out" | jq -r '.reports_acked') == 2 ]] &&
    wait_for 20 outside_reported; then
    ok "a device connected through the published MQTT port; its report reached the shadow"
  else
    bad "device through the published MQTT port: $out"
  fi

  if wait_for 60 prometheus_up >"$STATE/prometheus.txt" 2>&1; then
    ok "Prometheus scrapes every service: $(cat "$STATE/prometheus.txt")"
  else
    bad "Prometheus targets not all up: $(cat "$STATE/prometheus.txt")"
  fi
  ((failed == 0))
}

# ------------------------------------------------------------------------------ 8. unhealthy
# The host pid of a container's service process: the child of its init (tini).
service_pid() {
  local init
  init=$(podman inspect --format '{{.State.Pid}}' "$1") || return 1
  pgrep -P "$init" | head -n 1
}

# Healthchecks that fail when the service is down: freeze (SIGSTOP) the shadow service and the
# broker inside their running containers, see both turn unhealthy, thaw them, see them recover.
unhealthy() {
  local svc name pid start names=() pids=()
  for svc in shadow mosquitto; do
    name=$(container_of "$svc")
    pid=$(service_pid "$name")
    [[ -n $pid ]] || { bad "no service process in $name"; continue; }
    kill -STOP "$pid"
    names+=("$name")
    pids+=("$pid")
    echo "froze $svc: pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-60)) in $name"
  done
  # expect STATUS SECONDS WHEN: every frozen container reaches STATUS within SECONDS.
  expect() {
    local start=$SECONDS name
    for name in "${names[@]}"; do
      if wait_for "$2" health_is "$name" "$1"; then
        ok "$name $1 $((SECONDS - start)) s after $3"
      else
        bad "$name still $(health_of "$name") $2 s after $3"
      fi
    done
  }
  expect unhealthy 180 "its process was frozen"
  for pid in "${pids[@]}"; do kill -CONT "$pid"; done
  start=$SECONDS
  expect healthy 120 "it was thawed"
  # Without the broker the gateway and rule-forwarding went NOT_SERVING too: all recover.
  if wait_for 180 all_healthy; then
    ok "the whole stack healthy again $((SECONDS - start)) s after the thaw"
  else
    bad "not healthy again 180 s after the thaw: $(cat "$STATE/waiting")"
  fi
  ((failed == 0))
}

# ------------------------------------------------------------------------------ 9. down
stop_pidfile() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -f "$1"
}

down() {
  local rc=0
  rm -f "$STATE/health.run"
  if [[ -S $STATE/podman.sock ]]; then
    # device-sim first: it lives in the broker's network namespace, and Podman refuses to
    # remove a container that another one still joins (compose removes them in parallel).
    compose rm --stop --force device-sim >"$STATE/compose-down.log" 2>&1 || true
    compose down --volumes --remove-orphans --timeout 20 >>"$STATE/compose-down.log" 2>&1 ||
      { cat "$STATE/compose-down.log"; rc=1; }
  fi
  stop_pidfile "$STATE/health-runner.pid"
  stop_pidfile "$STATE/podman-service.pid"
  # Anything compose could not remove (it was killed half-way, say).
  local left
  left=$(project_containers)
  if [[ -n $left ]]; then
    # shellcheck disable=SC2086
    podman rm -f -t 10 $left >/dev/null 2>&1 || true
    podman volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r podman volume rm -f >/dev/null
    podman network ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r podman network rm -f >/dev/null
  fi
  podman untag "$IMAGE" "$IMAGE" 2>/dev/null || true
  podman untag "$MOSQUITTO_IMAGE" "$MOSQUITTO_IMAGE" 2>/dev/null || true
  [[ -z $(project_containers) ]] && echo "project $PROJECT removed (containers, network, volumes)" || rc=1
  return "$rc"
}

# ------------------------------------------------------------------------------ main
diagnose() {
  echo
  echo "==== diagnostics of project $PROJECT"
  local name
  for name in $(project_containers); do
    printf '\n---- %s: %s, health %s\n' "$name" "$(podman inspect --format '{{.State.Status}}' "$name")" \
      "$(health_of "$name")"
    podman inspect --format '{{if .State.Health}}{{range .State.Health.Log}}{{.ExitCode}}: {{.Output}}{{"\n"}}{{end}}{{end}}' \
      "$name" 2>/dev/null | tail -n 3
    podman logs --tail 30 "$name" 2>&1 | cut -c1-400
  done
  [[ -s $STATE/health-runner.log ]] && { echo "---- health runner"; tail -n 20 "$STATE/health-runner.log"; }
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  set +e # everything below runs, whatever fails
  ((rc == 0)) || diagnose
  if [[ ${IOT_CHECK_KEEP:-0} == 1 && $rc == 0 ]]; then
    echo
    echo "the stack is still running (IOT_CHECK_KEEP=1): project $PROJECT, ports in $STATE/compose.env"
    echo "  DOCKER_HOST=unix://$STATE/podman.sock docker-compose -p $PROJECT --env-file $STATE/compose.env --profile demo ps"
    echo "  remove it: IOT_CHECK_PROJECT=$PROJECT scripts/check-images.sh --down"
  elif [[ -d $STATE ]]; then
    [[ " ${STEP_NAMES[*]} " == *" down "* ]] || down || rc=1
  fi
  summary
  echo "check-images: $passed passed, $failed failed"
  if ((rc == 0 && failed == 0)); then
    echo "check-images: OK"
    [[ ${IOT_CHECK_KEEP:-0} == 1 ]] || rm -rf "$STATE"
  else
    echo "check-images: FAILED (logs: $STATE)"
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ((DOWN_ONLY)); then
  [[ -n ${IOT_CHECK_PROJECT:-} ]] || iot::die "--down needs IOT_CHECK_PROJECT (the project to remove)"
  step down down
  exit 0
fi
echo "check-images: project $PROJECT, version $VERSION, revision $REVISION"
step podman podman_setup
# Base images and stand-ins are shared by every run on the machine: made by one at a time.
exec 9>"$LOCK"
flock 9
step "base images" base_images
step stand-ins standins
flock -u 9
step images images
step up up
step healthy healthy
step smoke smoke
step unhealthy unhealthy
if [[ ${IOT_CHECK_KEEP:-0} != 1 ]]; then
  step down down
fi
