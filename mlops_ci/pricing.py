"""Estimated cost of a SageMaker training run, for the PR comment.

An estimate, not a bill: on-demand list prices per instance-hour for SageMaker training in
us-east-1 (USD, approximate, as published when this table was written). Prices differ by region
and change; set your own in `aws.prices` (instance type → USD per hour) and they win.
Managed spot: SageMaker bills `BillableTimeInSeconds`, which is what the estimate uses; the
savings are 1 - billable / training time, as SageMaker reports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PRICES_USD_PER_HOUR: dict[str, float] = {
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.m5.12xlarge": 2.765,
    "ml.m5.24xlarge": 5.53,
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.c5.4xlarge": 0.816,
    "ml.c5.9xlarge": 1.836,
    "ml.c5.18xlarge": 3.672,
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 0.94,
    "ml.g4dn.4xlarge": 1.505,
    "ml.g4dn.12xlarge": 4.89,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.12xlarge": 7.09,
    "ml.p3.2xlarge": 3.825,
    "ml.p3.8xlarge": 14.688,
    "ml.p3.16xlarge": 28.152,
    "ml.p4d.24xlarge": 37.688,
}


def estimate(facts: Mapping[str, Any], overrides: Mapping[str, float]) -> dict[str, Any]:
    """`facts` as recorded from DescribeTrainingJob (instance_type, instance_count, spot,
    billable_seconds, training_seconds) → the same plus the estimate fields."""
    out = dict(facts)
    itype, count = facts.get("instance_type"), int(facts.get("instance_count") or 1)
    billable, training = facts.get("billable_seconds"), facts.get("training_seconds")
    if facts.get("spot") and billable is not None and training:
        out["spot_savings_pct"] = round(100.0 * (1.0 - billable / training), 1)
    price = overrides.get(itype) if itype else None
    source = "config" if price is not None else "package table"
    if price is None and itype:
        price = PRICES_USD_PER_HOUR.get(itype)
    if price is None or billable is None:
        return out
    out["usd_per_hour"] = price
    out["price_source"] = source
    out["usd"] = round(billable * count * price / 3600.0, 4)
    if training is not None:
        out["on_demand_usd"] = round(training * count * price / 3600.0, 4)
    return out
