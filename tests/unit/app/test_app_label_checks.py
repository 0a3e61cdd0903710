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


def test_training_labels_get_no_second_look_before_second_looks_from_per_class(services):
    _share(services, 0.5)
    services.trainer.service = services.trainer.service.model_copy(update={"second_looks_from_per_class": PER_CLASS + 1})
    _labelled(services, wrong={"red-3": "blue"})  # PER_CLASS labels a class: one short
    early = check_labels(services.trainer, force=True)
    assert early.n_suspects >= 1 and early.second_looks == 0  # listed as a suspect, not asked again yet
    assert early.batch_split["second_looks"] == 0 and early.batch_split["new"] == 2
    assert f"before {PER_CLASS + 1} labels per class ({PER_CLASS:.1f} now)" in early.batch_split["rule"]
    services.trainer.service = services.trainer.service.model_copy(update={"second_looks_from_per_class": PER_CLASS})
    assert check_labels(services.trainer, force=True).second_looks == 1  # at the line: asked again


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


def _holdout(services, wrong: dict[int, str]) -> None:
    """Four images of each colour in the holdout, labelled by an import; ``wrong`` gives some of them another class."""
    for i, name in enumerate(list(CLASSES) * 4):
        item_id = f"holdout-{i}"
        add_png_item(services.store, services.data_dir, item_id, png(COLOURS[name], seed=900 + i), "holdout")
        services.store.add_labels([NewLabel(item_id, wrong.get(i, name), "import")])


def _answer(services, key: str, annotation_id: int, label: str, annotator: str) -> None:
    """An annotator answers the Label Studio task ``key`` (as the fake desk holds it) through the one intake."""
    sent = services.desk.tasks[key]
    event = LabelEvent(sent["request"].item_id, sent["task_id"], annotation_id, label, annotator, utcnow(), "set")
    assert own_tasks_only(services.store, [event]) == [event]
    assert services.store.apply_label_events([event]) == 1


def test_a_suspected_holdout_label_is_asked_again_blind_and_measures_by_vote_but_never_trains(services, client):
    from app.core.checks import holdout_labels

    _share(services, 0.5)  # of a batch of 2: one holdout label asked again at most
    _labelled(services)
    _holdout(services, wrong={2: "green"})  # holdout-2 is blue
    store = services.store
    result = check_labels(services.trainer, force=True)
    assert result.holdout_second_looks == 1 and result.batch_split["holdout_checks"] == 1
    assert [(look.item_id, look.split, look.reason, look.label, look.not_for) for look in store.second_looks_of()] == [
        ("holdout-2", "holdout", "suspect", "green", ["import"])]
    assert deliver_outbox(services) >= 1
    request = services.desk.tasks["holdout-2#second-look"]["request"]
    assert request.second_look and request.label is None and request.not_for == ("import",)  # blind, for another person

    _answer(services, "holdout-2#second-look", 601, "blue", "2")
    assert "holdout-2" not in {row.item_id for row in store.current_labels()}  # never a training label
    assert services.trainer.retrain(reason="test", force=True).n_labels == PER_CLASS * len(CLASSES)
    measured = {row.item_id: row.label for row in holdout_labels(store)}
    assert measured["holdout-2"] == "blue"  # one against one: the newest answer until a further look settles it
    assert client.get("/v1/report").json["label_checks"]["holdout_second_looks"] == {"asked": 1, "answered": 1, "changed": 1}

    again = check_labels(services.trainer)  # the tie after a look: one more person is asked
    assert again.holdout_second_looks == 1 and again.tie_looks == 1
    last = store.second_looks_of("holdout")[-1]
    assert (last.item_id, last.look, last.reason, last.not_for) == ("holdout-2", 2, "tie", ["2", "import"])
    deliver_outbox(services)
    _answer(services, "holdout-2#second-look-2", 602, "blue", "3")
    assert {row.item_id: row.label for row in holdout_labels(store)}["holdout-2"] == "blue"  # two against one
    _answer(services, "holdout-2#second-look-2", 603, "blue", "4")  # two more people answer that task
    _answer(services, "holdout-2#second-look-2", 604, "green", "5")  # the newest answer, outvoted three to two
    assert {row.item_id: row.label for row in store.current_labels(holdout=True)}["holdout-2"] == "green"
    assert {row.item_id: row.label for row in holdout_labels(store)}["holdout-2"] == "blue"
    with client.application.app_context():  # the gallery captions the holdout as the measure reads it
        from app.http.pages import _gallery

        assert {item.item_id: item.truth for item in _gallery().items}["holdout-2"] == "blue"
    settled = check_labels(services.trainer, force=True)
    assert settled.holdout_second_looks == 0 and len(store.second_looks_of("holdout")) == 2  # agreed: asked no more


def test_a_second_look_that_disagrees_asks_a_third_person_up_to_the_cap_and_one_that_agrees_does_not(services):
    _share(services, 1.0)
    _labelled(services, wrong={"red-3": "blue"})
    store = services.store
    assert store.queue_second_looks("v0001", {"red-3": ["1"], "green-1": ["1"]}) == 2
    deliver_outbox(services)
    _answer(services, "red-3#second-look", 701, "red", "2")  # disagrees with annotator 1's "blue"
    _answer(services, "green-1#second-look", 702, "green", "2")  # agrees
    result = check_labels(services.trainer)
    assert result.tie_looks == 1
    looks = {(look.item_id, look.look): look for look in store.second_looks_of("training")}
    assert ("red-3", 2) in looks and ("green-1", 2) not in looks
    assert looks["red-3", 2].reason == "tie" and looks["red-3", 2].not_for == ["1", "2"]

    deliver_outbox(services)
    _answer(services, "red-3#second-look-2", 703, "green", "3")  # one against one against one: still a tie
    capped = check_labels(services.trainer, force=True)  # service.max_looks_per_item: 2 second looks
    assert capped.tie_looks == 0 and ("red-3", 3) not in {(x.item_id, x.look) for x in store.second_looks_of()}
    services.trainer.service = services.trainer.service.model_copy(update={"max_looks_per_item": 3})
    assert check_labels(services.trainer, force=True).tie_looks == 1
    assert ("red-3", 3) in {(x.item_id, x.look) for x in store.second_looks_of()}


def test_the_vote_takes_the_majority_and_a_tie_goes_to_the_newest():
    from app.core.checks import vote
    from app.store import Answer

    assert vote([Answer("x", "1", "red", 1), Answer("x", "2", "blue", 2), Answer("x", "3", "red", 3)]) == ("red", False)
    assert vote([Answer("x", "1", "red", 1), Answer("x", "2", "blue", 2)]) == ("blue", True)
    assert vote([Answer("x", "1", "red", 1), Answer("x", "2", "blue", 2), Answer("x", "2", "red", 3)]) == ("red", False)


def test_the_split_ranks_suspects_by_self_confidence_and_reads_no_pool(services, monkeypatch):
    _share(services, 0.5)
    _labelled(services, wrong={"red-3": "blue"})
    for k, name in enumerate(CLASSES):
        for i in range(4):
            add_png_item(services.store, services.data_dir, f"pool-{name}-{i}", png(COLOURS[name], seed=700 + 10 * k + i), "pool")

    def refused(*args, **kwargs):
        raise AssertionError("the checks' split read the pool")

    monkeypatch.setattr(services.store, "unlabelled_pool", refused)
    monkeypatch.setattr(services.store, "unlabelled_columns", refused)
    monkeypatch.setattr(services.trainer, "pool_vectors", refused)
    result = check_labels(services.trainer)
    split = result.batch_split
    assert split["new"] + split["second_looks"] + split["holdout"] == 2
    assert split["second_looks"] == 1 and services.store.second_looked(["red-3"]) == {"red-3"}  # the wrong one


def test_the_holdout_measure_reads_the_majority_answer_not_the_newest(services):
    store = services.store
    add_png_item(store, services.data_dir, "holdout-0", png(COLOURS["blue"], seed=900), "holdout")
    store.add_labels([NewLabel("holdout-0", label, "label-studio", annotator=who)
                      for who, label in (("1", "blue"), ("2", "blue"), ("3", "green"))])  # fmt: skip
    assert store.current_labels(holdout=True)[0].label == "green"  # the newest answer
    assert services.trainer.holdout_data().y_true == ["blue"]  # what the measure reads: two against one


def test_what_the_split_counts_is_what_gets_queued_whatever_each_items_looks(services):
    """One eligibility rule for the split and the queue: a suspect never looked at is counted and queued; a suspect
    whose one look was given up (failed: a look all the same), one with a look still open, and an item whose answers
    tie at ``max_looks_per_item`` looks are neither."""
    update = {"second_look_share": 1.0, "review_batch_size": 10}
    services.trainer.service = services.trainer.service.model_copy(update=update)
    _labelled(services, wrong={"red-3": "blue", "green-2": "blue", "red-5": "green", "blue-1": "red"})
    store = services.store
    assert store.queue_second_looks("v0001", {"green-2": ["1"]}) == 1
    store.mark_second_look_failed([store.second_looks_of()[0].id], "Label Studio refused it", None)  # given up: looked
    assert store.queue_second_looks("v0001", {"red-3": ["1"], "red-5": ["1"]}) == 2
    deliver_outbox(services)
    _answer(services, "red-3#second-look", 801, "red", "2")  # disagrees with annotator 1's "blue": a tie
    assert store.queue_second_looks("v0001", {"red-3": ["1", "2"]}, reason="tie", max_looks=2) == 1
    deliver_outbox(services)
    _answer(services, "red-3#second-look-2", 802, "green", "3")  # blue, red, green: still a tie, at 2 looks (the cap)
    before = {(look.item_id, look.look) for look in store.second_looks_of()}

    result = check_labels(services.trainer, force=True)
    suspects = {row.item_id for row in store.label_checks(split="training") if row.suspect}
    assert {"green-2", "red-5", "blue-1"} <= suspects  # red-5's look is still open (sent, unanswered)
    queued = {(look.item_id, look.look) for look in store.second_looks_of()} - before
    assert queued == {("blue-1", 1)}
    assert result.batch_split["second_looks"] == result.second_looks == len(queued)
    assert result.tie_looks == 0


def test_may_look_again_allows_fewer_looks_than_allowed_and_none_open(services):
    store = services.store
    for item_id in ("a", "b", "c"):
        add_png_item(store, services.data_dir, item_id, png(COLOURS["red"], seed=hash(item_id) % 97), "pool")
    assert store.queue_second_looks("v0001", {"a": ["1"], "b": ["1"]}) == 2
    [look_a] = [look for look in store.second_looks_of() if look.item_id == "a"]
    store.mark_second_looks_delivered({look_a.id: 900 + look_a.id})
    event = LabelEvent("a", 900 + look_a.id, 1, "red", "2", utcnow(), "set")
    assert store.apply_label_events([event]) == 1  # a: one look, answered; b: one look, open; c: none
    assert store.may_look_again({"a": 1, "b": 1, "c": 1}) == {"c": 1}
    assert store.may_look_again({"a": 2, "b": 2, "c": 2}) == {"a": 2, "c": 1}
    assert store.queue_second_looks("v0001", {"a": ["1", "2"], "b": ["1"]}, reason="tie", max_looks=2) == 1
    assert store.may_look_again({"a": 2, "b": 2}) == {}
