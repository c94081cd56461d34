"""seckill: flash sales with an atomic Lua reservation, an order queue to PostgreSQL and payment timeouts.

The composition takes it from ``seckill.component``; other subsystems read orders through ``seckill.client``.
"""
