"""The fold-in comparison's setting parser (``python -m experiments.foldin_validation``)."""

import pytest

from experiments.foldin_validation import _parse_setting


def test_settings_are_typed_by_the_config():
    assert _parse_setting("epochs=10,private_lr=8,optimizer=adam,batch_size=256") == {
        "epochs": 10, "private_lr": 8.0, "optimizer": "adam", "batch_size": 256}  # fmt: skip


def test_unknown_key_is_named():
    with pytest.raises(SystemExit, match="'epoch' is not a recommender.neumf key"):
        _parse_setting("epoch=10")


def test_version_reaches_the_registry_load(monkeypatch, tmp_path):
    import json

    import experiments.foldin_validation as fv

    seen = {}

    def fake(run_dir, settings, seed, version=None):
        seen.update(run_dir=run_dir, settings=settings, seed=seed, version=version)
        return [{"setting": {}, "ndcg@10": 0.5, "precompute_cpu_seconds": 1.0,
                 "request_cpu_ms_p50": 1.0, "request_cpu_ms_p99": 2.0}]  # fmt: skip

    monkeypatch.setattr(fv, "validate_foldin", fake)
    out = tmp_path / "f.json"
    assert fv.main(["RUN", "--seed", "2", "--version", "40", "--json", str(out)]) == 0
    assert seen == {"run_dir": "RUN", "settings": [{}], "seed": 2, "version": 40}
    assert json.loads(out.read_text())["version"] == 40
