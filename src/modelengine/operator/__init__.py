"""The kopf operator: ModelEngines → build keys per GPU kind → builder Jobs → status.

Kubebuilder's split, one job per module (the reconcile path is described in
docs/operator.md, "Code"):

- wiring: `command` (`modelengine operator`), `config` (flags), `run` (kopf in-process),
  `kube` (the few API calls made), `leader` (Lease election), `metrics`;
- the controller machinery: `workqueue` (queue, backoff, workers), `informers` (watch
  caches and the build-key index), `controller` (reconcile: the plan it executes);
- what reconcile delegates to: `sources` (model digest from a source record, or a
  resolve Job), `storage` (store access with the resource's Secret), `plan` (targets →
  build keys), `engines` (the per-target state machine), `builds` (Job slots, creation,
  supersession), `status` + `status_writer` (typed status, written when it differs, Events),
  `release_record`, `serving` + `serving_objects` (spec.serving), `retention` (finalizer);
- pure renderers and helpers: `build_jobs` (Job manifests), `names` (valid names and label
  values), `nodes` (GPU kinds from Node labels), `limiter` (build slots).

This package never imports export, verify, backends or torch.
"""
