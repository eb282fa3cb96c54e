{{/*
Two Services per faceanalysis service:
- "<name>": ClusterIP on the gRPC port only, for the Ingress, port-forward and grpcurl;
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
spec:
  type: ClusterIP
  selector:
    {{- include "faceanalysis.selectorLabels" . | nindent 4 }}
  ports:
    - {name: grpc, port: {{ $spec.port }}, targetPort: grpc, protocol: TCP, appProtocol: grpc}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "faceanalysis.fullname" . }}-headless
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "faceanalysis.labels" . | nindent 4 }}
    faceanalysis.io/scrape: "true"
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
automountServiceAccountToken: false
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
  annotations:
    # The archive outlives an uninstall, like Redis' data.
    helm.sh/resource-policy: keep
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
