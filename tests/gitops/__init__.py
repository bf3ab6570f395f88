"""GitOps integration tests: the Argo CD health check."""
