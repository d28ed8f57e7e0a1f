{{/* vim: set filetype=mustache: */}}

{{- define "iot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "iot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "iot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "iot.labels" -}}
helm.sh/chart: {{ include "iot.chart" . }}
{{ include "iot.selectorLabels" . }}
app.kubernetes.io/part-of: iot-platform
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "iot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
The five services in start order: name (process, component label, object suffix), values key,
environment prefix. The only place that lists them.
*/}}
{{- define "iot.serviceList" -}}
- {name: thing-model, key: thingModel, prefix: IOT_THING_MODEL}
- {name: shadow, key: shadow, prefix: IOT_SHADOW}
- {name: command-dispatch, key: commandDispatch, prefix: IOT_COMMAND_DISPATCH}
- {name: rule-forwarding, key: ruleForwarding, prefix: IOT_RULE_FORWARDING}
- {name: device-gateway, key: deviceGateway, prefix: IOT_DEVICE_GATEWAY, kind: StatefulSet}
{{- end -}}

{{/*
The workload kind of a service: Deployment, except where the service needs a stable identity.
The gateway is a StatefulSet: its pods keep their names (…-device-gateway-0, -1, …) across
restarts and upgrades, and so their MQTT client ids (IOT_DEVICE_GATEWAY_MQTT_CLIENT_ID defaults
to <service>-<hostname>). The broker queues the shared uplink subscription for a replica's
persistent session while it restarts; a new client id on every restart would leave each old
session's queue behind, unread until it expires.
Usage: include "iot.workloadKind" $svc
*/}}
{{- define "iot.workloadKind" -}}
{{- .kind | default "Deployment" -}}
{{- end -}}

{{/*
Effective settings of one service: serviceDefaults overlaid with services.<key>.
Usage: include "iot.serviceValues" (dict "root" $ "key" "shadow") | fromYaml
*/}}
{{- define "iot.serviceValues" -}}
{{- $defaults := deepCopy .root.Values.serviceDefaults -}}
{{- $own := deepCopy (index .root.Values.services .key) -}}
{{- toYaml (mergeOverwrite $defaults $own) -}}
{{- end -}}

{{- define "iot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "iot.mosquittoImage" -}}
{{- printf "%s:%s" .Values.mosquitto.image.repository (default .Chart.AppVersion .Values.mosquitto.image.tag) -}}
{{- end -}}

{{/* The Secret with URLs and keys: the chart's own, or the one the user manages. */}}
{{- define "iot.secretName" -}}
{{- default (printf "%s-secrets" (include "iot.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "iot.postgresqlHost" -}}
{{- printf "%s-postgresql" (include "iot.fullname" .) -}}
{{- end -}}

{{- define "iot.redisHost" -}}
{{- printf "%s-redis" (include "iot.fullname" .) -}}
{{- end -}}

{{- define "iot.mosquittoHost" -}}
{{- printf "%s-mosquitto" (include "iot.fullname" .) -}}
{{- end -}}

{{/* Whether metrics are scraped through a ServiceMonitor (Prometheus Operator present). */}}
{{- define "iot.useServiceMonitor" -}}
{{- if and .Values.metrics.serviceMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") -}}
true
{{- end -}}
{{- end -}}

{{/*
A secret value: the one given in values, else the one already stored in the chart's Secret
(so upgrades keep generated values), else a new random one.
Usage: include "iot.secretValue" (dict "root" $ "key" "IOT_SERVICE_API_KEY" "value" .Values.secrets.serviceApiKey)
("bytes" N instead of "length": N random bytes, base64.)
*/}}
{{- define "iot.secretValue" -}}
{{- if .value -}}
{{- .value -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace (printf "%s-secrets" (include "iot.fullname" .root)) -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else if .bytes -}}
{{- randBytes (.bytes | int) -}}
{{- else -}}
{{- randAlphaNum (default 32 .length | int) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Pod security context shared by the platform's own pods. */}}
{{- define "iot.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "iot.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Labels that NetworkPolicies use to let a pod reach PostgreSQL / Redis / the gRPC ports. */}}
{{- define "iot.clientLabels" -}}
iot-platform/postgresql-client: "true"
iot-platform/redis-client: "true"
iot-platform/grpc-client: "true"
{{- end -}}

{{/*
Secret environment of one service (the Deployment and the migrations Job use the same).
Usage: include "iot.secretEnv" (dict "root" $ "svc" $svc "values" $v)
*/}}
{{- define "iot.secretEnv" -}}
{{- $secret := include "iot.secretName" .root -}}
{{- $names := list "IOT_PG_URL" "IOT_REDIS_URL" "IOT_SERVICE_API_KEY" -}}
{{- if eq .svc.name "thing-model" -}}
{{- $names = concat $names (list "IOT_THING_MODEL_BOOTSTRAP_API_KEY" "IOT_SECRET_KEY") -}}
{{- end -}}
{{- /* rule-forwarding seals rule actions' secrets with the same key (docs/security.md). */ -}}
{{- if eq .svc.name "rule-forwarding" -}}
{{- $names = append $names "IOT_SECRET_KEY" -}}
{{- end -}}
{{- range $name := $names }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $name }}
{{- end }}
{{- if eq .svc.name "thing-model" }}
- name: IOT_THING_MODEL_BOOTSTRAP_TENANT
  value: {{ .root.Values.config.bootstrapTenant | quote }}
{{- end }}
{{- if .values.mqtt }}
{{- with .values.mqtt.username }}
- name: {{ $.svc.prefix }}_MQTT_USERNAME
  value: {{ . | quote }}
{{- end }}
- name: {{ .svc.prefix }}_MQTT_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .svc.prefix }}_MQTT_PASSWORD
      optional: true
{{- end }}
{{- end -}}
