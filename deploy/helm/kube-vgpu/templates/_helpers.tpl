{{/* Names, labels, images and the values checks shared by every template. */}}

{{- define "kube-vgpu.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kube-vgpu.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kube-vgpu.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kube-vgpu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "plugin"). */}}
{{- define "kube-vgpu.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-vgpu.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "kube-vgpu.componentLabels" -}}
{{ include "kube-vgpu.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "kube-vgpu.pluginName" -}}{{ include "kube-vgpu.fullname" . }}-plugin{{- end }}
{{- define "kube-vgpu.schedulerName" -}}{{ include "kube-vgpu.fullname" . }}-scheduler{{- end }}
{{- define "kube-vgpu.extenderName" -}}{{ include "kube-vgpu.fullname" . }}-extender{{- end }}

{{- define "kube-vgpu.pluginImage" -}}
{{ .Values.plugin.image.repository }}:{{ default .Chart.AppVersion .Values.plugin.image.tag }}
{{- end }}

{{- define "kube-vgpu.extenderImage" -}}
{{ .Values.extender.image.repository }}:{{ default .Chart.AppVersion .Values.extender.image.tag }}
{{- end }}

{{/* kube-scheduler must match the API server: default to the cluster's version without vendor suffixes. */}}
{{- define "kube-vgpu.kubeSchedulerImage" -}}
{{- $tag := .Values.scheduler.kubeScheduler.image.tag }}
{{- if not $tag }}
{{- $tag = regexFind "^v[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version }}
{{- end }}
{{- .Values.scheduler.kubeScheduler.image.repository }}:{{ $tag }}
{{- end }}

{{- define "kube-vgpu.assignmentKeySecret" -}}
{{- default (printf "%s-assignment-key" (include "kube-vgpu.fullname" .)) .Values.assignmentKey.existingSecret }}
{{- end }}

{{- define "kube-vgpu.assignmentPublicKeys" -}}
{{- default (printf "%s-assignment-public-keys" (include "kube-vgpu.fullname" .)) .Values.assignmentKey.existingPublicKeys }}
{{- end }}

{{- define "kube-vgpu.webhookTlsSecret" -}}
{{- if eq .Values.webhook.tls.mode "secret" }}
{{- required "webhook.tls.secretName is required with webhook.tls.mode=secret" .Values.webhook.tls.secretName }}
{{- else }}
{{- printf "%s-webhook-tls" (include "kube-vgpu.fullname" .) }}
{{- end }}
{{- end }}

{{- define "kube-vgpu.webhookService" -}}{{ include "kube-vgpu.extenderName" . }}{{- end }}

{{/* Kubernetes API object shared by both webhook configurations: which pods are sent. */}}
{{- define "kube-vgpu.webhookMatch" -}}
{{- $d := .Values.resourceDomain }}
rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    operations: ["CREATE"]
    resources: ["pods"]
    scope: Namespaced
{{- with .Values.webhook.namespaceSelector }}
namespaceSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .Values.webhook.matchConditions }}
matchConditions:
  - name: requests-vcuda
    expression: >-
      (has(object.spec.initContainers) ? object.spec.initContainers : []).exists(c, has(c.resources) &&
      ((has(c.resources.limits) && ('{{ $d }}/vcuda-core' in c.resources.limits || '{{ $d }}/vcuda-memory' in c.resources.limits)) ||
      (has(c.resources.requests) && ('{{ $d }}/vcuda-core' in c.resources.requests || '{{ $d }}/vcuda-memory' in c.resources.requests))))
      || object.spec.containers.exists(c, has(c.resources) &&
      ((has(c.resources.limits) && ('{{ $d }}/vcuda-core' in c.resources.limits || '{{ $d }}/vcuda-memory' in c.resources.limits)) ||
      (has(c.resources.requests) && ('{{ $d }}/vcuda-core' in c.resources.requests || '{{ $d }}/vcuda-memory' in c.resources.requests))))
{{- end }}
failurePolicy: {{ .Values.webhook.failurePolicy }}
sideEffects: None
admissionReviewVersions: ["v1"]
timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
{{- end }}

{{/* Which pods the translating webhook sees: pod CREATEs naming `nvidia.com/gpu` in namespaces labelled
`<domain>/gpu-translation=enabled` (and selected by `webhook.namespaceSelector`). The API server reads the label;
the extender reads it again from the Namespace before translating. */}}
{{- define "kube-vgpu.translationMatch" -}}
{{- $selector := deepCopy (.Values.webhook.namespaceSelector | default dict) }}
{{- $labels := merge (dict (printf "%s/gpu-translation" .Values.resourceDomain) "enabled") ($selector.matchLabels | default dict) }}
{{- $_ := set $selector "matchLabels" $labels }}
rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    operations: ["CREATE"]
    resources: ["pods"]
    scope: Namespaced
namespaceSelector:
  {{- toYaml $selector | nindent 2 }}
{{- if .Values.webhook.matchConditions }}
matchConditions:
  - name: requests-nvidia-gpu
    expression: >-
      (has(object.spec.initContainers) ? object.spec.initContainers : []).exists(c, has(c.resources) &&
      ((has(c.resources.limits) && 'nvidia.com/gpu' in c.resources.limits) ||
      (has(c.resources.requests) && 'nvidia.com/gpu' in c.resources.requests)))
      || object.spec.containers.exists(c, has(c.resources) &&
      ((has(c.resources.limits) && 'nvidia.com/gpu' in c.resources.limits) ||
      (has(c.resources.requests) && 'nvidia.com/gpu' in c.resources.requests)))
{{- end }}
failurePolicy: {{ .Values.webhook.failurePolicy }}
sideEffects: None
admissionReviewVersions: ["v1"]
timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
{{- end }}

{{/* The KubeSchedulerConfiguration `extenders` entry (contracts §4); one source for both scheduler modes. */}}
{{- define "kube-vgpu.extenderEntry" -}}
- urlPrefix: {{ .urlPrefix | quote }}
  filterVerb: filter
  prioritizeVerb: prioritize
  bindVerb: bind
  weight: {{ .ctx.Values.extender.weight }}
  enableHTTPS: false
  nodeCacheCapable: true
  httpTimeout: {{ .ctx.Values.extender.httpTimeout | quote }}
  ignorable: false
  managedResources:
    - name: {{ .ctx.Values.resourceDomain }}/vcuda-core
      ignoredByScheduler: false
    - name: {{ .ctx.Values.resourceDomain }}/vcuda-memory
      ignoredByScheduler: false
{{- end }}

{{/* Fail early with a message naming the value, instead of rendering something that breaks later. */}}
{{- define "kube-vgpu.validate" -}}
{{- $v := .Values }}
{{- if not (has $v.scheduler.mode (list "second" "extender")) }}
{{- fail (printf "scheduler.mode must be second or extender, not %q" $v.scheduler.mode) }}
{{- end }}
{{- if not (has $v.plugin.deviceListStrategy (list "envvar" "cdi" "device-specs")) }}
{{- fail (printf "plugin.deviceListStrategy must be envvar, cdi or device-specs, not %q" $v.plugin.deviceListStrategy) }}
{{- end }}
{{- if not (has $v.plugin.deviceIdStrategy (list "uuid" "index")) }}
{{- fail (printf "plugin.deviceIdStrategy must be uuid or index, not %q" $v.plugin.deviceIdStrategy) }}
{{- end }}
{{- if not (has $v.plugin.mig.strategy (list "none" "single" "mixed")) }}
{{- fail (printf "plugin.mig.strategy must be none, single or mixed, not %q" $v.plugin.mig.strategy) }}
{{- end }}
{{- if lt (int $v.plugin.mig.instanceCount) 0 }}
{{- fail "plugin.mig.instanceCount must be 0 (as many as fit) or more" }}
{{- end }}
{{- range $v.plugin.config.nodeConfig }}
{{- if not (or .name .matchLabels) }}{{ fail "plugin.config.nodeConfig entries need a name (the node name) or matchLabels (node labels)" }}{{ end }}
{{- if hasKey . "deviceMemoryScaling" }}
{{- $s := float64 .deviceMemoryScaling }}
{{- if or (le $s 0.0) (gt $s 1.0) }}
{{- fail (printf "plugin.config.nodeConfig[%s].deviceMemoryScaling must be in (0, 1]" (.name | default (toJson .matchLabels))) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.metrics.serviceMonitor.enabled $v.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled: turn on one of them, not both (each would scrape every target again)" }}
{{- end }}
{{- range list $v.extender.nodePolicy $v.extender.gpuPolicy }}
{{- if not (has . (list "binpack" "spread")) }}
{{- fail (printf "extender.nodePolicy and extender.gpuPolicy must be binpack or spread, not %q" .) }}
{{- end }}
{{- end }}
{{- if lt (int $v.extender.weight) 1 }}
{{- fail "extender.weight must be at least 1 (kube-scheduler rejects a prioritize verb with weight 0)" }}
{{- end }}
{{- if not (regexMatch "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$" $v.extender.httpTimeout) }}
{{- fail (printf "extender.httpTimeout must be a duration such as 30s, not %q" $v.extender.httpTimeout) }}
{{- end }}
{{- if not (has $v.webhook.tls.mode (list "certgen" "certManager" "secret")) }}
{{- fail (printf "webhook.tls.mode must be certgen, certManager or secret, not %q" $v.webhook.tls.mode) }}
{{- end }}
{{- if not (has $v.webhook.failurePolicy (list "Fail" "Ignore")) }}
{{- fail (printf "webhook.failurePolicy must be Fail or Ignore, not %q" $v.webhook.failurePolicy) }}
{{- end }}
{{- end }}

{{/* A list of strings as CEL string literals, comma-separated (names of the chart's own keys only). */}}
{{- define "kube-vgpu.celStrings" -}}
{{- $out := list }}
{{- range . }}{{ $out = append $out (printf "'%s'" .) }}{{ end }}
{{- join ", " $out }}
{{- end }}
