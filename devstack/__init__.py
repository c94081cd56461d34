"""The development stack: `peak up` and the private redis-server, Redis Cluster, PostgreSQL and nginx it runs.

A tool beside the runtime: no API or worker process imports it.
"""
