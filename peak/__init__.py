"""peak, the composition root: the app factory, the list of components and the `peak` command.

The only package that imports every subsystem; the runtime kit is ``kit/``, the development stack ``devstack/``.
"""
