"""Serving: deployments, traffic routing, runtime, prediction log and feedback."""
