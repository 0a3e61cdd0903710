"""ServiceSettings validation, the demo split, and class resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.datadir import image_file
from app.core.demo import seed_demo, split_indices
from app.core.training import query_strategy
from app.services import SetupError, resolve_classes
from app.store import Store
from config import ConfigError, load_settings
from learner.query import STRATEGIES

EXAMPLE_CONFIG = Path(__file__).resolve().parents[3] / "config" / "juicer.example.yaml"


@pytest.mark.parametrize(
    "env, named",
    [
        ({"JUICER_SERVICE__DECISION_RULE": "vibes"}, "service.decision_rule"),
        ({"JUICER_SERVICE__DECISION_THRESHOLD": "1.5"}, "decision_threshold"),
        ({"JUICER_SERVICE__CLASSES": "[cat, cat]"}, "service.classes"),
        ({"JUICER_SERVICE__CLASSES": "[cat]"}, "service.classes"),
        ({"JUICER_SERVICE__REVIEW_BATCH_SIZE": "0"}, "service.review_batch_size"),
        ({"JUICER_SERVICE__MAX_REQUEST_BYTES": "10"}, "service.max_request_bytes"),
        ({"JUICER_SERVICE__PORT": "70000"}, "service.port"),
        ({"JUICER_SERVICE__REPORT_THRESHOLDS": "[0.5, 1.2]"}, "service.report_thresholds"),
        ({"JUICER_SERVICE__RETRAIN_AFTER_LABLES": "5"}, "service.retrain_after_lables"),
    ],
)
def test_invalid_service_settings_stop_start_up_naming_the_setting(env, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(environ=env)


def test_service_settings_from_a_yaml_file_with_env_override(tmp_path):
    path = tmp_path / "juicer.yaml"
    path.write_text("service:\n  classes: [cat, dog]\n  decision_rule: margin\n  decision_threshold: 0.3\n  api_token: abc\n")
    settings = load_settings(path, environ={"JUICER_SERVICE__REVIEW_BATCH_SIZE": "7"})
    assert settings.service.classes == ["cat", "dog"]
    assert settings.service.decision_rule == "margin"
    assert settings.service.review_batch_size == 7
    assert settings.service.api_token.get_secret_value() == "abc"
    assert "abc" not in repr(settings)


def test_an_unknown_query_strategy_stops_start_up_naming_the_setting_and_the_choices():
    settings = load_settings(environ={"JUICER_SERVICE__QUERY_STRATEGY": "psychic"})  # config does not know learner
    with pytest.raises(ConfigError, match=r"service\.query_strategy") as raised:
        query_strategy(settings.service)  # where the settings meet learner's registry (the CLI, the Trainer)
    assert "psychic" in str(raised.value) and all(name in str(raised.value) for name in STRATEGIES)


def test_the_example_config_loads():
    settings = load_settings(EXAMPLE_CONFIG, environ={})
    assert settings.service.query_strategy == "least_confidence"
    assert query_strategy(settings.service).name == "least_confidence"


def test_the_example_config_lists_every_registered_query_strategy():
    lines = EXAMPLE_CONFIG.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("query_strategy:"))
    comment = lines[start].split("#", 1)[1]
    for line in lines[start + 1:]:  # the comment goes on in lines that hold nothing else
        if not line.strip().startswith("#"):
            break
        comment += line.split("#", 1)[1]
    listed = {choice.split()[0] for choice in comment.split("|") if choice.strip()}
    assert set(STRATEGIES) <= listed, f"config/juicer.example.yaml lacks {sorted(set(STRATEGIES) - listed)}"


def test_demo_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), 50)
    seed, pool, holdout = split_indices(labels, 4, n_pool=40, n_holdout=20, seed=1)
    assert sorted(labels[seed].tolist()) == [0, 1, 2, 3]
    assert not (set(seed) & set(pool)) and not (set(pool) & set(holdout)) and not (set(seed) & set(holdout))
    assert np.bincount(labels[holdout], minlength=4).tolist() == [5, 5, 5, 5]
    assert split_indices(labels, 4, 40, 20, seed=1) == (seed, pool, holdout)


def test_seed_demo_writes_pngs_and_labels_seed_and_holdout_only(tmp_path):
    from learner.datasets import Dataset
    from learner.images import ArrayImage

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (28, 28), dtype=np.uint8) for _ in range(30)]
    dataset = Dataset(
        name="tiny", class_names=["a", "b", "c"], sources=[ArrayImage(a, f"tiny/{i}") for i, a in enumerate(arrays)],
        labels=np.repeat(np.arange(3), 10), item_ids=[f"tiny/{i}" for i in range(30)],
    )  # fmt: skip
    store = Store.open(tmp_path)
    counts = seed_demo(store, tmp_path, dataset, n_pool=12, n_holdout=6)
    assert (counts.seed, counts.pool, counts.holdout) == (3, 12, 6)
    assert store.count_items() == {"seed": 3, "pool": 12, "holdout": 6}
    assert len(store.current_labels()) == 3 and len(store.current_labels(holdout=True)) == 6
    item = store.items_of_split("pool")[0]
    assert image_file(tmp_path, item.image_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    store.close()


def test_classes_come_from_settings_or_the_store_and_cannot_lose_one(tmp_path):
    store = Store.open(tmp_path)
    with pytest.raises(SetupError, match="no classes configured"):
        resolve_classes(load_settings(environ={}, data_dir=tmp_path), store)
    assert resolve_classes(load_settings(environ={}, data_dir=tmp_path, service={"classes": ["a", "b"]}), store) == ("a", "b")
    assert resolve_classes(load_settings(environ={}, data_dir=tmp_path), store) == ("a", "b")
    assert resolve_classes(load_settings(environ={}, service={"classes": ["a", "b", "c"]}), store) == ("a", "b", "c")
    with pytest.raises(SetupError, match="drops"):
        resolve_classes(load_settings(environ={}, service={"classes": ["a", "c"]}), store)
    store.close()


def test_a_class_added_at_run_time_survives_a_start_whose_config_lacks_it(tmp_path, caplog):
    """The stored list is the truth once a class was added: kept after the configured ones, with a warning."""
    store = Store.open(tmp_path)
    assert resolve_classes(load_settings(environ={}, data_dir=tmp_path, service={"classes": ["a", "b"]}), store) == ("a", "b")
    store.add_classes(["late"])
    with caplog.at_level("WARNING", logger="app.services"):
        assert resolve_classes(load_settings(environ={}, data_dir=tmp_path, service={"classes": ["a", "b"]}), store) == ("a", "b", "late")
    assert "lacks ['late'], added at run time" in caplog.text
    assert resolve_classes(load_settings(environ={}, data_dir=tmp_path, service={"classes": ["a", "b", "c"]}), store) == ("a", "b", "c", "late")
    assert store.stored_classes() == ("a", "b", "c", "late")
    assert resolve_classes(load_settings(environ={}, data_dir=tmp_path, service={"classes": ["a", "b", "c", "late"]}), store) == ("a", "b", "c", "late")
    with pytest.raises(SetupError, match=r"drops \['c'\]"):  # a configured class is still never dropped
        resolve_classes(load_settings(environ={}, data_dir=tmp_path, service={"classes": ["a", "b"]}), store)
    store.close()


def test_environment_lists_and_nesting_come_through_pydantic_settings():
    settings = load_settings(environ={
        "JUICER_SERVICE__CLASSES": '["cat", "dog"]', "JUICER_SERVICE__REPORT_THRESHOLDS": "[0.9, 0.3]",
        "JUICER_LEARNER__BATCH_SIZE": "64", "JUICER_TEST_LS_VENV": "not a setting",
    })  # fmt: skip
    assert settings.service.classes == ["cat", "dog"]
    assert settings.service.report_thresholds == [0.3, 0.9]
    assert settings.learner.batch_size == 64
    with pytest.raises(ConfigError, match="JUICER_SERVICE__CLASSES"):
        load_settings(environ={"JUICER_SERVICE__CLASSES": "[cat"})
