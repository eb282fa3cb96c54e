{{/*
Admission: how much work a pod takes at once, derived from its memory limit.

The services refuse work beyond a cap with RESOURCE_EXHAUSTED at once (the caller retries on
another pod or later), so a burst slows a pod down but never gets it OOM-killed. The cap is a
Settings field (faceanalysis.specs `admits`): max_concurrent_images for image-input and
face-landmark, batch_queue_max_faces for face-attributes. The chart sets it to what the
container's memory limit holds:

    max(1, floor((resources.limits.memory - admission.baseMemory) / admission.perItemMemory))

unless <service>.config (or global.config) sets the field itself; then that value wins.
*/}}

{{/*
A Kubernetes memory quantity in MiB (a float, printed): binary (Ki, Mi, Gi, Ti) and decimal
(k, K, M, G, T) suffixes, fractions ("1.5Gi") and plain bytes (536870912 or "536870912").
Usage: include "faceanalysis.memoryMiB" "1.5Gi" | float64
*/}}
{{- define "faceanalysis.memoryMiB" -}}
{{- $bytes := 0.0 -}}
{{- if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) -}}
{{- $bytes = float64 . -}}
{{- else -}}
{{- $q := toString . | trim -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?([KMGT]i|[kKMGT])?$" $q) -}}
{{- fail (printf "cannot read the memory quantity %q: use a Kubernetes quantity such as 512Mi, 1.5Gi, 2000M or plain bytes" $q) -}}
{{- end -}}
{{- $number := regexReplaceAll "[A-Za-z]+$" $q "" -}}
{{- $suffix := trimPrefix $number $q -}}
{{- $factors := dict "" 1 "k" 1000 "K" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- $bytes = mulf (float64 $number) (index $factors $suffix) -}}
{{- end -}}
{{- divf $bytes 1048576 -}}
{{- end -}}

{{/* This service's config: <service>.config merged over global.config, as YAML. */}}
{{- define "faceanalysis.config" -}}
{{- merge (deepCopy (.Values.config | default dict)) (deepCopy ((.Values.global | default dict).config | default dict)) | toYaml -}}
{{- end -}}

{{/* Whether config sets `key` (a null value unsets it): include "faceanalysis.configSets" (list . "max_workers") */}}
{{- define "faceanalysis.configSets" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $config := include "faceanalysis.config" $root | fromYaml -}}
{{- if and (hasKey $config $key) (not (kindIs "invalid" (index $config $key))) -}}true{{- end -}}
{{- end -}}

{{/*
The admission limit derived from resources.limits.memory and admission.{baseMemory,perItemMemory}.
Fails when the limit is missing or holds less than the base plus one item.
*/}}
{{- define "faceanalysis.derivedAdmission" -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
{{- $name := .Chart.Name -}}
{{- $a := .Values.admission | default dict -}}
{{- $limit := ((.Values.resources | default dict).limits | default dict).memory -}}
{{- if not $limit -}}
{{- fail (printf "%s: resources.limits.memory is required: the chart derives %s (how much work a pod admits) from it; set the limit, or set %s.config.%s yourself" $name $spec.admits $name $spec.admits) -}}
{{- end -}}
{{- if not (and $a.baseMemory $a.perItemMemory) -}}
{{- fail (printf "%s: admission.baseMemory and admission.perItemMemory are required to derive %s from the memory limit" $name $spec.admits) -}}
{{- end -}}
{{- $limitMiB := include "faceanalysis.memoryMiB" $limit | float64 -}}
{{- $base := include "faceanalysis.memoryMiB" $a.baseMemory | float64 -}}
{{- $per := include "faceanalysis.memoryMiB" $a.perItemMemory | float64 -}}
{{- if le $per 0.0 -}}
{{- fail (printf "%s: admission.perItemMemory must be more than 0 (got %v)" $name $a.perItemMemory) -}}
{{- end -}}
{{- if lt $limitMiB (addf $base $per) -}}
{{- fail (printf "%s: resources.limits.memory %v is too small: it must hold admission.baseMemory (%v) plus at least one item (admission.perItemMemory %v), that is %dMi or more; raise the limit or lower admission.*" $name $limit $a.baseMemory $a.perItemMemory (ceil (addf $base $per) | int)) -}}
{{- end -}}
{{- max 1 (floor (divf (subf $limitMiB $base) $per) | int) -}}
{{- end -}}

{{/*
The admission limit in effect: config's value when set, else the derived one; empty for a
service that admits nothing (data-storage).
*/}}
{{- define "faceanalysis.admissionLimit" -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
{{- with $spec.admits -}}
{{- if include "faceanalysis.configSets" (list $ .) -}}
{{- index (include "faceanalysis.config" $ | fromYaml) . | int -}}
{{- else -}}
{{- include "faceanalysis.derivedAdmission" $ -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Environment entries the chart derives for this service (each only when config does not set it
and extraEnv does not name it):
- the admission limit (FACEANALYSIS_MAX_CONCURRENT_IMAGES or FACEANALYSIS_BATCH_QUEUE_MAX_FACES);
- face-landmark: FACEANALYSIS_MAX_WORKERS = that limit. Every admitted image is blocking work
  (decode, detect), and the limit already bounds its memory, so a smaller pool would only queue
  admitted images behind each other; the CPU limit bounds the threads' speed, not their memory;
- face-landmark, face-attributes: FACEANALYSIS_CPU_LIMIT from the downward API (limits.cpu,
  rounded up to whole CPUs), so ONNX Runtime and OpenCV size their thread pools to the
  container's limit instead of the node's CPU count.
*/}}
{{- define "faceanalysis.derivedEnv" -}}
{{- $spec := include "faceanalysis.spec" (list . .Chart.Name) | fromYaml -}}
{{- $extra := list -}}
{{- range .Values.extraEnv | default list }}{{ $extra = append $extra .name }}{{ end -}}
{{- $limit := include "faceanalysis.admissionLimit" . -}}
{{- if and $spec.admits (not (include "faceanalysis.configSets" (list . $spec.admits))) (not (has (printf "FACEANALYSIS_%s" (upper $spec.admits)) $extra)) }}
- name: FACEANALYSIS_{{ upper $spec.admits }}
  value: {{ $limit | quote }}
{{- end }}
{{- if and $spec.workersFollowAdmission (not (include "faceanalysis.configSets" (list . "max_workers"))) (not (has "FACEANALYSIS_MAX_WORKERS" $extra)) }}
- name: FACEANALYSIS_MAX_WORKERS
  value: {{ $limit | quote }}
{{- end }}
{{- if and $spec.cpuLimit (not (include "faceanalysis.configSets" (list . "cpu_limit"))) (not (has "FACEANALYSIS_CPU_LIMIT" $extra)) }}
- name: FACEANALYSIS_CPU_LIMIT
  valueFrom:
    resourceFieldRef:
      resource: limits.cpu
      divisor: "1"
{{- end }}
{{- end -}}

{{/*
Target of the HPA's Pods metric per pod: autoscaling.inFlight.averageValue, else 75 % of the
admission limit (rounded down, at least 1), so pods are added before they refuse work.
*/}}
{{- define "faceanalysis.inFlightTarget" -}}
{{- $value := .Values.autoscaling.inFlight.averageValue -}}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") -}}
{{- $value -}}
{{- else -}}
{{- $limit := include "faceanalysis.admissionLimit" . -}}
{{- if not $limit -}}
{{- fail (printf "%s: autoscaling.inFlight.averageValue is required (this service admits no work, so there is no limit to derive it from)" .Chart.Name) -}}
{{- end -}}
{{- max 1 (floor (mulf ($limit | float64) 0.75) | int) -}}
{{- end -}}
{{- end -}}
