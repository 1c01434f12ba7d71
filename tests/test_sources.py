"""Where the shards' samples come from: index.json when it describes a shard, a scan otherwise; a garbage index
is one UserError naming the file."""

import json

import numpy as np
import pytest

from pico_lightning.config import DataConfig
from pico_lightning.data import sources
from pico_lightning.data.schema import INDEX_NAME, SampleMeta
from pico_lightning.errors import UserError
from pico_lightning.prep.shards import write_shards


@pytest.fixture
def shard_dir(tmp_path):
    """4 shards of 3 pairs of one task (two variants) + index.json."""
    rng, samples = np.random.default_rng(0), []
    for i in range(12):
        meta = SampleMeta("denoise", "restoration", "ab"[i % 2], f"{i:04d}", "src", "train", "Restore")
        samples.append((*rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), meta))
    write_shards(samples, tmp_path / "d", maxcount=3)
    return tmp_path / "d"


def _scans(monkeypatch) -> list[str]:
    scanned, scan = [], sources.scan_shard
    monkeypatch.setattr(sources, "scan_shard", lambda url: scanned.append(url) or scan(url))
    return scanned


def test_the_index_lists_every_shard_so_nothing_is_scanned(shard_dir, monkeypatch):
    scanned = _scans(monkeypatch)
    data = sources.load_shard_set(DataConfig(root=str(shard_dir)), 2)
    assert scanned == []
    assert sum(len(found) for found in data.metas.values()) == 12
    assert data.metas == {url: sources.scan_shard(url) for url in data.urls}  # the same metas a scan finds


def test_a_shard_changed_since_the_index_and_shards_without_index_are_scanned(shard_dir, monkeypatch):
    scanned = _scans(monkeypatch)
    truncated = sorted(shard_dir.glob("*.tar"))[1]
    truncated.write_bytes(truncated.read_bytes()[:-1024])
    sources.load_shard_set(DataConfig(root=str(shard_dir)), 2)
    assert scanned == [str(truncated)]
    scanned.clear()
    (shard_dir / INDEX_NAME).unlink()
    sources.load_shard_set(DataConfig(shards=f"{shard_dir}/visrel-{{000000..000003}}.tar"), 2)
    assert len(scanned) == 4


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "unreadable index"),
        ("[1, 2]", "not a VisRel index"),
        ('{"tasks": {}, "shards": ["visrel-000000.tar"], "shard_bytes": [0], "shard_samples": [[["x"]]]}', ""),
    ],
)
def test_a_garbage_index_is_one_error_naming_the_file(shard_dir, text, message):
    index = shard_dir / INDEX_NAME
    if not message:  # a well-formed index whose sample list is garbage: sizes match, so it is read
        data = json.loads(text)
        data["shard_bytes"] = [(shard_dir / "visrel-000000.tar").stat().st_size]
        text, message = json.dumps(data), "malformed shard_samples"
    index.write_text(text)
    with pytest.raises(UserError, match=message) as raised:
        sources.load_shard_set(DataConfig(root=str(shard_dir)), 2)
    assert str(index) in str(raised.value)


def test_find_index_is_the_index_resolve_shards_reads(shard_dir, tmp_path):
    """The W&B dataset artifact's index.json: beside the shards of a directory or a local pattern, none else."""
    index = shard_dir / INDEX_NAME
    assert sources.find_index(DataConfig(root=str(shard_dir))) == index
    assert sources.find_index(DataConfig(shards=str(shard_dir / "visrel-{000000..000003}.tar"))) == index
    assert sources.resolve_shards(DataConfig(shards=str(shard_dir)))[1] == index
    for data in (DataConfig(), DataConfig(shards="pipe:cat x.tar"), DataConfig(root=str(tmp_path / "missing"))):
        assert sources.find_index(data) is None
    index.unlink()
    assert sources.find_index(DataConfig(root=str(shard_dir))) is None
