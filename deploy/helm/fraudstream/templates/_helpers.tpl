{{/*
Names, labels and the pieces every workload shares. Paths and ports below are contracts with the
service code (README.md, "Environment the chart sets"); change them together.
*/}}

{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "fraudstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* release-chart, or the release alone when it already contains the chart name. */}}
{{- define "fraudstream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Name of one component's resources: <fullname>-<component>, at most 52 characters: a StatefulSet's
pods carry the label controller-revision-hash=<name>-<10-character hash>, and labels stop at 63.
*/}}
{{- define "fraudstream.componentName" -}}
{{- printf "%s-%s" (include "fraudstream.fullname" .context | trunc (int (sub 51 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "fraudstream.workerHeadlessName" -}}
{{- include "fraudstream.componentName" (dict "context" . "component" "worker-headless") -}}
{{- end -}}

{{- define "fraudstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "fraudstream.labels" -}}
helm.sh/chart: {{ include "fraudstream.chart" . }}
{{ include "fraudstream.selectorLabels" . }}
app.kubernetes.io/version: {{ include "fraudstream.imageTag" . | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fraudstream
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select the release's pods; never change them after an install (selectors are immutable). */}}
{{- define "fraudstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fraudstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: (dict "context" $ "component" "api"). */}}
{{- define "fraudstream.componentLabels" -}}
{{ include "fraudstream.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fraudstream.componentSelectorLabels" -}}
{{ include "fraudstream.selectorLabels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* commonAnnotations as an indented metadata block; nothing at all when there are none. */}}
{{- define "fraudstream.annotations" -}}
{{- with .Values.commonAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end -}}

{{/* The image tag: image.tag, else the chart's appVersion. */}}
{{- define "fraudstream.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString -}}
{{- end -}}

{{/* registry/repository:tag, or @digest when a digest is given. */}}
{{- define "fraudstream.image" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.image.registry -}}
{{- $repository := .Values.image.repository -}}
{{- $prefix := ternary (printf "%s/%s" $registry $repository) $repository (ne $registry "") -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $prefix .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $prefix (include "fraudstream.imageTag" .) -}}
{{- end -}}
{{- end -}}

{{- define "fraudstream.testImage" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.tests.image.registry -}}
{{- printf "%s/%s:%s" $registry .Values.tests.image.repository (toString .Values.tests.image.tag) -}}
{{- end -}}

{{- define "fraudstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fraudstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* ------------------------------------------------------------------------------------------
Paths and ports shared with the service code.
------------------------------------------------------------------------------------------ */}}

{{- define "fraudstream.registryPath" -}}/var/lib/fraudstream/registry{{- end -}}
{{- define "fraudstream.statePath" -}}/var/lib/fraudstream/state{{- end -}}
{{- define "fraudstream.cachePath" -}}/home/fraudstream/.cache{{- end -}}
{{- define "fraudstream.kafkaCaDir" -}}/etc/fraudstream/kafka-ca{{- end -}}

{{/* The HTTP port of a component: api 8000, worker 8001, trainer 8002 (fixed by the services). */}}
{{- define "fraudstream.port" -}}
{{- get (dict "api" 8000 "worker" 8001 "trainer" 8002) . -}}
{{- end -}}

{{/* ------------------------------------------------------------------------------------------
Secrets
------------------------------------------------------------------------------------------ */}}

{{/*
Documented development placeholders (global.development only, when no secrets are given): bank
`dev-bank` with API key `fraudstream-dev-key`. Public knowledge, so never a real deployment.
*/}}
{{- define "fraudstream.devApiKey" -}}fraudstream-dev-key{{- end -}}
{{- define "fraudstream.devBank" -}}dev-bank{{- end -}}
{{- define "fraudstream.devTokenizationKey" -}}insecure-development-tokenization-key-do-not-use{{- end -}}

{{/* true when the chart's own Secret carries the API keys and tokenization key. */}}
{{- define "fraudstream.chartHoldsAppSecrets" -}}
{{- if not .Values.secrets.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* true when the chart renders its own Secret at all. */}}
{{- define "fraudstream.createSecret" -}}
{{- if or (include "fraudstream.chartHoldsAppSecrets" .) .Values.kafka.sasl.password (include "fraudstream.s3CredentialsInChartSecret" .) -}}true{{- end -}}
{{- end -}}

{{- define "fraudstream.saslEnabled" -}}
{{- if hasPrefix "SASL_" (.Values.settings.kafka.security_protocol | default "PLAINTEXT") -}}true{{- end -}}
{{- end -}}

{{- define "fraudstream.s3CredentialsInChartSecret" -}}
{{- if and (eq .Values.registry.type "s3") (not .Values.registry.s3.existingSecret) .Values.registry.s3.accessKeyId -}}true{{- end -}}
{{- end -}}

{{/*
Secret-backed environment of one component: (dict "context" $ "component" "api").
The API alone gets the API-key hashes and the tokenization key (least privilege); every pod gets
the Kafka SASL password and the S3 credentials.
*/}}
{{- define "fraudstream.secretEnv" -}}
{{- $ := .context -}}
{{- $fullname := include "fraudstream.fullname" $ -}}
{{- if eq .component "api" }}
{{- $name := $.Values.secrets.existingSecret | default $fullname }}
{{- $keys := $.Values.secrets.existingSecretKeys }}
- name: FRAUD_API__API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $name }}
      key: {{ ternary $keys.apiKeys "api-keys" (ne $.Values.secrets.existingSecret "") }}
- name: FRAUD_API__TOKENIZATION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $name }}
      key: {{ ternary $keys.tokenizationKey "tokenization-key" (ne $.Values.secrets.existingSecret "") }}
{{- end }}
{{- if include "fraudstream.saslEnabled" $ }}
{{- if $.Values.kafka.sasl.existingSecret }}
- name: FRAUD_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.kafka.sasl.existingSecret }}
      key: {{ $.Values.kafka.sasl.existingSecretPasswordKey }}
{{- else if $.Values.kafka.sasl.password }}
- name: FRAUD_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $fullname }}
      key: kafka-sasl-password
{{- end }}
{{- end }}
{{- if eq $.Values.registry.type "s3" }}
{{- if $.Values.registry.s3.existingSecret }}
- name: FRAUD_SCORING__REGISTRY_S3__ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.registry.s3.existingSecret }}
      key: {{ $.Values.registry.s3.existingSecretKeys.accessKeyId }}
- name: FRAUD_SCORING__REGISTRY_S3__SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.registry.s3.existingSecret }}
      key: {{ $.Values.registry.s3.existingSecretKeys.secretAccessKey }}
{{- else if include "fraudstream.s3CredentialsInChartSecret" $ }}
- name: FRAUD_SCORING__REGISTRY_S3__ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $fullname }}
      key: s3-access-key-id
- name: FRAUD_SCORING__REGISTRY_S3__SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $fullname }}
      key: s3-secret-access-key
{{- end }}
{{- end }}
{{- end -}}

{{/* ------------------------------------------------------------------------------------------
Settings -> environment (the ConfigMap)
------------------------------------------------------------------------------------------ */}}

{{/*
One value as an environment string pydantic parses back: values files reach templates as float64,
so 1000000 would print as 1e+06 (not an int to pydantic); integral floats print as integers.
*/}}
{{- define "fraudstream.envValue" -}}
{{- if kindIs "float64" . -}}
{{- if eq (floor .) . -}}{{- printf "%d" (int64 .) -}}{{- else -}}{{- toString . -}}{{- end -}}
{{- else if or (kindIs "map" .) (kindIs "slice" .) -}}
{{- toJson . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/*
FRAUD_<SECTION>__<FIELD>: value for every settings section, then what the chart itself decides
(listen addresses and ports, registry location, worker state path, CA path). null settings are left
out: the code's default applies. The worker's instance id is per pod: fraudstream.podTemplate sets
FRAUD_STREAM__INSTANCE_ID from the pod name.
*/}}
{{- define "fraudstream.settingsEnv" -}}
{{- $env := dict -}}
{{- range $section := list "kafka" "scoring" "api" "training" "stream" -}}
{{- $fields := index $.Values.settings $section | default dict -}}
{{- range $field, $value := $fields -}}
{{- if not (kindIs "invalid" $value) -}}
{{- $_ := set $env (printf "FRAUD_%s__%s" (upper $section) (upper $field)) (include "fraudstream.envValue" $value) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* The API listens on every interface of the pod, on the port its Service and probes use. */ -}}
{{- $_ := set $env "FRAUD_API__HOST" "0.0.0.0" -}}
{{- $_ := set $env "FRAUD_API__PORT" (include "fraudstream.port" "api") -}}
{{- /* The worker: /metrics, /healthz, /readyz on the port of its probes and the ServiceMonitor;
checkpoints on its state volume (in a folder named after its instance id, the pod name). */ -}}
{{- $_ := set $env "FRAUD_STREAM__HTTP_HOST" "0.0.0.0" -}}
{{- $_ := set $env "FRAUD_STREAM__HTTP_PORT" (include "fraudstream.port" "worker") -}}
{{- $_ := set $env "FRAUD_STREAM__STATE_DIR" (include "fraudstream.statePath" .) -}}
{{- /* The trainer: /metrics, /healthz, /readyz on the port of its probes and the ServiceMonitor. */ -}}
{{- $_ := set $env "FRAUD_TRAINING__HTTP_HOST" "0.0.0.0" -}}
{{- $_ := set $env "FRAUD_TRAINING__HTTP_PORT" (include "fraudstream.port" "trainer") -}}
{{- $_ := set $env "FRAUD_SCORING__REGISTRY" (include "fraudstream.registryPath" .) -}}
{{- if eq .Values.registry.type "s3" -}}
{{- $s3 := .Values.registry.s3 -}}
{{- $_ := set $env "FRAUD_SCORING__REGISTRY_S3__BUCKET" $s3.bucket -}}
{{- $_ := set $env "FRAUD_SCORING__REGISTRY_S3__PREFIX" $s3.prefix -}}
{{- with $s3.endpoint }}{{ $_ := set $env "FRAUD_SCORING__REGISTRY_S3__ENDPOINT_URL" . }}{{ end -}}
{{- with $s3.region }}{{ $_ := set $env "FRAUD_SCORING__REGISTRY_S3__REGION" . }}{{ end -}}
{{- end -}}
{{- if .Values.kafka.tls.caSecret -}}
{{- $_ := set $env "FRAUD_KAFKA__SSL_CA_LOCATION" (printf "%s/ca.crt" (include "fraudstream.kafkaCaDir" .)) -}}
{{- end -}}
{{- range $name := keys $env | sortAlpha }}
{{ $name }}: {{ index $env $name | quote }}
{{- end }}
{{- end -}}

{{/* ------------------------------------------------------------------------------------------
The pod template every workload uses: (dict "context" $ "component" "api|worker|trainer").
------------------------------------------------------------------------------------------ */}}
{{- define "fraudstream.podTemplate" -}}
{{- $ := .context -}}
{{- $component := .component -}}
{{- $values := index $.Values $component -}}
{{- $port := include "fraudstream.port" $component -}}
{{- $registryReadOnly := ne $component "trainer" -}}
metadata:
  labels:
    {{- include "fraudstream.componentLabels" (dict "context" $ "component" $component) | nindent 4 }}
    {{- with $values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- /* A change of settings or secrets changes these hashes, so the pods roll. */}}
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") $ | sha256sum }}
    checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") $ | sha256sum }}
    {{- /* Secrets the chart does not own: renaming one rolls the pods; rotating its content needs a restart (docs/operations.md). */}}
    checksum/secret-refs: {{ list $.Values.secrets.existingSecret $.Values.kafka.sasl.existingSecret $.Values.kafka.tls.caSecret $.Values.registry.s3.existingSecret | toJson | sha256sum }}
    {{- with $values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "fraudstream.serviceAccountName" $ }}
  automountServiceAccountToken: {{ $.Values.serviceAccount.automountServiceAccountToken }}
  {{- /* No docker-link style variables: with a release called "fraud" they would look like FRAUD_ settings. */}}
  enableServiceLinks: false
  {{- with $.Values.global.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  securityContext:
    {{- toYaml $.Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
  {{- with $values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ $component }}
      image: {{ include "fraudstream.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      args: [{{ $component | quote }}]
      ports:
        - name: http
          containerPort: {{ $port }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "fraudstream.fullname" $ }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        {{- if eq $component "worker" }}
        {{- /* <release>-fraudstream-worker-N, stable across restarts: the static group member id
        (group.instance.id), the transactional id suffix and the checkpoint folder. */}}
        - name: FRAUD_STREAM__INSTANCE_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- with (include "fraudstream.secretEnv" (dict "context" $ "component" $component) | trim) }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with $values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- /* /healthz: the process is alive (liveness, startup); /readyz: it can do its job (readiness). */}}
      startupProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: {{ $values.probes.startup.periodSeconds }}
        failureThreshold: {{ $values.probes.startup.failureThreshold }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: {{ $values.probes.liveness.periodSeconds }}
        timeoutSeconds: {{ $values.probes.liveness.timeoutSeconds }}
        failureThreshold: {{ $values.probes.liveness.failureThreshold }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: {{ $values.probes.readiness.periodSeconds }}
        timeoutSeconds: {{ $values.probes.readiness.timeoutSeconds }}
        failureThreshold: {{ $values.probes.readiness.failureThreshold }}
      resources:
        {{- toYaml $values.resources | nindent 8 }}
      securityContext:
        {{- toYaml $.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: cache
          mountPath: {{ include "fraudstream.cachePath" $ }}
        - name: registry
          mountPath: {{ include "fraudstream.registryPath" $ }}
          {{- if and $registryReadOnly (eq $.Values.registry.type "volume") }}
          readOnly: true
          {{- end }}
        {{- if eq $component "worker" }}
        - name: state
          mountPath: {{ include "fraudstream.statePath" $ }}
        {{- end }}
        {{- if $.Values.kafka.tls.caSecret }}
        - name: kafka-ca
          mountPath: {{ include "fraudstream.kafkaCaDir" $ }}
          readOnly: true
        {{- end }}
  volumes:
    {{- /* emptyDir is not noexec, so gcc output and numba caches can be loaded from it. */}}
    - name: tmp
      emptyDir:
        sizeLimit: {{ $.Values.tmpVolume.sizeLimit }}
    - name: cache
      emptyDir:
        sizeLimit: {{ $.Values.cacheVolume.sizeLimit }}
    - name: registry
      {{- if eq $.Values.registry.type "volume" }}
      persistentVolumeClaim:
        claimName: {{ include "fraudstream.registryClaimName" $ }}
      {{- else }}
      emptyDir:
        sizeLimit: {{ $.Values.registry.s3.cacheSizeLimit }}
      {{- end }}
    {{- if and (eq $component "worker") (not $values.persistence.enabled) }}
    - name: state
      emptyDir: {}
    {{- end }}
    {{- if $.Values.kafka.tls.caSecret }}
    - name: kafka-ca
      secret:
        secretName: {{ $.Values.kafka.tls.caSecret }}
        defaultMode: 0444
        items:
          - key: {{ $.Values.kafka.tls.caSecretKey }}
            path: ca.crt
    {{- end }}
{{- end -}}

{{- define "fraudstream.registryClaimName" -}}
{{- .Values.registry.volume.existingClaim | default (include "fraudstream.componentName" (dict "context" . "component" "registry")) -}}
{{- end -}}

{{/* storageClassName line for a PVC: "" = cluster default (omitted), "-" = none (""). */}}
{{- define "fraudstream.storageClass" -}}
{{- if eq . "-" }}
storageClassName: ""
{{- else if . }}
storageClassName: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* ------------------------------------------------------------------------------------------
Validation: every mistake is collected, then the render fails once, listing all of them.
(values.schema.json already rejects unknown keys and wrong types before templates run.)
------------------------------------------------------------------------------------------ */}}
{{- define "fraudstream.validateValues" -}}
{{- $messages := list -}}
{{- $messages = append $messages (include "fraudstream.validateValues.workers" .) -}}
{{- $messages = append $messages (include "fraudstream.validateValues.secrets" .) -}}
{{- $messages = append $messages (include "fraudstream.validateValues.kafka" .) -}}
{{- $messages = append $messages (include "fraudstream.validateValues.registry" .) -}}
{{- $messages = append $messages (include "fraudstream.validateValues.images" .) -}}
{{- $messages = append $messages (include "fraudstream.validateValues.autoscaling" .) -}}
{{- $messages = append $messages (include "fraudstream.validateValues.ingress" .) -}}
{{- $messages = without $messages "" -}}
{{- if $messages -}}
{{- printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}

{{- /*
Every worker reads every partition and keeps the whole feature state; the group shares out which
partitions each one decides. Workers beyond the partition count are hot standbys that take over on a
failure. More standbys than partitions buys nothing but cost: each one is a full copy of the state
and of the input traffic.
*/ -}}
{{- define "fraudstream.validateValues.workers" -}}
{{- $replicas := int .Values.worker.replicaCount -}}
{{- $partitions := int .Values.settings.kafka.partitions -}}
{{- if gt $replicas (mul 2 $partitions) -}}
fraudstream: worker.replicaCount
    worker.replicaCount ({{ $replicas }}) must not exceed twice settings.kafka.partitions ({{ $partitions }}):
    at most {{ $partitions }} workers decide; the others are hot standbys, each reading all the input
    and holding the whole state. More standbys than partitions add cost, not availability.
    Lower worker.replicaCount or raise settings.kafka.partitions (and the topics' partitions).
{{- end -}}
{{- end -}}

{{- define "fraudstream.validateValues.secrets" -}}
{{- if and (not .Values.global.development) (not .Values.secrets.existingSecret) -}}
{{- $missing := list -}}
{{- if not .Values.secrets.apiKeys -}}{{- $missing = append $missing "secrets.apiKeys" -}}{{- end -}}
{{- if not .Values.secrets.tokenizationKey -}}{{- $missing = append $missing "secrets.tokenizationKey" -}}{{- end -}}
{{- if $missing -}}
fraudstream: {{ join ", " $missing }}
    No API-key hashes / tokenization key: set {{ join " and " $missing }}, or name an existing
    Secret in secrets.existingSecret (keys secrets.existingSecretKeys.*). There are no working
    defaults outside development (global.development=true uses public placeholder keys).
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "fraudstream.validateValues.kafka" -}}
{{- $kafka := .Values.settings.kafka -}}
{{- $lines := list -}}
{{- if and (not .Values.global.development) (not $kafka.bootstrap_servers) -}}
{{- $lines = append $lines "settings.kafka.bootstrap_servers is required (host:port of the cluster's brokers)." -}}
{{- end -}}
{{- if include "fraudstream.saslEnabled" . -}}
{{- if not $kafka.sasl_mechanism -}}
{{- $lines = append $lines (printf "settings.kafka.sasl_mechanism is required with security_protocol %s (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)." $kafka.security_protocol) -}}
{{- end -}}
{{- if not $kafka.sasl_username -}}
{{- $lines = append $lines (printf "settings.kafka.sasl_username is required with security_protocol %s." $kafka.security_protocol) -}}
{{- end -}}
{{- if not (or .Values.kafka.sasl.existingSecret .Values.kafka.sasl.password) -}}
{{- $lines = append $lines (printf "kafka.sasl.existingSecret (or kafka.sasl.password) is required with security_protocol %s." $kafka.security_protocol) -}}
{{- end -}}
{{- else if or .Values.kafka.sasl.existingSecret .Values.kafka.sasl.password $kafka.sasl_mechanism -}}
{{- $lines = append $lines (printf "kafka.sasl / settings.kafka.sasl_mechanism are set but settings.kafka.security_protocol is %s: use SASL_SSL (or SASL_PLAINTEXT)." $kafka.security_protocol) -}}
{{- end -}}
{{- if and .Values.kafka.tls.caSecret (not (hasSuffix "SSL" $kafka.security_protocol)) -}}
{{- $lines = append $lines (printf "kafka.tls.caSecret is set but settings.kafka.security_protocol is %s: use SSL or SASL_SSL." $kafka.security_protocol) -}}
{{- end -}}
{{- if $lines -}}
fraudstream: settings.kafka / kafka
    {{ join "\n    " $lines }}
{{- end -}}
{{- end -}}

{{- define "fraudstream.validateValues.registry" -}}
{{- $lines := list -}}
{{- if eq .Values.registry.type "s3" -}}
{{- if not .Values.registry.s3.bucket -}}
{{- $lines = append $lines "registry.s3.bucket is required when registry.type is s3." -}}
{{- end -}}
{{- if and .Values.registry.s3.accessKeyId (not .Values.registry.s3.secretAccessKey) -}}
{{- $lines = append $lines "registry.s3.secretAccessKey is required with registry.s3.accessKeyId." -}}
{{- end -}}
{{- else if and (not .Values.global.development) (not .Values.registry.volume.existingClaim) (not (has "ReadWriteMany" .Values.registry.volume.accessModes)) -}}
{{- $lines = append $lines "registry.volume.accessModes must include ReadWriteMany: the API, the workers and the trainer mount the registry from different nodes (or use registry.type=s3)." -}}
{{- end -}}
{{- if $lines -}}
fraudstream: registry
    {{ join "\n    " $lines }}
{{- end -}}
{{- end -}}

{{- define "fraudstream.validateValues.images" -}}
{{- $lines := list -}}
{{- if and (not .Values.image.digest) (eq (include "fraudstream.imageTag" .) "latest") -}}
{{- $lines = append $lines "image.tag must not be latest: pin a release (or set image.digest)." -}}
{{- end -}}
{{- if eq (toString .Values.tests.image.tag) "latest" -}}
{{- $lines = append $lines "tests.image.tag must not be latest: pin a release." -}}
{{- end -}}
{{- if $lines -}}
fraudstream: image
    {{ join "\n    " $lines }}
{{- end -}}
{{- end -}}

{{- define "fraudstream.validateValues.autoscaling" -}}
{{- $hpa := .Values.api.autoscaling -}}
{{- if and $hpa.enabled (gt (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
fraudstream: api.autoscaling
    api.autoscaling.minReplicas ({{ $hpa.minReplicas }}) must not exceed api.autoscaling.maxReplicas ({{ $hpa.maxReplicas }}).
{{- end -}}
{{- end -}}

{{- define "fraudstream.validateValues.ingress" -}}
{{- if and .Values.api.ingress.enabled (not .Values.api.ingress.hosts) -}}
fraudstream: api.ingress.hosts
    api.ingress.enabled is true but api.ingress.hosts is empty: list at least one host.
{{- end -}}
{{- end -}}
