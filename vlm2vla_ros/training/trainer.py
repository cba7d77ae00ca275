"""LoRA fine-tuning with PEFT on the transformers Trainer (vlm2vla-train's core).

Why transformers' Trainer and not TRL's SFTTrainer: the examples are already chat
conversations with images, and the answer-only loss needs the prompt boundary of the exact
chat template the policy engine uses. AnswerOnlyCollator does that on the processor itself;
Trainer then adds what a hand-written loop would get wrong (accumulation, schedules, mixed
precision, gradient checkpointing, checkpoints and resume, accelerate/DeepSpeed launch)
without re-formatting the data. SFTTrainer 1.x would route vision data through its own
formatting and masking, which must then be kept in step with the engine's prompts twice.

Outputs in output_dir: adapter_config.json + adapter_model.safetensors (a standard PEFT
adapter, PolicyConfig.adapter_path), action_language.json (the dataset's limits and prompts,
which load_policy checks), train_log.json, loss.png, checkpoints/ (for --resume).

With plan_total_head the Trainer's loss gains a temporary head's term (place_head.PlaceHead on
the plans' stated totals); the head is not saved, so a resumed run starts it afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm2vla_ros.data.builder import BUILD_FILE, repeat_stages
from vlm2vla_ros.files import write_whole
from vlm2vla_ros.policy.adapter_base import record_adapter_base
from vlm2vla_ros.policy.adapter_language import ADAPTER_LANGUAGE_FILE, AdapterLanguage

from .collator import AnswerOnlyCollator
from .config import TrainConfig
from .place_head import PlaceHead, place_targets, plan_total_cm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CHECKPOINTS = "checkpoints"
PLACE_TARGETS = "place_targets"
"""The batch key of the place head's targets, taken out before the model sees the batch."""


class TrainError(RuntimeError):
    """Training cannot start or continue; the message says why in one sentence."""


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    first_loss: float | None
    last_loss: float | None
    seconds: float
    interrupted: bool
    train_examples: int


class _ExampleList:
    """A map-style dataset over example dicts (the collator does all processing)."""

    def __init__(self, examples: list[dict[str, Any]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index]


def load_split(config: TrainConfig, split: str) -> list[dict[str, Any]]:
    from vlm2vla_ros.data.builder import read_examples

    return read_examples(Path(config.dataset_dir) / f"{split}.jsonl", config.stages)


def _check_images(config: TrainConfig, examples: list[dict[str, Any]]) -> None:
    """TrainError naming the frames the examples need that are not there (a dataset copied without
    its images/), before the model loads: otherwise the first batch that needs one fails mid-run."""
    missing = sorted({str(image) for e in examples for image in e.get("images", ())
                      if isinstance(image, str) and not Path(image).is_file()})
    if missing:
        raise TrainError(f"{len(missing)} frame(s) the examples of {config.dataset_dir} need are missing, "
                         f"e.g. {missing[0]} (was the dataset copied without its images/ folder?)")


def load_model_for_training(config: TrainConfig) -> Any:
    """(peft model, processor, device): the base from a local folder with fresh LoRA layers."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlm2vla_ros.policy.transformers_backend import paper_lora_config

    model_dir = Path(config.model_path)
    if not (model_dir / "config.json").is_file():
        raise TrainError(f"model folder {model_dir} has no config.json, so it is not a Hugging Face model folder")
    cuda = torch.cuda.is_available() and config.device != "cpu"
    if config.device == "cuda" and not cuda:
        raise TrainError("device cuda was requested but this machine has no usable CUDA GPU")
    dtype = {"auto": torch.bfloat16 if cuda else torch.float32}.get(config.dtype) or getattr(torch, config.dtype)
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype}
    if config.load_in_4bit:
        if not cuda:
            raise TrainError("load_in_4bit (QLoRA) needs a CUDA GPU with bitsandbytes")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    try:
        processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(model_dir, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise TrainError(f"model folder {model_dir} could not be loaded: {str(exc).splitlines()[0][:300]}") from exc
    if config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    model.config.use_cache = False
    lora = paper_lora_config(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                             vision=config.vision_learning_rate > 0)
    return get_peft_model(model, lora), processor, dtype, cuda


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Fine-tune; an interrupted run (Ctrl-C) saves a checkpoint that resume=True continues."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

    out = Path(config.output_dir)
    checkpoints = out / CHECKPOINTS
    has_checkpoint = checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    if has_checkpoint and not resume:
        raise TrainError(f"{out} holds checkpoints of an earlier run; pass --resume to continue it or choose a new output folder")
    earlier = [name for name in ("adapter_config.json", RUN_CONFIG, RUN_DATA) if (out / name).is_file()]
    if earlier and not resume:  # a finished run whose checkpoints were deleted: its adapter would be overwritten
        raise TrainError(f"{out} holds an earlier run's adapter ({', '.join(earlier)}); choose a new output folder")
    # a checkpoint cut short while it was written (a second Ctrl-C, a killed process) has no trainer_state.json
    complete = sorted((p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
                      key=lambda p: int(p.name.rpartition("-")[2]) if p.name.rpartition("-")[2].isdigit() else -1)
    if resume and not complete:
        raise TrainError(f"--resume was given but {checkpoints} holds no checkpoint to continue from"
                         + (" (only ones cut short while being written)" if has_checkpoint else ""))
    if resume:
        _check_resumable(out, config)
    language = _dataset_language(Path(config.dataset_dir))
    train_examples = load_split(config, "train")
    if not train_examples:
        raise TrainError(f"{config.dataset_dir}/train.jsonl holds no examples of the stages {list(config.stages)}")
    if resume:
        _check_same_data(out, train_examples)
    eval_examples = load_split(config, "val") if config.eval_steps > 0 else []
    if config.eval_steps > 0 and not eval_examples:
        # turning evaluation off here would leave a run that was asked for a validation loss without one
        raise TrainError(f"eval_steps is {config.eval_steps} but {config.dataset_dir}/val.jsonl holds no examples of "
                         f"the stages {list(config.stages)}; build the dataset with a validation split or leave eval_steps 0")
    _check_images(config, train_examples + eval_examples)
    set_seed(config.seed)
    model, processor, dtype, cuda = load_model_for_training(config)
    collator: Any = AnswerOnlyCollator(processor, max_length=config.max_length)
    train_examples, too_long = _within_max_length(collator, train_examples)
    eval_examples, eval_too_long = _within_max_length(collator, eval_examples)
    if not train_examples:
        raise TrainError(f"every training example is longer than max_length {config.max_length} tokens; raise it")
    if config.eval_steps > 0 and not eval_examples:
        raise TrainError(f"eval_steps is {config.eval_steps} but every validation example is longer than max_length "
                         f"{config.max_length} tokens; raise it or leave eval_steps 0")
    if too_long or eval_too_long:
        print(f"vlm2vla-train: left out {too_long} training and {eval_too_long} validation example(s) longer than "
              f"max_length {config.max_length} tokens (a cut answer would teach the model to stop mid-action)")
    train_examples = repeat_stages(train_examples, config.stage_repeats)
    head = _plan_total_head(config, model, train_examples)
    if head is not None:
        collator = _WithPlaceTargets(collator, head)
    out.mkdir(parents=True, exist_ok=True)
    args = TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        bf16=cuda and dtype == torch.bfloat16,
        fp16=cuda and dtype == torch.float16,
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if eval_examples else "no",
        eval_steps=config.eval_steps if eval_examples else None,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=config.dataloader_workers,
        report_to=config.report_to,
        seed=config.seed,
        use_cpu=not cuda,
        disable_tqdm=False,
    )

    stop = _StopOnSignal()

    class _Stop(TrainerCallback):
        def on_step_end(self, _args: Any, state: Any, control: Any, **_: Any) -> Any:
            if stop.requested:
                control.should_save = True
                control.should_training_stop = True
            return control

    trainer = _trainer_class(_with_vision_rate(Trainer, config.vision_learning_rate), head)(
        model=model,
        args=args,
        train_dataset=_ExampleList(train_examples),
        eval_dataset=_ExampleList(eval_examples) if eval_examples else None,
        data_collator=collator,
        callbacks=[_Stop()],
    )
    if head is not None:
        head.linear.to(trainer.args.device)  # where the Trainer put the model (a GPU), not where it was loaded
    if not resume and trainer.is_world_process_zero():
        write_whole(out / RUN_CONFIG, json.dumps(config.to_dict(), indent=1))
        write_whole(out / RUN_DATA, json.dumps(_data_fingerprint(train_examples), indent=1))
    start = time.perf_counter()
    with stop:
        trainer.train(resume_from_checkpoint=str(complete[-1]) if resume else None)
    seconds = time.perf_counter() - start
    interrupted = stop.requested
    history = trainer.state.log_history
    losses = [(e["step"], e["loss"]) for e in history if "loss" in e]
    result = TrainResult(
        output_dir=out,
        steps=trainer.state.global_step,
        first_loss=losses[0][1] if losses else None,
        last_loss=losses[-1][1] if losses else None,
        seconds=seconds,
        interrupted=interrupted,
        train_examples=len(train_examples),
    )
    if not trainer.is_world_process_zero():  # (each process of a multi-GPU run trains; one writes)
        return result
    if not interrupted:
        # the record goes first, so it never stands beside weights it does not describe; with no
        # record for this dataset, one an earlier run left in the folder stays gone
        (out / ADAPTER_LANGUAGE_FILE).unlink(missing_ok=True)
        model.save_pretrained(out)
        if language is not None:
            write_whole(out / ADAPTER_LANGUAGE_FILE, json.dumps(language.to_dict(), indent=1) + "\n")
        record_adapter_base(out, config.model_path)  # load_policy refuses the adapter on another base
    log = {
        "config": config.to_dict(),
        "resumed": resume,
        "interrupted": interrupted,
        "global_step": trainer.state.global_step,
        "train_examples": len(train_examples),
        "eval_examples": len(eval_examples),
        "seconds": round(seconds, 2),
        "too_long_examples": {"train": too_long, "val": eval_too_long},
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "plan_total_head": _head_summary(getattr(trainer, "place_losses", None)),
        "log_history": history,
    }
    _merge_log(out / "train_log.json", log)
    plot_loss(out / "train_log.json", out / "loss.png")
    return result


def _dataset_language(dataset_dir: Path) -> AdapterLanguage | None:
    """The action language (policy.adapter_language.AdapterLanguage) the dataset's build.json
    records; None, said once, for a build.json that does not record it (written by hand or by
    other tools: the adapter is then loaded unchecked), and None for a dataset without one."""
    path = dataset_dir / BUILD_FILE
    if not path.is_file():
        return None
    try:
        return AdapterLanguage.from_dict(json.loads(path.read_text(encoding="utf-8"))["config"])
    except (ValueError, TypeError, KeyError) as exc:
        print(f"vlm2vla-train: {path} does not record the dataset's action limits and prompts ({type(exc).__name__}: "
              f"{exc}), so the adapter gets no action_language.json and loads unchecked")
        return None


RUN_CONFIG = "train_config.json"
"""The settings a run started with, which a resumed run must keep (RESUME_MAY_CHANGE aside)."""
RESUME_MAY_CHANGE = ("max_steps", "epochs", "logging_steps", "save_steps", "save_total_limit", "eval_steps",
                     "dataloader_workers", "report_to")
"""Settings a resumed run may change: how long it goes on and what it logs, not what it learns."""


RUN_DATA = "train_data.json"
"""How many training examples a run started with and a hash of them, which a resumed run must match."""


def _data_fingerprint(examples: list[dict[str, Any]]) -> dict[str, Any]:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps(example, sort_keys=True).encode("utf-8"))
    return {"train_examples": len(examples), "sha256": digest.hexdigest()}


def _read_record(path: Path) -> dict[str, Any]:
    """A run's own JSON record (RUN_CONFIG, RUN_DATA); TrainError naming it when it is unreadable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainError(f"cannot read {path} ({exc}): the run cannot be checked for --resume; train again "
                         "into a new output folder") from None
    if not isinstance(record, dict):
        raise TrainError(f"{path} is not a JSON object: the run cannot be checked for --resume")
    return record


def _check_same_data(out: Path, examples: list[dict[str, Any]]) -> None:
    """TrainError when the training examples are not the ones the run started with (a dataset
    rebuilt or extended in between): the Trainer would skip the first batches of another shuffle,
    leaving some examples unseen and others seen twice. Runs from before RUN_DATA pass."""
    path = out / RUN_DATA
    if not path.is_file():
        return
    started, now = _read_record(path), _data_fingerprint(examples)
    if started != now:
        raise TrainError(f"--resume with other training examples than the run started with ({started['train_examples']} "
                         f"then, {now['train_examples']} now, or the same number changed; see {path}): "
                         "train again into a new output folder")


def _check_resumable(out: Path, config: TrainConfig) -> None:
    """TrainError naming the settings a resumed run changed that would make it another run (a new
    grad_accum also makes the Trainer skip the wrong batches); runs from before RUN_CONFIG pass."""
    path = out / RUN_CONFIG
    if not path.is_file():
        return
    started = _read_record(path)
    now = json.loads(json.dumps(config.to_dict()))
    changed = sorted(k for k in set(started) | set(now) if k not in RESUME_MAY_CHANGE and started.get(k) != now.get(k))
    if changed:
        raise TrainError(f"--resume with other settings than the run started with: {', '.join(changed)} "
                         f"(see {path}; only {', '.join(RESUME_MAY_CHANGE)} may change)")


def _plan_total_head(config: TrainConfig, model: Any, examples: list[dict[str, Any]]) -> PlaceHead | None:
    """The temporary head of config.plan_total_head on the model's device, or None when off; an
    error when no training example states a total for it to learn."""
    if not config.plan_total_head:
        return None
    if not any(plan_total_cm(e) is not None for e in examples):
        raise TrainError("plan_total_head is on, but no training plan states its total "
                         "(build the dataset with --plan-totals)")
    text = getattr(model.config, "text_config", model.config)
    head = PlaceHead(text.hidden_size, config.plan_total_head, plan_total_cm, config.seed)
    head.linear.to(next(model.parameters()).device)
    return head


def _within_max_length(collator: AnswerOnlyCollator, examples: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The examples that fit max_length whole, and how many did not. Cutting one would train
    an answer without its end (an action list never closed, no end-of-turn), or none at all."""
    kept = [e for e, n in zip(examples, collator.lengths(examples)) if n <= collator.max_length]
    return kept, len(examples) - len(kept)


class _WithPlaceTargets:
    """The collator's batch with each example's place target beside it (PLACE_TARGETS)."""

    def __init__(self, collator: AnswerOnlyCollator, head: PlaceHead) -> None:
        self.collator, self.head = collator, head

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return {**self.collator(examples), PLACE_TARGETS: place_targets(self.head, examples)}


VISION_GROUP = "vision_lora"
"""Marks the optimiser group that holds the vision tower's LoRA weights."""


def _with_vision_rate(trainer: type, rate: float) -> type:
    """The Trainer itself when the tower is not adapted; otherwise a Trainer whose optimiser
    keeps the tower's LoRA weights in a group of their own at `rate` (the scheduler scales every
    group alike). The tower reads the image for every answer, so it is moved more gently than the
    language model (docs/miniature.md, finding 38)."""
    if not rate:
        return trainer

    class VisionRateTrainer(trainer):  # type: ignore[misc, valid-type]
        def create_optimizer(self, model: Any = None) -> Any:
            optimiser = super().create_optimizer(model)
            if any(g.get(VISION_GROUP) for g in optimiser.param_groups):
                return optimiser
            tower = {id(p) for name, p in self.model.named_parameters() if ".vision_tower." in name}
            moved = []
            for group in optimiser.param_groups:
                moved += [p for p in group["params"] if id(p) in tower]
                group["params"] = [p for p in group["params"] if id(p) not in tower]
            if not moved:
                raise TrainError("vision_learning_rate is set, but the model has no trainable vision tower weights")
            optimiser.add_param_group({"params": moved, "lr": rate, "weight_decay": self.args.weight_decay, VISION_GROUP: True})
            return optimiser

    return VisionRateTrainer


def _trainer_class(trainer: type, head: PlaceHead | None) -> type:
    """The Trainer itself without a head; with one, a Trainer that adds the head's term to the loss
    (per micro-batch, scaled as the model's loss is for gradient accumulation), optimises the
    head's weights with the adapter's and records the head's error of every step."""
    if head is None:
        return trainer

    class PlaceHeadTrainer(trainer):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.place_losses: list[float] = []

        def create_optimizer(self, model: Any = None) -> Any:
            optimiser = super().create_optimizer(model)
            if not any(p is head.linear.weight for g in optimiser.param_groups for p in g["params"]):
                optimiser.add_param_group({"params": list(head.linear.parameters()), "weight_decay": 0.0})
            return optimiser

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            targets = inputs.pop(PLACE_TARGETS)
            loss, outputs = super().compute_loss(model, {**inputs, "output_hidden_states": True}, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
            place = head.loss(outputs.hidden_states[-1], inputs["labels"], targets) if model.training else None
            if place is not None:
                self.place_losses.append(float(place.detach()))
                if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
                    place = place / self.current_gradient_accumulation_steps
                loss = loss + head.weight * place
            return (loss, outputs) if return_outputs else loss

    return PlaceHeadTrainer


def _head_summary(losses: list[float] | None) -> dict[str, Any] | None:
    """The head's error over the first and last tenth of the (micro-)batches that had a plan with a
    total, rms cm a side (None without)."""
    if not losses:
        return None
    tenth = max(1, len(losses) // 10)
    first, last = losses[:tenth], losses[-tenth:]
    return {"batches": len(losses), "first_rms_cm": round(PlaceHead.rms_cm(sum(first) / len(first)), 2),
            "last_rms_cm": round(PlaceHead.rms_cm(sum(last) / len(last)), 2)}


def _merge_log(path: Path, log: dict[str, Any]) -> None:
    """A resumed run's history already holds the earlier steps (from the checkpoint); keep runs listed."""
    runs: list[dict[str, Any]] = []
    if path.is_file():
        try:
            runs = json.loads(path.read_text()).get("runs", [])
        except ValueError:
            runs = []
    runs.append({k: v for k, v in log.items() if k != "log_history"})
    data = {**log, "runs": runs}
    write_whole(path, json.dumps(data, indent=1))


def plot_loss(log_file: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = json.loads(log_file.read_text())["log_history"]
    train = [(e["step"], e["loss"]) for e in history if "loss" in e]
    val = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (answer tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


class _StopOnSignal:
    """SIGINT/SIGTERM ask the Trainer to save a checkpoint and stop after the current step;
    a second signal interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nsignal {signum}: saving a checkpoint after this step; rerun with --resume to continue", flush=True)

    def __enter__(self) -> _StopOnSignal:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
