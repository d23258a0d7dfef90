"""Serve ``module:attr`` with gevent's pywsgi on a loopback port: ``python -m ... TARGET PORT``."""

from gevent import monkey

monkey.patch_all()

import importlib  # noqa: E402
import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402


def main() -> None:
    target, port = sys.argv[1], int(sys.argv[2])
    module_name, _, attr = target.partition(":")
    app = getattr(importlib.import_module(module_name), attr or "app")
    WSGIServer(("127.0.0.1", port), app, log=None).serve_forever()


if __name__ == "__main__":
    main()
