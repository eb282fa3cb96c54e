{{/*
Two Services per faceanalysis service:
- "<name>": ClusterIP on the gRPC port (and image-input's HTTP port), for the edge, port-forward
  and grpcurl;
- "<name>-headless": every pod's address, for dns:/// round_robin clients and for Prometheus
  (only this one names the metrics port, so each pod is scraped once).
*/}}
{{- define "faceanalysis.services" -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "faceanalysis.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "faceanalysis.labels" . | nindent 4 }}
  {{- include "faceanalysis.annotations" (list . dict 2) }}
spec:
  type: ClusterIP
  selector:
    {{- include "faceanalysis.selectorLabels" . | nindent 4 }}
  ports:
    - {name: grpc, port: {{ $spec.port }}, targetPort: grpc, protocol: TCP, appProtocol: grpc}
    {{- if include "faceanalysis.http.enabled" . }}
    - {name: http, port: {{ $spec.httpPort }}, targetPort: http, protocol: TCP, appProtocol: {{ if include "faceanalysis.tls.enabled" . }}https{{ else }}http{{ end }}}
    {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "faceanalysis.fullname" . }}-headless
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "faceanalysis.labels" . | nindent 4 }}
    faceanalysis.io/scrape: "true"
  {{- include "faceanalysis.annotations" (list . dict 2) }}
spec:
  type: ClusterIP
  clusterIP: None
  # Clients resolve pod IPs themselves; a pod appears as soon as it is ready.
  publishNotReadyAddresses: false
  selector:
    {{- include "faceanalysis.selectorLabels" . | nindent 4 }}
  ports:
    - {name: grpc, port: {{ $spec.port }}, targetPort: grpc, protocol: TCP, appProtocol: grpc}
    - {name: metrics, port: {{ $spec.metricsPort }}, targetPort: metrics, protocol: TCP, appProtocol: http}
{{- end -}}

{{- define "faceanalysis.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "faceanalysis.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "faceanalysis.labels" . | nindent 4 }}
  {{- include "faceanalysis.annotations" (list . .Values.serviceAccount.annotations 2) }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken | default false }}
{{- end -}}
{{- end -}}

{{- define "faceanalysis.pdb" -}}
{{- if .Values.pdb.enabled -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "faceanalysis.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "faceanalysis.labels" . | nindent 4 }}
  {{- include "faceanalysis.annotations" (list . dict 2) }}
spec:
  {{- if .Values.pdb.minAvailable }}
  minAvailable: {{ .Values.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .Values.pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "faceanalysis.selectorLabels" . | nindent 6 }}
{{- end -}}
{{- end -}}

{{/*
Whether the archive can give the same answer from every data-storage replica. Each replica reads
and deletes results in the archive it mounts, so when the HPA (or replicaCount) allows more than
one, they must share one volume that every node can mount at once: a ReadWriteMany claim. Else,
a result past its Redis TTL would be found, or deleted, only by the pod that stored it, and a
surge pod on another node would hang on a ReadWriteOnce claim. Fails rendering with the way out.
With persistence on and no ReadWriteMany, the single replica is replaced with the Recreate
strategy (see faceanalysis.archiveSingleAttach).
*/}}
{{- define "faceanalysis.archiveCheck" -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
{{- if $spec.archive -}}
{{- $most := ternary (int .Values.autoscaling.maxReplicas) (int .Values.replicaCount) (.Values.autoscaling.enabled | default false) -}}
{{- $persistence := .Values.archive.persistence -}}
{{- $shared := and $persistence.enabled (has "ReadWriteMany" ($persistence.accessModes | default list)) -}}
{{- if and (gt $most 1) (not $shared) -}}
{{- fail (printf "%s: up to %d replicas (%s) would each keep their own archive, so a result past its Redis TTL would be found or deleted only by the pod that stored it. Either share one archive: archive.persistence.enabled=true with accessModes [ReadWriteMany] (a storage class that offers it: NFS, CephFS, EFS, Azure Files, Filestore), or run one replica: autoscaling.enabled=false and replicaCount=1" .Chart.Name $most (ternary "autoscaling.maxReplicas" "replicaCount" (.Values.autoscaling.enabled | default false))) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when data-storage's archive is a claim that only one node can mount (ReadWriteOnce). */}}
{{- define "faceanalysis.archiveSingleAttach" -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
{{- if $spec.archive -}}
{{- $persistence := .Values.archive.persistence | default dict -}}
{{- if and $persistence.enabled (not (has "ReadWriteMany" ($persistence.accessModes | default list))) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* The archive PVC of data-storage, when persistence is on and no claim is given. */}}
{{- define "faceanalysis.archiveClaim" -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
{{- if and $spec.archive .Values.archive.persistence.enabled (not .Values.archive.persistence.existingClaim) -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "faceanalysis.fullname" . }}-archive
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "faceanalysis.labels" . | nindent 4 }}
  {{- /* The archive outlives an uninstall, like Redis' data. */}}
  {{- include "faceanalysis.annotations" (list . (dict "helm.sh/resource-policy" "keep") 2) }}
spec:
  accessModes:
    {{- toYaml .Values.archive.persistence.accessModes | nindent 4 }}
  {{- with .Values.archive.persistence.storageClass }}
  storageClassName: {{ . | quote }}
  {{- end }}
  resources:
    requests:
      storage: {{ .Values.archive.persistence.size }}
{{- end -}}
{{- end -}}
