"""The label checks (issue 20) on small colour sets where the wrong labels are known: suspects after a retrain,
the consensus of several answers trains, second looks go to Label Studio blind and their answers come back."""

from __future__ import annotations

from annotation.models import LabelEvent, ReviewRequest
from annotation.reviews import task_body
from app.core.checks import check_labels, trained_labels
from app.core.intake import own_tasks_only
from app.store import NewLabel, utcnow
from app.worker.scheduler import check_labels as check_labels_job
from app.worker.scheduler import deliver_outbox
from tests.support.images import add_png_item, png
from tests.unit.app.conftest import CLASSES, COLOURS

PER_CLASS = 8


def _labelled(services, wrong: dict[str, str] | None = None) -> None:
    """``PER_CLASS`` images of each colour labelled by annotator 1; ``wrong`` gives some of them another class."""
    wrong = wrong or {}
    labels = []
    for k, name in enumerate(CLASSES):
        for i in range(PER_CLASS):
            item_id = f"{name}-{i}"
            add_png_item(services.store, services.data_dir, item_id, png(COLOURS[name], seed=100 * k + i), "pool")
            labels.append(NewLabel(item_id, wrong.get(item_id, name), "label-studio", annotator="1"))
    services.store.add_labels(labels)
    assert services.trainer.retrain(reason="test").version == "v0001"


def test_a_label_made_wrong_on_purpose_is_suspected_and_listed(services, client):
    _labelled(services, wrong={"red-3": "blue"})
    assert client.get("/v1/items?suspect=true").json["items"] == []  # nothing checked yet
    result = check_labels(services.trainer)
    assert result is not None and result.version == "v0001"
    body = client.get("/v1/items?suspect=true").json
    assert body["model_version"] == "v0001"
    suspects = {row["item_id"]: row for row in body["items"]}
    assert "red-3" in suspects
    assert suspects["red-3"]["label"] == "blue" and suspects["red-3"]["suggested"] == "red"
    assert 0 <= suspects["red-3"]["score"] < 0.5
    assert len(suspects) <= 3, "a few clean labels may look odd; most must not"
    assert check_labels(services.trainer) is None  # once per version


def test_a_check_that_finds_nothing_still_checks_the_version_once(services, client):
    _labelled(services)  # every label right
    result = check_labels(services.trainer)
    assert result is not None and result.n_suspects == 0 and result.n_consensus == 0
    assert check_labels(services.trainer) is None  # checked: not again every tick of the job
    body = client.get("/v1/items?suspect=true").json
    assert body["model_version"] == "v0001" and body["items"] == []


def test_the_holdout_is_checked_by_the_version_and_reported_apart(services, client):
    _labelled(services)
    store = services.store
    answers = [(name, name) for name in CLASSES] * 4
    answers[2] = answers[8] = ("blue", "green")
    for i, (name, given) in enumerate(answers):
        item_id = f"holdout-{i}"
        add_png_item(store, services.data_dir, item_id, png(COLOURS[name], seed=900 + i), "holdout")
        store.add_labels([NewLabel(item_id, given, "import")])
    check_labels(services.trainer, force=True)
    holdout = {row["item_id"] for row in client.get("/v1/items?suspect=true&split=holdout").json["items"]}
    training = {row["item_id"] for row in client.get("/v1/items?suspect=true").json["items"]}
    assert {"holdout-2", "holdout-8"} <= holdout  # blue images labelled green
    assert not holdout & training


def test_a_version_with_few_labels_per_class_does_not_judge_the_holdout(services, client, monkeypatch):
    import app.core.checks as checks

    monkeypatch.setattr(checks, "HOLDOUT_CHECK_MIN_PER_CLASS", PER_CLASS + 1)  # v0001 has PER_CLASS a class
    _labelled(services)
    add_png_item(services.store, services.data_dir, "holdout-0", png(COLOURS["blue"], seed=900), "holdout")
    services.store.add_labels([NewLabel("holdout-0", "green", "import")])  # wrong, and plainly so
    result = check_labels(services.trainer, force=True)
    assert result is not None and result.n_holdout_checked == 0 and result.n_holdout_suspects == 0
    assert client.get("/v1/items?suspect=true&split=holdout").json["items"] == []


def test_several_answers_train_their_consensus_not_the_newest(services):
    _labelled(services)
    store = services.store
    # A second annotator answers a few items; on red-0 they disagree (and theirs is the newest answer).
    store.add_labels([NewLabel(f"{name}-1", name, "label-studio", annotator="2") for name in CLASSES])
    store.add_labels([NewLabel("red-0", "blue", "label-studio", annotator="2")])
    newest = {row.item_id: row.label for row in store.current_labels()}
    assert newest["red-0"] == "blue"
    result = check_labels(services.trainer)
    assert result is not None and result.n_consensus == 4
    assert result.consensus_changed == 1  # red-0: the consensus is red, the version trained on blue
    assert store.consensus_labels()["red-0"][0] == "red"
    assert set(result.annotator_quality) == {"1", "2"}
    assert services.models.current.version == "v0002"  # retrained on the consensus at once
    trained = {row.item_id: row.label for row in trained_labels(store, store.current_labels())}
    assert trained["red-0"] == "red"
    again = check_labels(services.trainer)
    assert again is not None and again.version == "v0002" and again.consensus_changed == 0  # no retrain loop
    # A newer answer on the item is not covered by that consensus: the newest answer trains until the next check.
    store.add_labels([NewLabel("red-0", "green", "label-studio", annotator="3")])
    assert {row.item_id: row.label for row in trained_labels(store, store.current_labels())}["red-0"] == "green"


def _share(services, share: float) -> None:
    services.trainer.service = services.trainer.service.model_copy(update={"second_look_share": share})


def test_a_suspect_goes_back_blind_as_a_task_of_its_own_and_its_answer_settles_it(services):
    _share(services, 0.5)  # of a batch of 2: one second look at most
    _labelled(services, wrong={"red-3": "blue"})
    store, desk = services.store, services.desk
    result = check_labels_job(services)
    assert result["second_looks"] == 1
    assert result["batch_split"]["second_looks"] == 1 and result["batch_split"]["new"] == 1  # one budget of 2
    assert store.second_look_counts()["pending"] >= 1
    deliver_outbox(services)
    sent = desk.tasks["red-3#second-look"]
    request = sent["request"]
    assert request.second_look and request.label is None and request.not_for == ("1",)
    assert store.second_look_counts()["sent"] >= 1
    # Another annotator answers the second-look task: the intake accepts it (juicer's own link), two answers now.
    event = LabelEvent("red-3", sent["task_id"], 501, "red", "2", utcnow(), "set")
    assert own_tasks_only(store, [event]) == [event]
    assert store.apply_label_events([event]) == 1
    assert store.second_look_counts()["labelled"] == 1
    answers = {a.annotator: a.label for a in store.answers() if a.item_id == "red-3"}
    assert answers == {"1": "blue", "2": "red"}


def test_no_second_looks_when_the_share_is_zero(services):
    _share(services, 0.0)
    _labelled(services, wrong={"red-3": "blue"})
    assert check_labels(services.trainer).second_looks == 0
    assert sum(services.store.second_look_counts().values()) == 0


def test_a_second_look_task_carries_no_guess():
    request = ReviewRequest("red-3", "a.png", None, 0.0, "v0001", blind=True, second_look=True, not_for=("1",))
    body = task_body("http://ls/data/a.png", request)
    assert "predictions" not in body
    assert body["data"]["kind"] == "second-look" and body["data"]["not_for"] == ["1"]


def test_second_looks_share_the_batch_with_new_items(services):
    _share(services, 0.5)
    _labelled(services, wrong={"red-3": "blue"})
    for k, name in enumerate(CLASSES):  # a pool to compare the second looks with (ActiveLab's scores)
        for i in range(4):
            add_png_item(services.store, services.data_dir, f"pool-{name}-{i}", png(COLOURS[name], seed=700 + 10 * k + i), "pool")
    result = check_labels(services.trainer)
    split = result.batch_split
    assert split["new"] + split["second_looks"] + split["holdout"] == 2
    assert result.second_looks == split["second_looks"]
    open_looks = services.store.second_look_counts()["pending"]
    assert services.trainer.refresh_review_queue() == 2 - open_looks  # the new picks leave the second looks their share


def test_the_report_shows_suspects_annotators_and_the_batch_split(services, client):
    _share(services, 0.5)
    _labelled(services, wrong={"red-3": "blue"})
    services.store.add_labels([NewLabel(f"{name}-1", name, "label-studio", annotator="2") for name in CLASSES])
    check_labels(services.trainer)
    body = client.get("/v1/report").json
    checks = body["label_checks"]
    assert checks["version"] == "v0001" and "red-3" in [row["item_id"] for row in checks["suspects"]]
    assert set(checks["annotator_quality"]) == {"1", "2"} and checks["mean_agreement"] == 1.0
    split = body["points"][0]["batch_split"]
    assert split["new"] + split["second_looks"] + split["holdout"] == 2
    page = client.get("/report").get_data(as_text=True)
    assert 'id="label-checks"' in page and 'id="annotators"' in page and "red-3" in page and 'id="batch-split"' in page
