"""Monitoring: drift statistics, streaming window sketches, and (later) monitors, alerts and incidents."""
