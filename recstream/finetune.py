"""Fine-tune the BERT item encoder on the stream's co-interactions (issue 11, item 7).

Two items that users take one after the other are, for this shop, alike, whatever their texts
say. :func:`finetune` turns such pairs (:mod:`recstream.finetune_pairs`) into a contrastive
fine-tune of the encoder's model, so that the content signal — and above all the cold items,
which have nothing but their text — follows the shop's notion of similarity:

* the loss is InfoNCE / MultipleNegativesRankingLoss with in-batch negatives
  (:func:`in_batch_loss`), both directions since pairs are unordered, on the mean-pooled,
  L2-normalised outputs (:func:`mean_pool`: :class:`~recstream.encoder.ItemEncoder`'s pooling,
  so what is trained is what is served);
* the budget is bounded twice, in steps and in seconds (the first reached ends the run);
* the device is chosen as the encoder chooses it (``"auto"``: CUDA when present), with bf16 (or
  fp16 with loss scaling) autocast on a GPU and float32 on the CPU — the same code, the autocast
  and scaler simply disabled, so the CPU tests run the GPU's path;
* the tuned model is saved as a new folder (written under a temporary name, then renamed) named
  by its content hash; its weights differ from the base's, so an ``ItemEncoder`` built from it
  has another ``model_id``: the vectors' version and cache key.

Running it without blocking a worker (a spawned process), re-encoding the catalogue and
swapping the vectors in: :mod:`recstream.finetune_job`.

>>> FinetuneConfig(max_steps=10).batch_size
32
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recstream.encoder_model import (
    BUNDLED_MODEL_NAME,
    model_fingerprint,
    resolve_device,
    resolve_model_path,
    resolve_num_threads,
)
from recstream.finetune_pairs import (
    co_interaction_pairs,
    distinct_batches,
    text_pairs,
    user_sequences,
)

if TYPE_CHECKING:  # torch takes seconds to import: only when a fine-tune runs
    import torch

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "co_interaction_pairs",
    "distinct_batches",
    "finetune",
    "in_batch_loss",
    "mean_pool",
    "text_pairs",
    "user_sequences",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """Budget and optimiser of one fine-tune; every field has a default that runs on a CPU.

    ``max_steps`` and ``max_seconds`` both bound the run (the first reached ends it; a step
    started is finished). ``train_layers`` trains only the top N transformer layers (0: all,
    embeddings included): on a CPU the backward pass through the lower layers is most of the
    cost, and the frozen layers keep the tuned vectors close to the ones they replace.
    ``scale`` multiplies the cosines before the softmax (20 = temperature 0.05, the
    sentence-transformers default). ``num_threads``: torch CPU threads of the process that
    trains (1 by default: the worker keeps the other cores).
    """

    max_steps: int = 60
    max_seconds: float = 180.0
    batch_size: int = 32
    lr: float = 2e-5
    warmup_steps: int = 5
    weight_decay: float = 0.01
    scale: float = 20.0
    max_length: int = 64
    train_layers: int = 0
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 2 or self.max_length < 2:
            raise ValueError("max_steps >= 1, batch_size >= 2 and max_length >= 2 are required")
        if not (self.max_seconds > 0 and self.lr >= 0 and self.scale > 0):
            raise ValueError("max_seconds and scale must be > 0, lr >= 0")


@dataclass
class FinetuneResult:
    """What a fine-tune produced. ``path``: the tuned model folder (``ItemEncoder(path)``
    loads it); ``fingerprint`` / ``base_fingerprint``: content hashes of the tuned and the base
    weights (they differ whenever a step changed a weight); ``losses``: one per step."""

    path: Path
    fingerprint: str
    base_fingerprint: str
    steps: int
    seconds: float
    losses: list[float]
    n_pairs: int
    device: str
    config: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Loss and pooling
# --------------------------------------------------------------------------------------------
def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mask-weighted mean over tokens, L2-normalised, in float32: ItemEncoder's pooling."""
    import torch

    weights = mask.to(torch.float32).unsqueeze(1)  # (b, 1, t)
    summed = torch.bmm(weights, hidden.float()).squeeze(1)
    pooled = summed / weights.sum(dim=2).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def in_batch_loss(anchors: torch.Tensor, positives: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives on unit vectors (b, d) × (b, d).

    Row i's positive is column i; the other b - 1 positives are its negatives. The mean of the
    anchor→positive and positive→anchor cross-entropies (pairs are unordered).

    >>> import torch
    >>> x = torch.eye(3)
    >>> right, wrong = in_batch_loss(x, x, 20.0), in_batch_loss(x, x[[1, 2, 0]], 20.0)
    >>> round(float(right), 6), round(float(wrong), 1)
    (0.0, 20.0)
    """
    import torch

    logits = scale * anchors @ positives.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    ce = torch.nn.functional.cross_entropy
    return 0.5 * (ce(logits, labels) + ce(logits.T, labels))


# --------------------------------------------------------------------------------------------
# The fine-tune
# --------------------------------------------------------------------------------------------
def _trainable(model: Any, train_layers: int) -> list[Any]:
    """Freeze all but the top ``train_layers`` layers (0: train everything); the parameters."""
    if train_layers <= 0:
        return list(model.parameters())
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if layers is None:  # not a BERT-shaped model: nothing to choose from, train it all
        return list(model.parameters())
    for param in model.parameters():
        param.requires_grad_(False)
    for layer in list(layers)[-train_layers:]:
        for param in layer.parameters():
            param.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def _lr_factor(step: int, config: FinetuneConfig) -> float:
    """The learning rate of ``step`` (0-based) as a share of ``config.lr``: a linear warm-up (the
    first steps' Adam moments are noise), then a linear decay to 0 at ``max_steps``, so a run cut
    short by ``max_seconds`` has only taken larger steps.

    >>> c = FinetuneConfig(max_steps=10, warmup_steps=2)
    >>> [round(_lr_factor(s, c), 2) for s in (0, 1, 5, 9)]
    [0.5, 0.9, 0.5, 0.1]
    """
    warmup = max(1, config.warmup_steps)
    return min((step + 1) / warmup, (config.max_steps - step) / config.max_steps)


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPUs that have it (no loss scaling needed), fp16 otherwise; None on the
    CPU, where fp16 matmuls are slow and training stays float32."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def finetune(
    pairs: Sequence[tuple[str, str]],
    out_root: str | Path,
    config: FinetuneConfig | None = None,
    *,
    model: str | Path | None = None,
) -> FinetuneResult:
    """Fine-tune the encoder's model on text pairs and save it as a new model folder.

    Parameters
    ----------
    pairs
        ``(text_a, text_b)`` of co-interacted items (see :func:`co_interaction_pairs`).
    out_root
        Folder under which the tuned model is saved, as ``<out_root>/<name>-ft-<hash>``; written
        under a temporary name and renamed, so a reader never sees half a model.
    config
        Budget and optimiser (:class:`FinetuneConfig`).
    model
        The base model, as :class:`~recstream.encoder.ItemEncoder` takes it (``None``: the
        bundled MiniLM). Never downloads.

    Returns
    -------
    FinetuneResult
        With ``steps == 0`` (and the base model's folder) when ``pairs`` make no batch.
    """
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    config = config or FinetuneConfig()
    started = time.perf_counter()
    base = resolve_model_path(model)
    base_fp = model_fingerprint(base)
    device = resolve_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(resolve_num_threads(config.num_threads))
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    result = FinetuneResult(base, base_fp, base_fp, 0, 0.0, [], len(pairs), str(device))
    result.config = asdict(config)
    name = BUNDLED_MODEL_NAME if model is None or str(model).strip() == "" else base.name
    result.config["out"] = str(Path(out_root) / name.split("-ft-")[0])  # no -ft-x-ft-y chains
    batches = distinct_batches(list(pairs), config.batch_size, rng)
    if not batches:
        log.warning("fine-tune: %d pairs make no batch of two distinct pairs: skipped", len(pairs))
        return result

    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # no loading/saving bars in worker logs
    try:
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
        net = AutoModel.from_pretrained(base, local_files_only=True).to(device)
        deadline = started + config.max_seconds
        result.path = _train(net, tokenizer, batches, pairs, config, device, rng, result, deadline)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    result.fingerprint = model_fingerprint(result.path)
    result.seconds = time.perf_counter() - started
    log.info(
        "fine-tune: %d steps in %.1f s on %s, loss %.3f -> %.3f, saved %s",
        result.steps,
        result.seconds,
        device,
        result.losses[0],
        result.losses[-1],
        result.path,
    )
    return result


def _train(
    net: Any,
    tokenizer: Any,
    batches: list[list[tuple[str, str]]],
    pairs: Sequence[tuple[str, str]],
    config: FinetuneConfig,
    device: torch.device,
    rng: random.Random,
    result: FinetuneResult,
    deadline: float,
) -> Path:
    """The training loop of :func:`finetune`; fills ``result`` and returns the saved folder.
    Stops after ``config.max_steps`` steps or at ``deadline`` (``time.perf_counter()``), the
    model's loading included in the budget."""
    import torch

    params = _trainable(net, config.train_layers)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    amp = _autocast_dtype(device)
    # fp16 gradients underflow without loss scaling; bf16 and float32 need none
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    net.train()  # dropout on, as in sentence-transformers' training
    epoch = 0
    while result.steps < config.max_steps:
        for batch in batches:
            texts = [a for a, _ in batch] + [b for _, b in batch]
            tokens = tokenizer(
                texts,
                truncation=True,
                max_length=config.max_length,
                padding=True,
                return_tensors="pt",
                return_token_type_ids=False,
            ).to(device)
            # anchors and positives in one forward pass: one padded matrix, one kernel launch
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                hidden = net(**tokens).last_hidden_state
            pooled = mean_pool(hidden, tokens["attention_mask"])
            loss = in_batch_loss(pooled[: len(batch)], pooled[len(batch) :], config.scale)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            result.losses.append(float(loss.detach()))
            result.steps += 1
            if result.steps >= config.max_steps or time.perf_counter() >= deadline:
                break
        else:
            epoch += 1
            batches = distinct_batches(list(pairs), config.batch_size, rng)  # a new shuffle
            continue
        break
    net.eval()
    return _save(net, tokenizer, result, epochs=epoch)


def _save(net: Any, tokenizer: Any, result: FinetuneResult, epochs: int) -> Path:
    """Save under a temporary name, then rename to ``<base name>-ft-<weights hash>``."""
    stem = Path(result.config["out"])
    out_root = stem.parent
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = out_root / f".tmp-ft-{uuid.uuid4().hex[:12]}"
    try:
        net.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        card = {
            "base_model": str(result.path),
            "base_fingerprint": result.base_fingerprint,
            "steps": result.steps,
            "epochs_completed": epochs,
            "n_pairs": result.n_pairs,
            "loss_first": result.losses[0],
            "loss_last": result.losses[-1],
            "device": result.device,
            "config": result.config,
            "created": time.time(),
        }
        # not part of the fingerprint (encoder_model._FINGERPRINT_NAMES): metadata only
        (tmp / "finetune.json").write_text(json.dumps(card, indent=2) + "\n")
        final = out_root / f"{stem.name}-ft-{model_fingerprint(tmp)[:12]}"
        if final.exists():  # the same weights again (same pairs, seed, steps): keep the first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
        return final
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
