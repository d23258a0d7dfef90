"""The apps :mod:`bench.streams` serves under ``gunicorn -k gevent``, one per run.

Both expose the same endpoints:

``GET /events``
    the stream (opens with the comment ``: ok``, then one ``tick`` event per publish);
``POST /start?count=C&interval=S``
    start a publisher greenlet in the worker: ``C`` events, one every ``S`` seconds on an absolute
    schedule, each carrying ``{"seq": n, "t": <time.time() at publish>}``;
``POST /gc-freeze``
    an experiment: :func:`gc.collect` then :func:`gc.freeze` (the bench calls it, when asked,
    before the publishing phase is measured);
``GET /stats``
    JSON: open subscribers, events published, the duration of each publish call (the
    synchronous fan-out to every subscriber's buffer) and the garbage collector's totals;
``GET /health``
    ``ok``.
"""
