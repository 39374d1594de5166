"""HTTP adapters: the Stripe webhook, the JSON API, its serializers and URLs.
Each view checks its input, calls one service or selector, and maps the result
to an HTTP answer."""
