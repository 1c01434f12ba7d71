"""The shard format: sample meta validation, keys, PNG encoding, atomic shard writing and index.json."""

import io
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from pico_lightning.data.schema import INDEX_NAME, SampleMeta, encode_png, make_key
from pico_lightning.prep.shards import write_shards

META = {
    "task": "denoise",
    "category": "restoration",
    "variant": "low",
    "pair_id": "0",
    "source": "test",
    "split": "train",
    "prompt": "Restore",
}


def _samples(count, task="denoise", fail_at=None):
    """Yield ``count`` tiny (input, output, meta) samples; raise at index ``fail_at`` to simulate a crash."""
    for i in range(count):
        if i == fail_at:
            raise RuntimeError("simulated crash")
        image = np.full((8, 8, 3), i, np.uint8)
        split = "val" if i % 5 == 4 else "train"
        meta = SampleMeta(**{**META, "task": task, "pair_id": f"{i:04d}", "split": split})
        yield image, 255 - image, meta


def test_sample_meta_round_trips_and_names_bad_fields():
    meta = SampleMeta.from_json(META)
    assert SampleMeta.from_json(json.loads(json.dumps(meta.to_json()))) == meta
    with pytest.raises(ValueError, match="'split'"):
        SampleMeta.from_json({k: v for k, v in META.items() if k != "split"})
    with pytest.raises(ValueError, match="'category'"):
        SampleMeta.from_json({**META, "category": "restoring"})
    with pytest.raises(ValueError, match="'prompt'"):
        SampleMeta.from_json({**META, "prompt": ""})


def test_make_key_is_tar_safe():
    assert make_key("denoise", "gaussian_low", "0003") == "denoise/gaussian_low/0003"
    assert make_key("in paint", "x.2", "a/b") == "in_paint/x_2/a_b"  # no dot, no extra path level
    with pytest.raises(ValueError):
        make_key("denoise", "", "1")


def test_encode_png_round_trips_and_rejects_bad_arrays():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(image)))), image)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(image.astype(np.float32))
    with pytest.raises(ValueError):
        encode_png(image[..., 0])


def test_shards_round_trip_with_tarfile_and_webdataset(tmp_path):
    shards = write_shards(_samples(10), tmp_path, maxcount=3, suites={"demo": {"tasks": ["denoise"]}})
    assert shards == [f"visrel-{i:06d}.tar" for i in range(4)]
    expected = {f"denoise/low/{i:04d}" for i in range(10)}
    names = []
    for shard in shards:
        with tarfile.open(tmp_path / shard) as tar:
            names += tar.getnames()
    assert sorted(names) == sorted(f"{key}.{ext}" for key in expected for ext in ("input.png", "json", "output.png"))
    urls = [str(tmp_path / shard) for shard in shards]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert {sample["__key__"] for sample in samples} == expected
    first = next(s for s in samples if s["__key__"] == "denoise/low/0007")
    assert SampleMeta.from_json(json.loads(first["json"])).pair_id == "0007"
    assert np.asarray(Image.open(io.BytesIO(first["output.png"])))[0, 0, 0] == 255 - 7

    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["num_samples"] == 10 and index["shards"] == shards and index["shard_sizes"] == [3, 3, 3, 1]
    task = index["tasks"]["denoise"]
    assert task["counts"] == {"train": 8, "val": 2, "test": 0} and task["variants"] == ["low"]
    assert index["categories"]["restoration"] == {"num_tasks": 1, "num_samples": 10}
    assert index["splits"] == {"train": 8, "val": 2, "test": 0} and index["suites"] == {"demo": {"tasks": ["denoise"]}}
    assert not list(tmp_path.glob(".tmp-*"))


def test_crash_midway_leaves_no_final_shard_and_no_index(tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_shards(_samples(10, fail_at=7), tmp_path, maxcount=3)
    assert not list(tmp_path.glob("visrel-*.tar"))
    assert not (tmp_path / INDEX_NAME).exists()
    assert not list(tmp_path.iterdir())  # temporary shards removed too


def test_rewrite_replaces_stale_shards_and_checks_held_out(tmp_path):
    write_shards(_samples(10), tmp_path, maxcount=3)
    assert write_shards(_samples(4), tmp_path, maxcount=3) == ["visrel-000000.tar", "visrel-000001.tar"]
    assert sorted(p.name for p in tmp_path.glob("visrel-*.tar")) == ["visrel-000000.tar", "visrel-000001.tar"]
    with pytest.raises(ValueError, match="held-out task 'denoise'"):
        write_shards(_samples(4), tmp_path / "held", held_out={"denoise"})
    with pytest.raises(ValueError, match="duplicate sample key"):
        write_shards([next(_samples(1))] * 2, tmp_path / "dup")


def test_shard_sizes_lay_out_the_samples_exactly(tmp_path):
    write_shards(_samples(10), tmp_path, sizes=[4, 2, 4])
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["shard_sizes"] == [4, 2, 4]
    assert [[pair_id for _, _, pair_id, _, _ in samples] for samples in index["shard_samples"]][1] == ["0004", "0005"]
    with pytest.raises(ValueError, match="more samples than the shard sizes hold"):
        write_shards(_samples(10), tmp_path / "short", sizes=[4, 4])
    assert not list((tmp_path / "short").glob("*.tar"))
