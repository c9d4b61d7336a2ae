"""Fixtures shared by the test modules."""

import os
import socket

# Without a GPU the kit's Triton kernels run only under triton's interpreter, which must be chosen before
# triton is first imported (some test module collected earlier imports it): choose it here, before any.
# On a GPU machine the kernels compile, and tests/test_cuda.py runs them on the device.
if "TRITON_INTERPRET" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny models on one thread, restored afterwards.

    With small batches on a 2-core machine, two OpenMP threads waiting on each other under load were
    measured 10-70x slower than one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def free_port() -> int:
    """A TCP port free right now on the loopback interface: MASTER_PORT of the tests that start several
    processes (torch.distributed), or the port of a server a test starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
