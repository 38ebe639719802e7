"""The factory's sense of the grid: electricity prices and carbon intensity, now and ahead.

Nomenclature:
  provider -- one source of price intervals (`provider.py`): a tariff, a replayed trace, a feed.
  feed     -- a provider with the horizon rule, forecasts, costs and staleness (`feed.py`); what
              the GridPriceActor answers with, usable without Ray.
"""
