"""Request and response bodies of the HTTP API (``...Create``/``...Update``/``...Public``),
one module per resource; :mod:`app.schemas.common` holds what they share."""
