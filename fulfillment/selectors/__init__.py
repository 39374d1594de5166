"""Reads that several places share (API, commands, console, health, services).

They return models, querysets or frozen dataclasses, never JSON: the JSON shapes
live beside the API (``fulfillment.web.serializers``)."""
