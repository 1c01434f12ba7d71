"""Bad data in a training stream: a corrupt sample, a truncated shard, bad JSON or a missing picture is skipped and
counted, never fatal; the lazy decode stage checks cheaply and decodes on use; skipped batches decode nothing."""

import json
import tarfile
import zlib

import numpy as np
import pytest
import torch
from mixed_shards import placed_loader, set_up_module

from pico_lightning.data import stream as stream_module
from pico_lightning.data.episodes import PairFilter
from pico_lightning.data.schema import SampleMeta, encode_png
from pico_lightning.data.stream import DecodePairs, SkipCounter


def test_skipped_batches_decode_no_picture(shards, monkeypatch):
    decoded = []
    monkeypatch.setattr(stream_module, "decode_panel", lambda *args: decoded.append(args) or torch.zeros(3, 32, 32))
    module = set_up_module(shards[0], epoch_batches=6, batch=4)
    assert len(list(placed_loader(module, 5))) == 1
    assert 0 < len(decoded) <= 4 * 2 * 2  # only the last batch's: 4 episodes x 2 pairs x 2 pictures


def _corrupt_png(path) -> None:
    """Overwrite the middle of a train sample's input.png in place (its CRC and zlib stream break)."""
    shard = sorted(path.glob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        members = {m.name: m for m in tar.getmembers()}
        key = next(
            name[: -len(".json")]
            for name, m in members.items()
            if name.endswith(".json") and json.load(tar.extractfile(m))["split"] == "train"
        )
        member = members[f"{key}.input.png"]
    with open(shard, "r+b") as handle:
        handle.seek(member.offset_data + member.size // 2)
        handle.write(b"\0" * 64)


def _truncate(path) -> None:
    shard = sorted(path.glob("*.tar"))[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


@pytest.mark.parametrize("damage", [_corrupt_png, _truncate])
def test_corrupt_samples_and_truncated_shards_are_skipped_and_counted(shards, damage, caplog):
    damage(shards[0])
    batches = list(set_up_module(shards[0], epoch_batches=40).train_dataloader())
    assert len(batches) == 40 and batches[-1]["skipped"] > 0
    assert "skipped a corrupt sample or shard" in caplog.text


def test_decode_stage_counts_bad_json_missing_keys_and_truncated_pngs():
    meta = SampleMeta("a", "restoration", "v", "1", "test", "train", "p").to_json()
    png = encode_png(np.zeros((32, 32, 3), np.uint8))
    good = {"__key__": "a/v/1", "json": json.dumps(meta).encode(), "input.png": png, "output.png": png}
    bad = [
        {**good, "json": b"{not json"},
        {k: v for k, v in good.items() if k != "output.png"},
        {**good, "input.png": png[: len(png) // 2]},
        {**good, "json": json.dumps({**meta, "split": "x"}).encode()},
    ]
    counter = SkipCounter()
    decode = DecodePairs(PairFilter(frozenset({"train"})), 32, "resize", counter)
    pairs = list(decode([bad[0], good, *bad[1:]]))
    assert len(pairs) == 1 and pairs[0].input.shape == (3, 32, 32) and pairs[0].input.dtype == torch.uint8
    assert counter.count == len(bad)


def _bad_pixels_good_crcs(png: bytes) -> bytes:
    """The PNG with its IDAT data scrambled and the chunk CRC recomputed: the cheap check passes, decoding fails."""
    at = png.index(b"IDAT")
    length = int.from_bytes(png[at - 4 : at], "big")
    data = bytes(b ^ 0x5A for b in png[at + 4 : at + 4 + length])
    crc = zlib.crc32(b"IDAT" + data).to_bytes(4, "big")
    return png[: at + 4] + data + crc + png[at + 8 + length :]


def test_the_lazy_decode_stage_checks_cheaply_and_decodes_on_use():
    meta = SampleMeta("a", "restoration", "v", "1", "test", "train", "p").to_json()
    png = encode_png(np.full((32, 32, 3), 7, np.uint8))
    good = {"__key__": "a/v/1", "json": json.dumps(meta).encode(), "input.png": png, "output.png": png}
    counter = SkipCounter()
    decode = DecodePairs(PairFilter(frozenset({"train"})), 32, "resize", counter, lazy=True)
    samples = [good, {**good, "input.png": png[:-20]}, {**good, "input.png": _bad_pixels_good_crcs(png)}]
    pairs = list(decode(samples))
    assert counter.count == 1 and len(pairs) == 2  # the truncated PNG fails the check; the other only on use
    assert pairs[0].input.panel is None and (pairs[0].input.tensor() == 7).all()  # decoded when first used
    with pytest.raises(stream_module.DECODE_ERRORS):
        pairs[1].input.tensor()
