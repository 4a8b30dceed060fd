"""The fold-in comparison's setting parser (``python -m experiments.foldin_validation``)."""

import pytest

from experiments.foldin_validation import _parse_setting


def test_settings_are_typed_by_the_config():
    assert _parse_setting("epochs=10,private_lr=8,optimizer=adam,batch_size=256") == {
        "epochs": 10, "private_lr": 8.0, "optimizer": "adam", "batch_size": 256}  # fmt: skip


def test_unknown_key_is_named():
    with pytest.raises(SystemExit, match="'epoch' is not a recommender.neumf key"):
        _parse_setting("epoch=10")
