"""Contrastive fine-tuning of the text encoder on (intent, capability) training pairs.

The base encoder ranks intents against capability texts by cosine; training intents say
which capability each one wanted. Fine-tuning pulls an intent towards its capability's
text and away from the other capabilities in the batch (sentence-transformers'
``MultipleNegativesRankingLoss``: in-batch negatives) and from hard negatives mined from
the catalog (capabilities the base encoder ranks near the top for the intent that are not
among its positives).

sentence-transformers' own trainers (``SentenceTransformerTrainer``, ``fit``) need the
``datasets`` and ``accelerate`` packages, which this project does not ship; the loop here
is a plain torch loop around the library's loss, which also makes the step and
wall-clock budgets exact. Batches never hold two pairs whose capabilities collide (a
positive of one anchor is never a negative of another), and the run is seeded.

The result is a directory ``caprank-ft-<version>`` whose version is the sha256 of the
trained weights: the encoder's id everywhere (``embedding`` tables, bundle, embedding
cache namespace), so vectors of different fine-tunes never mix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from caprank.config import FinetuneConfig
from caprank.embeddings.text import FINETUNED_PREFIX, register_encoder, resolve_model_path

log = logging.getLogger(__name__)

INFO_FILE = "finetune.json"
Encode = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class FinetunedEncoder:
    """A fine-tuned encoder on disk: its id (``caprank-ft-<version>``) and how it was made."""

    name: str
    path: Path
    version: str
    base_model: str
    steps: int
    seconds: float
    pairs: int
    losses: list[float] = field(default_factory=list)

    def info(self) -> dict:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


@dataclass(frozen=True)
class _Example:
    anchor: str
    positive: str  # capability id
    negatives: tuple[str, ...]


def mine_examples(
    pairs: Sequence[tuple[str, str]],
    catalog: Mapping[str, str],
    encode: Encode,
    hard_negatives: int,
    top_k: int,
    rng: np.random.Generator,
    limit: int | None = None,
) -> list[_Example]:
    """One example per distinct pair, with ``hard_negatives`` capabilities drawn from the
    base encoder's ``top_k`` for the intent that are none of the intent's positives (all
    of its positives in ``pairs``, also those of pairs left out). At most ``limit``
    pairs, a seeded sample, are mined: the rest could not be trained on in the budget."""
    pairs = list(dict.fromkeys((q, c) for q, c in pairs if c in catalog))
    positives: dict[str, set[str]] = {}
    for q, c in pairs:
        positives.setdefault(q, set()).add(c)
    if limit is not None and len(pairs) > limit:  # more than the step budget can use
        keep = np.sort(rng.choice(len(pairs), size=limit, replace=False))
        pairs = [pairs[i] for i in keep]
        positives = {q: positives[q] for q, _ in pairs}
    if hard_negatives == 0:
        return [_Example(q, c, ()) for q, c in pairs]
    cap_ids = list(catalog)
    intents = list(positives)
    scores = encode(intents) @ encode([catalog[c] for c in cap_ids]).T
    k = min(top_k + max(len(p) for p in positives.values()), len(cap_ids))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    pool = {
        q: [cap_ids[j] for j in top[i] if cap_ids[j] not in positives[q]][:top_k]
        for i, q in enumerate(intents)
    }
    out = []
    for q, c in pairs:
        candidates = pool[q]
        if len(candidates) < hard_negatives:
            continue  # a catalog too small to mine from: the pair has no hard negatives
        picked = rng.choice(len(candidates), size=hard_negatives, replace=False)
        out.append(_Example(q, c, tuple(candidates[j] for j in sorted(picked))))
    return out


def batches(
    examples: Sequence[_Example],
    positives: Mapping[str, set[str]],
    size: int,
    rng: np.random.Generator,
):
    """Endless batches of up to ``size`` examples, reshuffled each pass, where no text of
    the batch (positive or negative) is a positive of another anchor in it: MNRL treats
    every other column entry as a negative. An example that collides waits for a later
    batch."""
    while True:
        waiting = [examples[i] for i in rng.permutation(len(examples))]
        while waiting:
            batch: list[_Example] = []
            caps: set[str] = set()
            wanted: set[str] = set()
            rest = []
            for ex in waiting:
                texts = {ex.positive, *ex.negatives}
                mine = positives[ex.anchor]
                if len(batch) < size and not (texts & (caps | wanted)) and not (mine & caps):
                    batch.append(ex)
                    caps |= texts
                    wanted |= mine
                else:
                    rest.append(ex)
            waiting = rest
            if len(batch) < 2:
                break  # the rest only collide with each other: start a new pass
            yield batch


def weights_version(model) -> str:
    """sha256 (first 16 hex) of every parameter and buffer, by name: the encoder's version."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def finetune_encoder(
    pairs: Sequence[tuple[str, str]],
    catalog: Mapping[str, str],
    base_model: str,
    cfg: FinetuneConfig,
    out_dir: str | Path,
    *,
    seed: int = 13,
    device: str = "cpu",
    threads: int = 0,
    encode: Encode | None = None,
) -> FinetunedEncoder:
    """Fine-tune ``base_model`` on ``pairs`` (intent text, capability id of ``catalog``)
    and save it as ``out_dir/caprank-ft-<version>`` (registered in this process).

    Stops after ``cfg.steps`` steps or once ``cfg.max_minutes`` have passed (mining
    included), whichever comes first. ``encode`` (base vectors, unit rows) mines the hard
    negatives; default: the base encoder itself, uncached. Pairs must come from training
    data only: whatever they hold, the encoder learns.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from caprank.embeddings.text import encode_texts

    started = time.perf_counter()
    deadline = started + cfg.max_minutes * 60.0
    if threads:
        torch.set_num_threads(threads)
    _seed(seed)
    rng = np.random.default_rng(seed)
    encode = encode or (lambda texts: encode_texts(texts, base_model, 64, device))
    limit = 2 * cfg.steps * cfg.batch_size  # room for the batches' collision deferrals
    examples = mine_examples(pairs, catalog, encode, cfg.hard_negatives, cfg.mine_top_k, rng, limit)
    if len(examples) < 2:
        raise ValueError(f"fine-tuning needs at least 2 training pairs, got {len(examples)}")
    positives: dict[str, set[str]] = {}
    for q, c in pairs:  # every positive of an anchor, also of pairs not mined
        positives.setdefault(q, set()).add(c)

    # a fresh copy: the process-wide cached base encoder must keep its weights
    model = SentenceTransformer(resolve_model_path(base_model), device=device)
    loss_fn = MultipleNegativesRankingLoss(model, scale=cfg.scale)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    warmup = max(1, math.ceil(cfg.warmup_fraction * cfg.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / warmup)
            * max(0.0, (cfg.steps - step) / max(1, cfg.steps - warmup + 1))
        ),
    )
    model.train()
    losses: list[float] = []
    stream = batches(examples, positives, cfg.batch_size, rng)
    for _ in range(cfg.steps):
        if time.perf_counter() > deadline:
            log.warning("fine-tuning stopped at its %.1f min budget", cfg.max_minutes)
            break
        batch = next(stream)
        columns = [[ex.anchor for ex in batch], [catalog[ex.positive] for ex in batch]]
        columns += [[catalog[ex.negatives[j]] for ex in batch] for j in range(cfg.hard_negatives)]
        features = []
        for texts in columns:
            tokens = model.preprocess(texts)
            features.append(
                {k: v.to(model.device) if hasattr(v, "to") else v for k, v in tokens.items()}
            )
        loss = loss_fn(features, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(round(float(loss.detach().cpu()), 5))
    model.eval()
    version = weights_version(model)
    name = f"{FINETUNED_PREFIX}{version}"
    path = Path(out_dir) / name
    model.save(str(path))
    result = FinetunedEncoder(
        name=name,
        path=path,
        version=version,
        base_model=base_model,
        steps=len(losses),
        seconds=round(time.perf_counter() - started, 2),
        pairs=len(examples),
        losses=losses,
    )
    (path / INFO_FILE).write_text(json.dumps(result.info(), indent=1) + "\n", encoding="utf-8")
    register_encoder(name, path)
    return result


def find_encoder(directory: str | Path) -> Path | None:
    """The one ``caprank-ft-*`` encoder directory under ``directory``, if any."""
    found = sorted(Path(directory).glob(f"{FINETUNED_PREFIX}*"))
    found = [p for p in found if p.is_dir()]
    if len(found) > 1:
        raise ValueError(f"{directory}: more than one fine-tuned encoder: {found}")
    return found[0] if found else None


def register_dir(directory: str | Path) -> str | None:
    """Register the fine-tuned encoder kept under ``directory`` (embed output or bundle);
    its id, or None when there is none."""
    path = find_encoder(directory)
    if path is None:
        return None
    register_encoder(path.name, path)
    return path.name
