"""The console's own pages, one module per page, each routed by its ModelAdmin's
``get_urls`` (so their paths and URL names sit under the model's admin URLs).

A page checks its permission itself and changes nothing but through
``fulfillment.services.operations``.
"""
