"""Query service over a finished run: HTTP API (FastAPI + uvicorn), micro-batching, client.

    ccpipe-geometry serve RUN_DIR            # geometry.service.server
    ccpipe-geometry client health|distance|neighbours|path|embed|document ...

See docs/service.md.
"""
