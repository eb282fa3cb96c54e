{{/* The Deployment of one faceanalysis service; `.` is the context of faceanalysis.context. */}}
{{- define "faceanalysis.deployment" -}}
{{- include "faceanalysis.archiveCheck" . -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
{{- $global := .Values.global | default dict -}}
{{- $models := $global.models | default dict -}}
{{- $pullModels := and $spec.models (eq ($models.source | default "initContainer") "initContainer") -}}
{{- $sharedModels := and $spec.models (eq ($models.source | default "initContainer") "volume") -}}
{{- if and $sharedModels (hasKey ($models.volume | default dict) "image") (semverCompare "<1.33.0-0" .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "%s: global.models.volume.image (an image volume) needs Kubernetes 1.33 or newer, this cluster runs %s: use a ReadOnlyMany persistentVolumeClaim instead, or global.models.source=baked" .Chart.Name .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if and $sharedModels (not $models.volume) -}}
{{- fail (printf "%s: global.models.source=volume needs global.models.volume, the volume that holds the model files as `faceanalysis models pull` lays them out, e.g. {persistentVolumeClaim: {claimName: faceanalysis-models, readOnly: true}} or, on Kubernetes 1.33+, {image: {reference: registry.example/faceanalysis-models:1}}" .Chart.Name) -}}
{{- end -}}
{{- $probes := .Values.probes | default dict -}}
{{- $probePort := include "faceanalysis.probePort" . -}}
{{- $containerSecurity := include "faceanalysis.securityContext" (list . .Values.containerSecurityContext) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "faceanalysis.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "faceanalysis.labels" . | nindent 4 }}
  {{- include "faceanalysis.annotations" (list . dict 2) }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      {{- include "faceanalysis.selectorLabels" . | nindent 6 }}
  strategy:
    {{- if include "faceanalysis.archiveSingleAttach" . }}
    # The archive claim attaches to one node at a time: a surge pod elsewhere would wait forever.
    type: Recreate
    {{- else }}
    type: RollingUpdate
    rollingUpdate:
      # New pods must be SERVING (models loaded, warm-up passed) before old ones go.
      maxSurge: 25%
      maxUnavailable: 0
    {{- end }}
  template:
    metadata:
      labels:
        {{- include "faceanalysis.podLabels" . | nindent 8 }}
      {{- with .Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "faceanalysis.serviceAccountName" . }}
      # The services never call the Kubernetes API (serviceAccount.automountServiceAccountToken).
      automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken | default false }}
      {{- with include "faceanalysis.priorityClassName" . }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $global.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      # Longer than FACEANALYSIS_SHUTDOWN_GRACE_SECONDS so in-flight calls finish before SIGKILL.
      terminationGracePeriodSeconds: {{ include "faceanalysis.terminationGrace" . }}
      securityContext:
        {{- include "faceanalysis.securityContext" (list . .Values.podSecurityContext) | nindent 8 }}
      {{- if or $pullModels $sharedModels }}
      initContainers:
        - name: models
          image: {{ include "faceanalysis.image" . }}
          imagePullPolicy: {{ include "faceanalysis.imagePullPolicy" . }}
          {{- if $pullModels }}
          # Models are provisioned before the server starts, never fetched while serving.
          command: ["faceanalysis", "models", "pull", "--only", {{ .Chart.Name | quote }}]
          {{- else }}
          # A shared, pre-filled volume: checked against the manifest (sha256 of every file) before
          # the server starts, so a half-filled or stale volume stops the pod with the reason.
          command: ["faceanalysis", "models", "verify", "--only", {{ .Chart.Name | quote }}]
          {{- end }}
          env:
            - name: FACEANALYSIS_MODELS_DIR
              value: {{ .Values.models.dir | quote }}
            {{- with $models.mirror }}
            - name: FACEANALYSIS_MODEL_MIRROR
              value: {{ . | quote }}
            {{- end }}
            {{- if $models.allowUnverified }}
            - name: FACEANALYSIS_ALLOW_UNVERIFIED_MODELS
              value: "true"
            {{- end }}
            {{- /* A mirror behind a proxy or a private CA: the same extras as the service. */}}
            {{- with .Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with .Values.extraEnvFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          resources:
            {{- toYaml .Values.models.resources | nindent 12 }}
          securityContext:
            {{- $containerSecurity | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            - {name: models, mountPath: {{ .Values.models.dir }}{{ if $sharedModels }}, readOnly: true{{ end }}}
            {{- with .Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      {{- end }}
      containers:
        - name: {{ .Chart.Name }}
          image: {{ include "faceanalysis.image" . }}
          imagePullPolicy: {{ include "faceanalysis.imagePullPolicy" . }}
          command: ["faceanalysis", "serve", {{ .Chart.Name | quote }}]
          ports:
            - {name: grpc, containerPort: {{ $spec.port }}, protocol: TCP}
            - {name: metrics, containerPort: {{ $spec.metricsPort }}, protocol: TCP}
            {{- if include "faceanalysis.tls.enabled" . }}
            - {name: health, containerPort: {{ $spec.healthPort }}, protocol: TCP}
            {{- end }}
            {{- if include "faceanalysis.http.enabled" . }}
            - {name: http, containerPort: {{ $spec.httpPort }}, protocol: TCP}
            {{- end }}
          env:
            {{- include "faceanalysis.env" . | nindent 12 }}
          {{- with .Values.extraEnvFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          # Health turns SERVING only after models load and a warm-up inference passes, so the
          # startup probe gives model loading time before liveness applies. Health is answered on
          # the server's event loop, outside the work thread pool and admission, so a pod busy
          # with a full pool still answers in milliseconds; the timeouts only cover a loaded node
          # and a CPU-throttled container. With global.tls on they ask the plaintext health port
          # (the kubelet cannot do TLS). The HTTP API (image-input) plays no part in readiness.
          {{- with $probes.startup }}{{ if .enabled }}
          startupProbe:
            grpc: {port: {{ $probePort }}, service: {{ $spec.grpcService }}}
            {{- include "faceanalysis.probeTiming" . | nindent 12 }}
          {{- end }}{{ end }}
          {{- with $probes.readiness }}{{ if .enabled }}
          readinessProbe:
            grpc: {port: {{ $probePort }}, service: {{ $spec.grpcService }}}
            {{- include "faceanalysis.probeTiming" . | nindent 12 }}
          {{- end }}{{ end }}
          # Liveness asks the server as a whole (""); by default it tolerates 60 s (10 s x 6) of
          # failures, longer than the shutdown grace, so a draining pod is never killed early.
          {{- with $probes.liveness }}{{ if .enabled }}
          livenessProbe:
            grpc: {port: {{ $probePort }}, service: ""}
            {{- include "faceanalysis.probeTiming" . | nindent 12 }}
          {{- end }}{{ end }}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          securityContext:
            {{- $containerSecurity | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            {{- if or $pullModels $sharedModels }}
            - {name: models, mountPath: {{ .Values.models.dir }}, readOnly: true}
            {{- end }}
            {{- if $spec.archive }}
            - {name: archive, mountPath: {{ .Values.archive.dir }}}
            {{- end }}
            {{- include "faceanalysis.tls.volumeMount" . | nindent 12 }}
            {{- include "faceanalysis.apiKeys.volumeMount" . | nindent 12 }}
            {{- with .Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ .Values.tmpSizeLimit }}
        {{- if $pullModels }}
        - name: models
          emptyDir:
            sizeLimit: {{ .Values.models.sizeLimit }}
        {{- else if $sharedModels }}
        - name: models
          {{- toYaml $models.volume | nindent 10 }}
        {{- end }}
        {{- if $spec.archive }}
        - name: archive
          {{- if .Values.archive.persistence.enabled }}
          persistentVolumeClaim:
            claimName: {{ .Values.archive.persistence.existingClaim | default (printf "%s-archive" (include "faceanalysis.fullname" .)) }}
          {{- else }}
          emptyDir:
            sizeLimit: {{ .Values.archive.persistence.size }}
          {{- end }}
        {{- end }}
        {{- include "faceanalysis.tls.volume" . | nindent 8 }}
        {{- include "faceanalysis.apiKeys.volume" . | nindent 8 }}
        {{- with .Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- tpl (toYaml .) $ | nindent 8 }}
      {{- end }}
{{- end -}}

{{/* terminationGracePeriodSeconds: the configured value, else shutdown grace + 15 s. */}}
{{- define "faceanalysis.terminationGrace" -}}
{{- $config := merge (deepCopy (.Values.config | default dict)) (deepCopy ((.Values.global | default dict).config | default dict)) -}}
{{- $shutdown := $config.shutdown_grace_seconds | default 25 | float64 -}}
{{- .Values.terminationGracePeriodSeconds | default (addf $shutdown 15 | ceil) | int -}}
{{- end -}}
