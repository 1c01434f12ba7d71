from pathlib import Path

import pytest

from pico_lightning.config import ConfigError, ExperimentConfig, load_config, save_config

EXPERIMENTS = sorted(Path(__file__).resolve().parents[1].glob("experiments/**/*.yaml"))


def test_defaults_load():
    cfg = load_config()
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.lora.rank == 16 and cfg.data.rows == 2 and cfg.train.loss_region == "target"


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if "ablations" not in p.parts], ids=lambda p: p.name)
def test_every_experiment_file_loads(path, tmp_path):
    overrides = [f"model.pretrained_dir={tmp_path}"] if "pretrained_dir: /" in path.read_text() else []
    load_config(path, overrides)


def test_file_then_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  max_steps: 7\nlora:\n  rank: 4\n")
    cfg = load_config(path, ["train.max_steps=9"])
    assert (cfg.train.max_steps, cfg.lora.rank) == (9, 4)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.lrr=1", "train.lrr"),  # unknown key
        ("train.max_steps=abc", "train.max_steps"),  # wrong type
        ("train.max_steps=-3", "train.max_steps"),  # invalid value
        ("train.strategy=magic", "train.strategy"),  # not one of the choices
        ("data.panel_size=20", "nearest valid panel sizes: [16, 24]"),  # does not pack
        ("model.preset=huge", "model.preset"),  # not a preset
        ("data.task_fraction=1.5", "data.task_fraction"),  # not a fraction
    ],
)
def test_bad_values_name_key_and_file(tmp_path, override, needle):
    path = tmp_path / "exp.yaml"
    path.write_text("run:\n  name: x\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [override])
    message = str(err.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_quantized_base_is_not_sharded(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  strategy: fsdp\n")
    with pytest.raises(ConfigError, match="model.base_quantization: expected none with train.strategy=fsdp"):
        load_config(path, ["model.base_quantization=float8"])
    assert load_config(path, []).train.strategy == "fsdp"


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_batch_must_divide_world():
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(None, ["train.batch_size=6", "train.devices=4"]).train.per_device_batch()
    assert load_config(None, ["train.batch_size=8", "train.devices=4"]).train.per_device_batch() == 2


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.max_steps=11", "data.tasks=[denoise,edges]"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    cfg.run.dir = str(Path.cwd() / cfg.run.dir)  # saved configs name their paths absolutely
    assert load_config(tmp_path / "run" / "config.yaml") == cfg


def test_suite_names_are_open_and_checked_against_the_data_later():
    assert load_config(None, ["eval.suites=[held_in,lab_edges]"]).eval.suites == ["held_in", "lab_edges"]
    for bad, needle in (("[seen]", "name held_in"), ("[held_in,held_in]", "each suite once"), ("['a/b']", "letters")):
        with pytest.raises(ConfigError, match=needle):
            load_config(None, [f"eval.suites={bad}"])


def test_task_counts_as_a_fraction_of_the_pool():
    assert load_config(None, ["data.task_fraction=0.25"]).data.task_fraction == 0.25
    with pytest.raises(ConfigError, match="data.num_tasks/data.task_fraction: expected at most one"):
        load_config(None, ["data.task_fraction=0.5", "data.num_tasks=4"])


def test_several_files_merge_in_order(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("train:\n  max_steps: 7\nlora:\n  rank: 4\n")
    second.write_text("train:\n  max_steps: 9\n")
    cfg = load_config([first, second], ["train.lr=0.5"])
    assert (cfg.train.max_steps, cfg.lora.rank, cfg.train.lr) == (9, 4, 0.5)
    second.write_text("train:\n  max_stepz: 9\n")
    with pytest.raises(ConfigError, match="b.yaml: train.max_stepz"):  # the file that holds the bad key
        load_config([first, second])


def test_every_key_has_a_type_default_and_docstring():
    from pico_lightning.config.keys import config_keys

    keys = {key.name: key for key in config_keys()}
    assert keys["train.max_steps"].type == "int" and keys["train.max_steps"].default == 200
    assert keys["train.max_steps"].doc == "Optimizer steps."
    assert {name.split(".")[0] for name in keys} == {"model", "lora", "data", "train", "eval", "logging", "run"}
    assert [name for name, key in keys.items() if not key.doc] == []


def test_batch_and_lr_follow_the_world_with_a_per_device_batch():
    def train(*overrides):
        return load_config(None, ["train.batch_size=null", "train.device_batch_size=2", *overrides]).train

    assert [train(f"train.devices={d}").global_batch() for d in (1, 4, 8)] == [2, 8, 16]
    assert train("train.devices=8", "train.num_nodes=4").per_device_batch() == 2
    scaled = train("train.devices=8", "train.lr=1e-4", "train.lr_scaling=sqrt", "train.lr_reference_batch=4")
    assert scaled.scaled_lr() == pytest.approx(2e-4)  # batch 16 = 4 x the reference: sqrt -> 2x
    linear = train("train.devices=8", "train.lr=1e-4", "train.lr_scaling=linear", "train.lr_reference_batch=4")
    assert linear.scaled_lr() == pytest.approx(4e-4)
    assert train("train.devices=8").scaled_lr() == 1e-4  # lr_scaling: none, the default
    assert "global batch 16 = 2 per device x 8" in scaled.describe_batch()
    assert load_config(None, ["train.batch_size=4", "train.device_batch_size=1"]).train.global_batch() == 4
    with pytest.raises(ConfigError, match="train.batch_size: expected a global batch, or null with"):
        load_config(None, ["train.batch_size=null"])


def test_flux_fill_runs_on_1_4_8_and_32_gpus_as_written():
    experiment = Path(__file__).resolve().parents[1] / "experiments" / "flux_fill.yaml"
    for devices, nodes, lr in ((1, 1, 5e-5), (4, 1, 1e-4), (8, 1, 2**0.5 * 1e-4), (8, 4, 2**0.5 * 2e-4)):
        train = load_config(experiment, [f"train.devices={devices}", f"train.num_nodes={nodes}"]).train
        assert train.global_batch() == devices * nodes and train.per_device_batch() == 1
        assert train.scaled_lr() == pytest.approx(lr)
