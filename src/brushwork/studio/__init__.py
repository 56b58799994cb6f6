"""The web studio (``brushwork serve``): one page and a JSON API over a job queue.

``app`` (the FastAPI application and its API), ``intake`` (the checks of a request before
anything is stored), ``jobs`` (the worker threads; every job goes through
``brushwork.api.stylize_tensors``), ``db`` (the SQLite job table), ``catalog`` (methods,
controls, bundled styles), ``server`` (uvicorn), ``static/`` (the page: HTML, JS, CSS).
FastAPI, uvicorn and python-multipart come with the ``studio`` extra.
"""
