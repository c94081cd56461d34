"""sso subsystem: accounts, Redis sessions, JWT access tokens with JWKS, introspection and a token validator.

The composition takes it from ``sso.component``; other subsystems use only ``sso.client``, which loads
nothing of the SSO service.
"""
