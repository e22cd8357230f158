import json
import socket
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden"
ASSETS = Path(__file__).parent.parent / "assets"
CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The suite's tensors are tiny: one intra-op thread is as fast, and immune to busy cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def golden_json():
    return json.loads((GOLDEN / "reference.json").read_text())


@pytest.fixture(scope="session")
def golden():
    return torch.load(GOLDEN / "reference.pt", weights_only=True)


@pytest.fixture(scope="session")
def reference_net(golden):
    """The recorded dim-32 denoiser, loaded through the reference-key converter."""
    from sinddm.convert import from_reference_state_dict
    from sinddm.model import Denoiser

    sd = {k[len("net/params/"):]: v for k, v in golden.items() if k.startswith("net/params/")}
    net = Denoiser(32)
    net.load_state_dict(from_reference_state_dict(sd))
    return net.eval()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each test's outcome on its item (`item.rep_call`), for fixtures that act on failure
    (the browser tests save a screenshot)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="module")
def no_network():
    """Any attempt to open a connection (a weight download) fails the test loudly."""
    real = socket.socket.connect

    def refuse(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access attempted: {address}")
        return real(self, address)

    socket.socket.connect = refuse
    yield
    socket.socket.connect = real


# Modules that must never reach the network say `pytestmark = pytest.mark.usefixtures("no_network")`.


@pytest.fixture(scope="session")
def tiny_clip_ckpt(tmp_path_factory):
    """Random weights of tests/data/tiny-clip.json (seed 0), saved as a local checkpoint: the offline route."""
    import open_clip

    open_clip.add_model_config(Path(__file__).parent / "data" / "tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip", pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    torch.save(model.state_dict(), path)
    return path
