"""The kopf operator: ModelEngines → build keys per GPU kind → builder Jobs → status.

Modules, one job each: `config` (flags), `nodes` (GPU kinds from Node labels), `digests`
(model digests, cached), `plan` (targets → keys → what to do), `jobs` (the builder Job
manifest), `status` (status/conditions from engine states), `limiter` (concurrent build
limits), `storage` (store access with the resource's Secret), `kube` (the few API calls
the controller makes), `controller` (informer caches + work queue + reconcile), `handlers`
(kopf wiring), `metrics`, `run` (start kopf in-process), `command` (`modelengine operator`).
This package never imports export, verify, backends or torch.
"""
