"""`factory simulate`: replay a job trace against a price trace through the real scheduling policies.

Nothing here uses Ray: the simulator calls the same pure policies (`factory.scheduling`) that the
live SchedulerActor calls, on the same price feed code (`factory.prices`).
"""
