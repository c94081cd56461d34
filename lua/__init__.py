"""Every Redis script of peak, one ``.lua`` file each, loaded by name through ``kit.lua.Scripts``.

Each file starts with its contract: KEYS, ARGV and every return value. All keys one script touches share a
hash tag, so every script runs unchanged on Redis Cluster.
"""
