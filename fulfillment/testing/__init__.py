"""Builders for tests, demos and load tools: signed Stripe events, the demo
catalogue. Never imported by code that serves production traffic."""
