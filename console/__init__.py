"""console: the ops console, a live web page of the switches, plans, signals, sale and breakers.

Generic like degrade: it imports the kit and degrade only. The composition hands it an admin ``authorize``
(sso.guard.require_admin_or_session); what it shows of a subsystem comes from that component's ``feeds``.
"""
