{{/*
Checks across the service charts, which only the umbrella chart sees together. A chart sees
its own values and `global`, not a sibling's:
- labels and annotations for every object must be under `global`, not at the top level, where
  only the umbrella chart's few objects would get them;
- when face-landmark, face-attributes, data-storage or redis is renamed (nameOverride,
  fullnameOverride), the charts that dial it cannot know the new name.
Rendering stops with the value to set, rather than deploying a release that half applies them
or whose calls go nowhere.
*/}}
{{- define "faceanalysis.checks" -}}
{{- range $key := list "commonLabels" "commonAnnotations" -}}
{{- if index $.Values $key -}}
{{- fail (printf "%s applies to every object of the release as global.%s: Helm shows the service charts only their own section and `global`, so a top-level %s would miss them (a service's own goes under its section, e.g. image-input.%s)" $key $key $key $key) -}}
{{- end -}}
{{- end -}}
{{- $specs := include "faceanalysis.specs" . | fromYaml -}}
{{- $ii := index .Values "image-input" | default dict -}}
{{- $config := merge (deepCopy ($ii.config | default dict)) (deepCopy (.Values.global.config | default dict)) -}}
{{- range $peer := (index $specs "image-input").calls -}}
{{- $values := index $.Values $peer | default dict -}}
{{- $target := (index $specs $peer).target -}}
{{- if and (or $values.nameOverride $values.fullnameOverride) (not (index $config $target)) -}}
{{- fail (printf "%s is renamed to %s, and image-input, which dials it, cannot see %s's values: set image-input.config.%s=dns:///%s:%v" $peer (include "faceanalysis.name" (list $ $peer)) $peer $target (include "faceanalysis.headlessHost" (list $ $peer)) (index $specs $peer).port) -}}
{{- end -}}
{{- end -}}
{{- $redis := .Values.redis | default dict -}}
{{- if and $redis.enabled (or $redis.nameOverride $redis.fullnameOverride) (not .Values.global.redis.host) -}}
{{- fail (printf "redis is renamed to %s, and data-storage, which dials it, cannot see redis' values: set global.redis.host=%s.%s.svc.%s" (include "faceanalysis.name" (list . "redis")) (include "faceanalysis.name" (list . "redis")) .Release.Namespace .Values.global.clusterDomain) -}}
{{- end -}}
{{- end -}}
