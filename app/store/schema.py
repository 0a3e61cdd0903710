"""The store's tables (SQLAlchemy Core), one row each; the migrations in ``migrations/`` build exactly these.

``items`` (an image: content hash, source, split, file under ``<data_dir>/images/``), ``labels`` (who said which
class, when; withdrawn rows are kept), ``predictions`` (model version, probabilities, decision, rule),
``review_tasks`` (the outbox to Label Studio, one row per item), ``model_versions`` (created, labels used, holdout
metrics), ``webhook_events`` (raw payloads awaiting a job), ``served_tasks`` (the Label Studio task each item asked
about through the ML backend is, per project), ``cursors`` and ``meta`` (small named values), ``jobs`` (the retrain
requests a client can poll), ``label_checks`` (each version's suspected label errors and consensus labels) and
``second_looks`` (suspected items sent back to annotators blind).

Only portable SQL is used (``JSON`` columns, timezone-aware timestamps), so SQLite and PostgreSQL hold the same.
"""

from __future__ import annotations

import sqlalchemy as sa

SPLITS = ("seed", "pool", "holdout", "served")
REVIEW_STATUSES = ("pending", "sent", "failed", "labelled")

metadata = sa.MetaData()

items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False, index=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("split", sa.String(16), nullable=False, index=True),
    sa.Column("image_path", sa.Text, nullable=True),  # relative to the data folder
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("quarantined", sa.Text, nullable=True),  # why its image cannot be used (missing, unreadable); migration 0002
    sa.CheckConstraint(f"split IN {SPLITS}", name="items_split"),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), nullable=False, index=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("source", sa.String(32), nullable=False),  # seed | api | label-studio | dataset
    sa.Column("annotator", sa.Text, nullable=True),
    sa.Column("external_id", sa.String(64), nullable=True),  # Label Studio annotation id
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("labels_external", "source", "external_id"),
)

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), nullable=False, index=True),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("probabilities", sa.JSON, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("rule", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

review_tasks = sa.Table(
    "review_tasks",
    metadata,
    sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("ls_task_id", sa.Integer, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint(f"status IN {REVIEW_STATUSES}", name="review_tasks_status"),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("backbone_id", sa.Text, nullable=False),
    sa.Column("classes", sa.JSON, nullable=False),
    sa.Column("n_labels", sa.Integer, nullable=False),
    sa.Column("labels_per_class", sa.JSON, nullable=False),
    sa.Column("max_label_id", sa.Integer, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=True),  # holdout evaluation
    sa.Column("head_path", sa.Text, nullable=False),  # relative to the data folder
    sa.Column("train_seconds", sa.Float, nullable=True),
    # when the fit read its labels (a withdrawal after it is a change; created_at is later, after the fit)
    sa.Column("labels_read_at", sa.DateTime(timezone=True), nullable=True),
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True, index=True),
    sa.Column("error", sa.Text, nullable=True),
)

served_tasks = sa.Table(
    "served_tasks",
    metadata,
    sa.Column("project", sa.String(64), primary_key=True),  # Label Studio project id
    sa.Column("task_id", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

label_checks = sa.Table(
    "label_checks",
    metadata,
    # One row per labelled item a model version's checks looked at and found something to say about: a suspected
    # label error (cleanlab on out-of-fold probabilities) or a consensus over several answers (CROWDLAB).
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), primary_key=True),
    sa.Column("split", sa.String(16), nullable=False),  # training | holdout
    sa.Column("label", sa.Text, nullable=False),  # the label the checks read (the item's newest active one)
    sa.Column("suspect", sa.Boolean, nullable=False),
    sa.Column("suggested", sa.Text, nullable=True),  # the class the out-of-fold model believes
    sa.Column("score", sa.Float, nullable=True),  # label quality in [0, 1]: low is suspect
    sa.Column("consensus", sa.Text, nullable=True),  # CROWDLAB's label where the item has several answers
    sa.Column("agreement", sa.Float, nullable=True),  # share of its annotators who gave the consensus
    sa.Column("newest_label_id", sa.Integer, nullable=False),  # the consensus holds while this is the newest answer
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

second_looks = sa.Table(
    "second_looks",
    metadata,
    # An item sent back to Label Studio as a task of its own, with no guess, ideally for another annotator: a suspected
    # label (training or holdout), or one more look while its answers tie. An item may get several (``look`` 1, 2, ...),
    # a row each: the history of who had answered when it was asked and which version asked.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), nullable=False, index=True),
    sa.Column("look", sa.Integer, nullable=False),  # 1: the item's first second look, 2: the next, ...
    sa.Column("split", sa.String(16), nullable=False),  # training | holdout
    sa.Column("reason", sa.String(16), nullable=False),  # suspect | tie (the answers so far disagree one against one)
    sa.Column("label", sa.Text, nullable=True),  # the label in doubt when it was asked (None: asked before 0006)
    sa.Column("model_version", sa.String(32), nullable=False),  # the version whose checks asked for it
    sa.Column("status", sa.String(16), nullable=False, index=True),  # pending | sent | labelled | failed
    sa.Column("not_for", sa.JSON, nullable=False),  # annotators who already answered (the task's note)
    sa.Column("ls_task_id", sa.Integer, nullable=True, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("item_id", "look", name="second_looks_item_look"),
    sa.CheckConstraint(f"status IN {REVIEW_STATUSES}", name="second_looks_status"),
)

cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # queued | running | done | failed
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)

