"""The webhook gateway: verified, replay-proof public ingress."""
