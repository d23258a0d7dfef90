"""Benchmarks for flask-ssecors: CORS decision overhead and concurrent streams under gevent.

Run ``python -m bench --quick`` (or ``make bench``); see :mod:`bench.__main__`. Every number is
measured together with its baseline in the same run and reported as a ratio, since the machines
this runs on are shared and noisy.
"""
