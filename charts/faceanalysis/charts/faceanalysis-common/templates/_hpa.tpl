{{/*
HorizontalPodAutoscaler (autoscaling/v2): CPU by default; optionally the in-flight gRPC
calls per pod (faceanalysis_grpc_requests_in_flight through prometheus-adapter), which tracks
load better for services that wait on peers or batch inference.
*/}}
{{- define "faceanalysis.hpa" -}}
{{- $a := .Values.autoscaling -}}
{{- if $a.enabled -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "faceanalysis.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "faceanalysis.labels" . | nindent 4 }}
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
          name: faceanalysis_grpc_requests_in_flight
        target:
          type: AverageValue
          averageValue: {{ $a.inFlight.averageValue | quote }}
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
