"""customer_service (non-core, tier sheddable_plus): shoppers write to support, agents reply.

While shed, new messages wait in a Redis stream (202 "an agent will reply later") and a worker loop moves
them into PostgreSQL once the subsystem is back.
"""
