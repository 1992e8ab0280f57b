"""The ingress stage: the upstream services' door to the pipeline (docs/security.md)."""
