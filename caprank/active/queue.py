"""The labelling queue: export the most uncertain served intents, import the answers.

Export (JSONL or CSV, by the file suffix): one row per intent with its uncertainty
signals, its top candidates (id and description) and an empty ``answer`` that the
labeller fills with the relevant capability ids (JSONL: a list; CSV: ``;``-separated),
plus ``annotator``. Import turns answered rows into ``train`` labels whose
``provenance`` says where they came from (``active:<queue>:<annotator>``); intents not
in the dataset yet are added under a stable id derived from their text. Unanswered
rows are skipped; an unknown capability is an error naming the file, row and field.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from caprank.active.uncertainty import (
    Uncertain,
    fit_temperature,
    rank_uncertain,
    select,
    served_texts,
    softmax,
)
from caprank.config import ActiveConfig, CaprankConfig
from caprank.data.dataset import Dataset, conform
from caprank.data.schemas import MANIFEST_FILE, TABLES
from caprank.errors import DataError
from caprank.files import atomic_path, atomic_write_parquet
from caprank.model.index import RankIndex

Encoder = Callable[[list[str]], np.ndarray]
FORMATS = (".jsonl", ".csv")


def intent_id_for(text: str) -> str:
    return "active-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def build_queue(
    ds: Dataset,
    cfg: CaprankConfig,
    bundle,
    encode: Encoder,
    served: str | Path | None = None,
    budget: int | None = None,
) -> list[Uncertain]:
    """The ``budget`` (default ``active.budget``) most uncertain served intents, ranked
    over ``ds``'s catalog by ``bundle``; served traffic from the serving request log
    ``served`` or, without it, the dataset's interactions. Intents already labeled are
    left out; ``active.evidence`` weighs novelty against the train labels' counts."""
    from caprank.embeddings.catalog_text import capability_texts
    from caprank.evaluation.baselines import bm25_scores, dense_scores
    from caprank.training.update import catalog_through

    counts = served_texts(served if served is not None else ds.interactions)
    labeled_ids = set(ds.labels["intent_id"].to_pylist())
    ids, all_texts = ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist()
    labeled = {t for i, t in zip(ids, all_texts, strict=True) if i in labeled_ids}
    texts = sorted(t for t in counts if t not in labeled)
    if not texts:
        return []
    inputs = catalog_through(bundle, ds, encode)
    index = bundle.index(inputs)
    dense = encode(texts).astype(np.float32)
    prior = dense_scores(dense, inputs.capability_text)
    baselines = {}
    if "bm25" in cfg.training.baselines:
        baselines["bm25"] = bm25_scores(capability_texts(ds.capabilities, ds.tools), texts)
    if "dense" in cfg.training.baselines:
        baselines["dense"] = prior
    likely = None
    if cfg.active.evidence:
        likely = membership(ds, cfg.active, index, inputs.capability_text, encode, texts, dense)
    items = rank_uncertain(
        index, texts, dense, baselines, cfg.active, [counts[t] for t in texts], likely
    )
    budget = cfg.active.budget if budget is None else budget
    evidence = label_evidence(ds) if cfg.active.evidence else None
    return select(items, budget, cfg.active.diverse, evidence, cfg.active.uncertainty_power)


def membership(
    ds: Dataset,
    active: ActiveConfig,
    index: RankIndex,
    capability_text: np.ndarray,
    encode: Encoder,
    texts: Sequence[str],
    dense: np.ndarray,
) -> np.ndarray:
    """(B, C) which capability each of ``texts`` belongs to, for novelty: the softmax of
    ``active.novelty_source``'s scores at ``active.temperature`` or, unset, at the
    temperature fitted on the train labels (``fit_temperature``)."""
    from caprank.evaluation.baselines import dense_scores

    def scores(vectors: np.ndarray, strings: Sequence[str]) -> np.ndarray:
        if active.novelty_source == "prior":
            return dense_scores(vectors, capability_text)
        return index.scores(vectors, list(strings))

    temperature = active.temperature
    if temperature is None:
        pos = {c: j for j, c in enumerate(index.capability_ids)}
        text_of = dict(
            zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
        )
        pairs = [
            (text_of[q], pos[c])
            for q, c, split in zip(
                ds.labels["intent_id"].to_pylist(),
                ds.labels["capability_id"].to_pylist(),
                ds.labels["split"].to_pylist(),
                strict=True,
            )
            if split == "train" and c in pos and q in text_of
        ]
        if pairs:
            strings = [t for t, _ in pairs]
            fitted = scores(encode(strings).astype(np.float32), strings)
            temperature = fit_temperature(fitted, np.array([j for _, j in pairs]))
        else:
            temperature = fit_temperature(np.zeros((0, len(pos))), np.zeros(0, np.int64))
    return softmax(scores(dense, texts), temperature)


def label_evidence(ds: Dataset) -> dict[str, float]:
    """Training labels per capability: what the model has already been taught."""
    counts: dict[str, float] = {}
    rows = zip(ds.labels["capability_id"].to_pylist(), ds.labels["split"].to_pylist(), strict=True)
    for cap, split in rows:
        if split == "train":
            counts[cap] = counts.get(cap, 0.0) + 1.0
    return counts


def _format(path: Path) -> str:
    if path.suffix not in FORMATS:
        raise DataError(str(path), f"expected a {' or '.join(FORMATS)} file")
    return path.suffix


def export_queue(
    items: Sequence[Uncertain], ds: Dataset, path: str | Path, queue_id: str, model_version: str
) -> Path:
    """Write the queue for labellers (see the module doc)."""
    path = Path(path)
    fmt = _format(path)
    text_ids = dict(
        zip(ds.intents["text"].to_pylist(), ds.intents["intent_id"].to_pylist(), strict=True)
    )
    desc = dict(
        zip(
            ds.capabilities["capability_id"].to_pylist(),
            ds.capabilities["description"].to_pylist(),
            strict=True,
        )
    )
    rows = []
    for u in items:
        rows.append(
            {
                "queue_id": queue_id,
                "model_version": model_version,
                "intent_id": text_ids.get(u.text, intent_id_for(u.text)),
                "intent_text": u.text,
                "requests": u.requests,
                "uncertainty": u.uncertainty,
                "margin": u.margin,
                "probability": u.probability,
                "disagreement": u.disagreement,
                "candidates": [
                    {"capability_id": c, "score": s, "description": desc.get(c, "")}
                    for c, s in u.candidates
                ],
                "answer": [],
                "annotator": "",
            }
        )
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        if fmt == ".jsonl":
            for r in rows:
                fh.write(json.dumps(r, sort_keys=True) + "\n")
        else:
            k = max((len(r["candidates"]) for r in rows), default=0)
            head = ["queue_id", "model_version", "intent_id", "intent_text", "requests",
                    "uncertainty", "margin", "probability", "disagreement"]  # fmt: skip
            cand = [f"candidate_{i + 1}{s}" for i in range(k) for s in ("", "_description")]
            w = csv.writer(fh)
            w.writerow([*head, *cand, "answer", "annotator"])
            for r in rows:
                cells = [r[h] for h in head]
                for c in r["candidates"]:
                    cells += [c["capability_id"], c["description"]]
                cells += [""] * (len(head) + len(cand) - len(cells))
                w.writerow([*cells, "", ""])
    return path


@dataclass
class Answer:
    row: int
    queue_id: str
    intent_id: str
    intent_text: str
    capability_ids: list[str]
    annotator: str


def read_answers(path: str | Path) -> list[Answer]:
    """Answered rows of an exported (and filled) queue file; ``row`` is the record's line
    in the file (the importer's reader: one reading of JSONL and CSV, errors by line)."""
    from caprank.data.importer import read_records

    path = Path(path)
    fmt = _format(path)
    raw: list[tuple[int, dict]] = []
    for line, rec, header in read_records(path, fmt.lstrip(".")):
        if header is not None:  # CSV: the answer column holds ids separated by ';'
            rec["answer"] = [a.strip() for a in (rec.get("answer") or "").split(";") if a.strip()]
        raw.append((line, rec))
    out = []
    for n, rec in raw:
        answer = rec.get("answer") or []
        if isinstance(answer, str):
            answer = [answer]
        if not isinstance(answer, list) or not all(isinstance(a, str) for a in answer):
            raise DataError(
                str(path), "answer must be a list of capability ids", row=n, field="answer"
            )
        text = rec.get("intent_text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(str(path), "missing intent_text", row=n, field="intent_text")
        if answer:
            out.append(
                Answer(
                    n,
                    str(rec.get("queue_id") or ""),
                    str(rec.get("intent_id") or intent_id_for(text)),
                    text,
                    list(dict.fromkeys(answer)),
                    str(rec.get("annotator") or "unknown"),
                )
            )
    return out


def provenance(answer: Answer) -> str:
    return f"active:{answer.queue_id or 'unknown'}:{answer.annotator}"


def apply_answers(
    ds: Dataset, answers: Sequence[Answer], source: str, split: str = "train"
) -> tuple[Dataset, dict]:
    """``ds`` with the answers as labels (and new intents); counts of what was added."""
    caps = set(ds.capabilities["capability_id"].to_pylist())
    intents = dict(
        zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
    )
    by_text = {t: i for i, t in intents.items()}
    have = set(
        zip(ds.labels["intent_id"].to_pylist(), ds.labels["capability_id"].to_pylist(), strict=True)
    )
    new_intents: dict[str, str] = {}
    rows: list[dict] = []
    skipped = 0
    for a in answers:
        for c in a.capability_ids:
            if c not in caps:
                raise DataError(source, f"unknown capability {c!r}", row=a.row, field="answer")
        iid = by_text.get(a.intent_text, a.intent_id)
        if iid in intents and intents[iid] != a.intent_text:
            raise DataError(
                source,
                f"intent {iid!r} has another text in the dataset",
                row=a.row,
                field="intent_id",
            )
        if iid not in intents:
            new_intents[iid] = a.intent_text
            intents[iid] = a.intent_text
            by_text[a.intent_text] = iid
        for c in a.capability_ids:
            if (iid, c) in have:
                skipped += 1
                continue
            have.add((iid, c))
            rows.append(
                {
                    "intent_id": iid,
                    "capability_id": c,
                    "grade": 1,
                    "split": split,
                    "provenance": provenance(a),
                }
            )
    labels_schema = TABLES["labels"].schema
    add = pa.Table.from_pylist(rows, schema=labels_schema)
    labels = pa.concat_tables([conform(ds.labels, TABLES["labels"], "labels"), add])
    new_rows = pa.Table.from_pylist(
        [{"intent_id": i, "text": t} for i, t in new_intents.items()],
        schema=TABLES["intents"].schema,
    )
    out = Dataset(
        ds.tools,
        ds.capabilities,
        pa.concat_tables([ds.intents, new_rows]),
        labels,
        ds.interactions,
        dict(ds.manifest),
        ds.root,
    )
    return out, {
        "labels_added": len(rows),
        "intents_added": len(new_intents),
        "duplicates_skipped": skipped,
        "answered": len(answers),
    }


def import_answers(dataset_dir: str | Path, answers_path: str | Path, split: str = "train") -> dict:
    """Add the answers to the dataset at ``dataset_dir`` (its labels and intents files are
    rewritten atomically, the manifest's row counts and content hash follow)."""
    from caprank.data.dataset import dataset_hash, load_dataset

    root = Path(dataset_dir)
    ds = load_dataset(root)
    updated, counts = apply_answers(ds, read_answers(answers_path), str(answers_path), split)
    for name in ("labels", "intents"):
        atomic_write_parquet(updated.table(name), root / TABLES[name].file)
    manifest_path = root / MANIFEST_FILE
    if manifest_path.exists():
        manifest = dict(ds.manifest)
        manifest.setdefault("rows", {}).update(
            {n: updated.table(n).num_rows for n in ("labels", "intents")}
        )
        manifest["content_hash"] = dataset_hash(root)
        with atomic_path(manifest_path) as tmp:
            Path(tmp).write_text(
                json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
            )
    return counts
