import pytest


@pytest.fixture
def one_torch_thread():
    """One torch thread: the test machine's cores are shared, and one is faster than several."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
