"""The runtime kit: settings machinery, pools, the Lua registry, lanes, routing, errors, metrics, health.

It knows no subsystem and no tool: the composition root (``peak/``) hands it the components.
"""
