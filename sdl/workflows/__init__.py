"""Workflows across instruments: samples as records, resources locked through the
store with leases, task graphs each of whose tasks runs on one plug-in instrument's
fair queue. See docs/workflows.md."""
