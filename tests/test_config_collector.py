"""The config layer runs omegaconf with the cyclic collector paused on Pythons before 3.12 (CPython gh-148891:
see pico_lightning/config/collector.py; bench/omegaconf_gc.py measures the crash it prevents)."""

import gc

import pytest
from omegaconf import OmegaConf

from pico_lightning.config import collector, load_config, save_config, to_container, to_yaml
from pico_lightning.config.yaml_file import read_yaml
from pico_lightning.sweeps.spec import expand, load_spec


@pytest.fixture
def collector_states(monkeypatch):
    """Whether the collector was on at each call of the OmegaConf functions the config layer uses."""
    states = []
    for name in ("structured", "merge", "load", "from_dotlist", "to_object", "to_container", "to_yaml"):
        original = getattr(OmegaConf, name)

        def recording(*args, original=original, **kwargs):
            states.append(gc.isenabled())
            return original(*args, **kwargs)

        monkeypatch.setattr(OmegaConf, name, recording)
    return states


def test_config_omegaconf_calls_run_with_the_collector_paused_where_python_needs_it(collector_states, tmp_path):
    cfg = load_config("experiments/demo.yaml", ["train.max_steps=3"])
    to_yaml(cfg), to_container(cfg), save_config(cfg, tmp_path / "config.yaml")
    read_yaml("experiments/flux_fill.yaml")
    spec = load_spec("experiments/ablations/colour_diversity.yaml")
    expand(spec, tmp_path / "sweep")
    assert len(collector_states) > 5 and gc.isenabled()
    assert set(collector_states) == ({False} if collector.AFFECTED else {True})


def test_the_pause_leaves_a_collector_the_caller_turned_off_and_nests(monkeypatch):
    monkeypatch.setattr(collector, "AFFECTED", True)
    with collector.collector_paused():
        assert not gc.isenabled()
        with collector.collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block does not turn it back on
    assert gc.isenabled()
    gc.disable()
    try:
        with collector.collector_paused():
            pass
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()
    with pytest.raises(KeyError), collector.collector_paused():
        raise KeyError("x")
    assert gc.isenabled()
