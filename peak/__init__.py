"""peak: the shared kit (settings, pools, Lua registry, app composition, CLI, local stack)."""
