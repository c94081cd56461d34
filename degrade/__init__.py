"""degrade: ops switches every process obeys within a second, audited, and automatic shedding of non-core tiers.

Generic: subsystems take part through their ``Component`` (name, tier, routes) and ``degrade.client``; this
package never imports one. The composition may pass an admin ``authorize`` callable (sso.client.require_admin).
"""
