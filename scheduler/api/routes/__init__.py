"""HTTP routes; each module exposes ``router`` and is listed in ``scheduler.api.app.ROUTERS``."""
