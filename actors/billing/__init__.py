"""Billing (SPEC ECS-2, ECS-7, EVS-1, OBS-1, VBS-1, EIP-1, SDRS-3): pure domain, no I/O.

    catalogue  prices per region (TOML, `actors/prices/<region>.toml`), validated
    meter      usage records from the event log (an event sink)
    reserved   reserved instances and the billing calendar (Europe/Paris months)
    invoice    invoices per tenant and period, credits, JSON and CSV (the function
               `invoice` is not re-exported here: it would hide its module)

The usual flow (sim/runner.py, the daemon):

    meter = Meter(region)                    # add to the EventLog's sinks
    ...                                      # run
    prices = load_prices(path_or_None, region)
    usage = meter.usage(0, end_s)
    for tenant, month, inv in monthly_invoices(tenants, usage, ris, prices, epoch, end_s):
        write to_json(inv) / to_csv(inv)
"""

from actors.billing.catalogue import PriceCatalogue, RiPrice, load_prices, parse_prices
from actors.billing.invoice import Invoice, Line, monthly_invoices, to_csv, to_json, with_credits
from actors.billing.meter import Meter, Usage
from actors.billing.reserved import Modification, Month, ReservedInstance

__all__ = [
    "Invoice", "Line", "Meter", "Modification", "Month", "PriceCatalogue", "ReservedInstance", "RiPrice", "Usage",
    "load_prices", "monthly_invoices", "parse_prices", "to_csv", "to_json", "with_credits",
]
