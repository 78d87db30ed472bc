"""Run by tests/test_ca_ports.py under `pytest -n 2` (not collected by the suite): each test
writes its worker's name and CA port, so the caller sees what each worker was given."""

import os

import pytest


@pytest.mark.parametrize("i", range(8))
def test_report_the_ca_port(i):
    import time

    time.sleep(0.2)  # both workers get some of the eight
    out = os.path.join(os.environ["SDL_PROBE_DIR"], f"{os.environ['PYTEST_XDIST_WORKER']}-{i}")
    with open(out, "w") as f:
        f.write(f"{os.environ['PYTEST_XDIST_WORKER']} {os.environ['EPICS_CA_SERVER_PORT']} "
                f"{os.environ['SDL_CA_PORT_RANGE']}")
