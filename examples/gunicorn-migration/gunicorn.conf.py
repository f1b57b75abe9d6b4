# gunicorn.conf.py: the service as it ran under gunicorn (app.py beside this file).
#   gunicorn -c gunicorn.conf.py app:application
# prefork-otel.config.js is the same configuration for the Node service: same keys, same values.
import os

bind = "127.0.0.1:" + os.environ.get("PORT", "8000")
workers = 2
worker_class = "gthread"
threads = 2
timeout = 30
graceful_timeout = 20
keepalive = 5
max_requests = 1000
max_requests_jitter = 100
accesslog = "-"
errorlog = "-"
loglevel = "info"


def when_ready(server):
    server.log.info("service ready")


def post_fork(server, worker):
    server.log.info("worker %s forked" % worker.pid)
