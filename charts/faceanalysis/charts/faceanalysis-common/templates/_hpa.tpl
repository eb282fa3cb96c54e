{{/*
HorizontalPodAutoscaler (autoscaling/v2): CPU by default; optionally (autoscaling.inFlight)
the work each pod holds, through prometheus-adapter (docs/deploy.md):
- faceanalysis_work_in_flight for the services that admit work (images in image-input and
  face-landmark, faces in face-attributes, queued ones included). Unlike CPU it moves for pods
  that wait on peers or batch inference, and idle streams count nothing. The target defaults to
  75 % of the admission limit (faceanalysis.inFlightTarget), so pods are added before any
  refuses work;
- faceanalysis_grpc_requests_in_flight for data-storage, which admits nothing (averageValue
  must be set).
*/}}
{{- define "faceanalysis.hpa" -}}
{{- $a := .Values.autoscaling -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
{{- if $a.enabled -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "faceanalysis.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "faceanalysis.labels" . | nindent 4 }}
  {{- include "faceanalysis.annotations" (list . dict 2) }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "faceanalysis.fullname" . }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    {{- if $a.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
    {{- end }}
    {{- if $a.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ $a.targetMemoryUtilizationPercentage }}
    {{- end }}
    {{- if $a.inFlight.enabled }}
    - type: Pods
      pods:
        metric:
          name: {{ if $spec.admits }}faceanalysis_work_in_flight{{ else }}faceanalysis_grpc_requests_in_flight{{ end }}
        target:
          type: AverageValue
          averageValue: {{ include "faceanalysis.inFlightTarget" . | quote }}
    {{- end }}
  behavior:
    scaleUp:
      stabilizationWindowSeconds: {{ $a.behavior.scaleUp.stabilizationWindowSeconds }}
      policies:
        - {type: Percent, value: 100, periodSeconds: 30}
    # Scale down slowly: model-bearing pods take a while to become SERVING again.
    scaleDown:
      stabilizationWindowSeconds: {{ $a.behavior.scaleDown.stabilizationWindowSeconds }}
      policies:
        - {type: Pods, value: {{ $a.behavior.scaleDown.podsPerMinute }}, periodSeconds: 60}
{{- end -}}
{{- end -}}
