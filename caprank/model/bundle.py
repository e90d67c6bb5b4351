"""A trained model on disk: ``bundle.json`` + weights + lexicon + vectors + its catalog.

Layout of a bundle directory (what ``caprank.online.models`` finds by ``bundle.json``)::

    bundle.json     format, kind, text model, dims, ids, feature scaler, hybrid weights,
                    value-head calibration (absent in older bundles: identity),
                    evidence (training positives of each id-channel capability: the
                    residual gate; a capability not listed scores its cosine prior)
    weights.pt      the SHGAT state dict (loaded with ``weights_only=True``)
    lexicon.json    the lexical channel's vocabulary and idf
    vectors.npz     training catalog tool (hybrid) and capability (text) vectors
    catalog/        the training catalog's tools and capabilities tables
    caprank-ft-<v>/ the fine-tuned text encoder, when ``text_model`` is one (registered
                    by ``load_bundle``, so serving encodes intents with it)

``Bundle.index`` precomputes a ``RankIndex`` for any catalog: known capabilities and
tools reuse their stored vectors; new ones are encoded from text (and, for tools, get
no graph part and no learned embedding), so unseen capabilities score through their
tools and text.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from caprank.embeddings.text import FINETUNED_PREFIX, register_encoder, registered_path
from caprank.errors import CaprankError
from caprank.files import atomic_dir
from caprank.model.calibration import Calibration, CalibrationError
from caprank.model.features import FeatureScaler
from caprank.model.index import RankIndex
from caprank.model.inputs import CatalogInputs, catalog_graph
from caprank.model.lexicon import Lexicon
from caprank.model.shgat import SHGAT, ModelDims

BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "weights.pt"
LEXICON_FILE = "lexicon.json"
VECTORS_FILE = "vectors.npz"
FORMAT = 2  # 2: gated residual over a fixed cosine prior, "evidence"
Encoder = Callable[[list[str]], np.ndarray]


class BundleError(CaprankError):
    """A bundle directory is incomplete or was written by another format."""


@dataclass
class Bundle:
    model: SHGAT
    lexicon: Lexicon
    scaler: FeatureScaler
    text_model: str
    tool_ids: list[str]  # rows of the learned tool table and of tool_vectors
    tool_vectors: np.ndarray
    capability_ids: list[str]  # training catalog order, rows of capability_text
    capability_text: np.ndarray
    id_capabilities: list[str]  # rows of the id channel
    evidence: list[float]  # training positives of each id_capabilities row (residual gate)
    hybrid: dict = field(default_factory=dict)  # text_weight, graph_weight, method
    calibration: Calibration = field(default_factory=Calibration)  # value head -> P(relevant)
    meta: dict = field(default_factory=dict)

    @property
    def tool_rows(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tool_ids)}

    @property
    def id_rows(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.id_capabilities)}

    @property
    def evidence_by_capability(self) -> dict[str, float]:
        return dict(zip(self.id_capabilities, self.evidence, strict=True))

    def _new_tool_vectors(self, texts: Sequence[str], encode: Encoder) -> np.ndarray:
        """Hybrid vectors for tools the bundle never saw: their text part only."""
        dim = self.tool_vectors.shape[1]
        out = np.zeros((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        text = encode(list(texts))
        w_t = float(self.hybrid.get("text_weight", 0.3))
        w_g = float(self.hybrid.get("graph_weight", 0.7))
        if self.hybrid.get("method", "concat") == "concat" and text.shape[1] <= dim:
            out[:, : text.shape[1]] = np.sqrt(w_t / (w_t + w_g)) * text
        return out

    def catalog_inputs(
        self,
        capability_ids: Sequence[str],
        capability_tools: Sequence[Sequence[str]],
        capability_texts: Sequence[str],
        tool_texts: Mapping[str, str],
        raw_features: np.ndarray | None,
        encode: Encoder | None,
    ) -> CatalogInputs:
        """Inputs for a (serving) catalog; ``encode`` is needed only for new items."""
        known_caps = {c: i for i, c in enumerate(self.capability_ids)}
        known_tools = self.tool_rows
        tool_ids = list(dict.fromkeys(t for tools in capability_tools for t in tools))
        new_tools = [t for t in tool_ids if t not in known_tools]
        new_caps = [i for i, c in enumerate(capability_ids) if c not in known_caps]
        if (new_tools or new_caps) and encode is None:
            raise BundleError("the catalog has new items and no text encoder was given")
        tool_vecs = np.zeros((len(tool_ids), self.tool_vectors.shape[1]), dtype=np.float32)
        for i, t in enumerate(tool_ids):
            if t in known_tools:
                tool_vecs[i] = self.tool_vectors[known_tools[t]]
        if new_tools:
            fresh = self._new_tool_vectors([tool_texts.get(t, t) for t in new_tools], encode)
            pos = {t: i for i, t in enumerate(tool_ids)}
            tool_vecs[[pos[t] for t in new_tools]] = fresh
        cap_text = np.zeros((len(capability_ids), self.capability_text.shape[1]), np.float32)
        for i, c in enumerate(capability_ids):
            if c in known_caps:
                cap_text[i] = self.capability_text[known_caps[c]]
        if new_caps:
            cap_text[new_caps] = encode([capability_texts[i] for i in new_caps])
        tpos = {t: i for i, t in enumerate(tool_ids)}
        return CatalogInputs(
            capability_ids=list(capability_ids),
            tool_ids=tool_ids,
            capability_tools=[[tpos[t] for t in tools] for tools in capability_tools],
            tool_vectors=tool_vecs,
            capability_text=cap_text,
            capability_features=self.scaler.transform(raw_features, len(capability_ids)),
        )

    def index(self, inputs: CatalogInputs, device: str = "cpu") -> RankIndex:
        """Precompute every capability's key (and value-head inputs) for ``inputs``."""
        graph = catalog_graph(inputs, self.tool_rows, self.id_rows, self.evidence_by_capability)
        return RankIndex.build(
            self.model,
            self.lexicon,
            graph,
            inputs.capability_ids,
            self.text_model,
            device,
            self.calibration,
        )


def save_bundle(
    bundle: Bundle, directory: str | Path, extra_files: Callable[[Path], None] | None = None
) -> Path:
    """Write ``bundle`` atomically into ``directory`` (replacing it)."""
    directory = Path(directory)
    meta = {
        "format": FORMAT,
        "kind": "shgat",
        "text_model": bundle.text_model,
        "dims": bundle.model.dims.to_json(),
        "tool_ids": bundle.tool_ids,
        "capability_ids": bundle.capability_ids,
        "id_capabilities": bundle.id_capabilities,
        "evidence": [float(n) for n in bundle.evidence],
        "features": bundle.scaler.to_json(),
        "hybrid": bundle.hybrid,
        "calibration": bundle.calibration.to_json(),
        **bundle.meta,
    }
    with atomic_dir(directory) as tmp:
        torch.save(bundle.model.state_dict(), tmp / WEIGHTS_FILE)
        (tmp / LEXICON_FILE).write_text(json.dumps(bundle.lexicon.to_json()), encoding="utf-8")
        np.savez(
            tmp / VECTORS_FILE,
            tool_vectors=bundle.tool_vectors,
            capability_text=bundle.capability_text,
        )
        encoder = registered_path(bundle.text_model)
        if encoder is not None:  # a fine-tuned encoder: the bundle carries it
            shutil.copytree(encoder, tmp / bundle.text_model)
        if extra_files is not None:
            extra_files(tmp)
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return directory


def load_bundle(directory: str | Path) -> Bundle:
    directory = Path(directory)
    path = directory / BUNDLE_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable bundle metadata ({exc})") from exc
    if meta.get("format") != FORMAT or meta.get("kind") != "shgat":
        raise BundleError(f"{path}: expected format {FORMAT} kind 'shgat'")
    if str(meta.get("text_model", "")).startswith(FINETUNED_PREFIX):
        encoder = directory / meta["text_model"]
        if not encoder.is_dir():
            raise BundleError(f"{encoder}: the bundle's fine-tuned text encoder is missing")
        register_encoder(meta["text_model"], encoder)
    for name in (WEIGHTS_FILE, LEXICON_FILE, VECTORS_FILE):
        if not (directory / name).is_file():
            raise BundleError(f"{directory / name}: missing from the bundle")
    evidence = meta.get("evidence")
    if not isinstance(evidence, list) or len(evidence) != len(meta["id_capabilities"]):
        raise BundleError(f"{path}: 'evidence' must list one count per id capability")
    model = SHGAT(ModelDims.from_json(meta["dims"]))
    state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    vectors = np.load(directory / VECTORS_FILE)
    lexicon = Lexicon.from_json(json.loads((directory / LEXICON_FILE).read_text("utf-8")))
    known = {
        "format",
        "kind",
        "text_model",
        "dims",
        "tool_ids",
        "capability_ids",
        "id_capabilities",
        "evidence",
        "features",
        "hybrid",
        "calibration",
    }
    return Bundle(
        model=model,
        lexicon=lexicon,
        scaler=FeatureScaler.from_json(meta["features"]),
        text_model=meta["text_model"],
        tool_ids=list(meta["tool_ids"]),
        tool_vectors=vectors["tool_vectors"],
        capability_ids=list(meta["capability_ids"]),
        capability_text=vectors["capability_text"],
        id_capabilities=list(meta["id_capabilities"]),
        evidence=[float(n) for n in evidence],
        hybrid=dict(meta.get("hybrid") or {}),
        calibration=_calibration(path, meta.get("calibration")),
        meta={k: v for k, v in meta.items() if k not in known},
    )


def _calibration(path: Path, data) -> Calibration:
    try:
        return Calibration.from_json(data)
    except CalibrationError as exc:
        raise BundleError(f"{path}: {exc}") from exc
