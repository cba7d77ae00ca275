"""The dataset card: what a built dataset holds, in numbers and plots (README.md + PNGs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .builder import BUILD_FILE, STAGES, answer_text


def _prompt_text(example: dict[str, Any]) -> str:
    return "\n".join(
        item.get("text", "") for message in example["messages"][:-1] for item in message["content"] if item.get("type") == "text"
    )


def dataset_stats(out_dir: Path, tokenizer: Any | None = None) -> dict[str, Any]:
    """Counts per split and stage, answer/prompt lengths (tokens when a tokenizer is given,
    else characters), chunk lengths and per-move magnitudes."""
    examples: list[dict[str, Any]] = []
    for split in ("train", "val"):
        file = out_dir / f"{split}.jsonl"
        if file.is_file():
            examples += [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    unit = "tokens" if tokenizer is not None else "characters"

    def length(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else len(text)

    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    lengths: dict[str, dict[str, list[int]]] = {stage: {"answer": [], "prompt": []} for stage in STAGES}
    moves: list[list[float]] = []
    chunk_steps: list[int] = []
    episodes: dict[str, set] = {"train": set(), "val": set()}
    for e in examples:
        counts[e["split"]][e["stage"]] = counts[e["split"]].get(e["stage"], 0) + 1
        episodes[e["split"]].add(e["episode_id"])
        lengths[e["stage"]]["answer"].append(length(answer_text(e)))
        lengths[e["stage"]]["prompt"].append(length(_prompt_text(e)))
        if e["stage"] == "chunk":
            moves += [step[:3] for step in e["meta"]["chunk"]]
            chunk_steps.append(len(e["meta"]["chunk"]))
    return {
        "unit": unit,
        "counts": counts,
        "episodes": {k: len(v) for k, v in episodes.items()},
        "lengths": lengths,
        "moves": moves,
        "chunk_steps": chunk_steps,
    }


def write_card(out_dir: Path, tokenizer: Any | None = None) -> Path:
    """README.md with counts and statistics, token_lengths.png and action_magnitudes.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = dataset_stats(out_dir, tokenizer)
    build = json.loads((out_dir / BUILD_FILE).read_text()) if (out_dir / BUILD_FILE).is_file() else {}
    unit = stats["unit"]
    lines = [
        "# Dataset card",
        "",
        "Built by vlm2vla-dataset (docs/data_and_training.md). One example per line in train.jsonl / "
        "val.jsonl: stage, chat messages ending with the answer, image paths relative to this folder.",
        "",
        f"Episodes: train {stats['episodes']['train']}, validation {stats['episodes']['val']} (split by split group: an episode, or one scene's episodes in every language).",
        "",
        "| stage | train | val | answer length, " + unit + " (mean / max) | prompt text length, " + unit + " (mean / max) |",
        "|---|---|---|---|---|",
    ]
    for stage in STAGES:
        answer, prompt = stats["lengths"][stage]["answer"], stats["lengths"][stage]["prompt"]
        if not answer:
            continue
        lines.append(
            f"| {stage} | {stats['counts']['train'].get(stage, 0)} | {stats['counts']['val'].get(stage, 0)} | "
            f"{np.mean(answer):.1f} / {max(answer)} | {np.mean(prompt):.1f} / {max(prompt)} |"
        )
    lines.append("")
    lines.append("Prompt lengths count text only; each image adds the model's image tokens (256 for Gemma-3).")
    moves = np.array(stats["moves"], dtype=float).reshape(-1, 3)
    if len(moves):
        norms = np.linalg.norm(moves, axis=1)
        lines += [
            "",
            "## Actions (merged moves of the chunk examples, cm)",
            "",
            "| | dx | dy | dz | length |",
            "|---|---|---|---|---|",
            "| mean abs | " + " | ".join(f"{v:.2f}" for v in np.abs(moves).mean(axis=0)) + f" | {norms.mean():.2f} |",
            "| max abs | " + " | ".join(f"{v:.2f}" for v in np.abs(moves).max(axis=0)) + f" | {norms.max():.2f} |",
            "",
            f"Moves per chunk: mean {np.mean(stats['chunk_steps']):.1f}, max {max(stats['chunk_steps'])}.",
        ]
    skipped = build.get("this_run", {}).get("skipped", [])
    notes = build.get("this_run", {}).get("notes", {})
    if skipped or notes:
        lines += ["", "## Last build run", ""]
        lines += [f"- {key}: {value}" for key, value in sorted(notes.items())]
        lines += [f"- skipped {s['episode']}: {s['reason']}" for s in skipped]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    data = [stats["lengths"][s]["answer"] for s in STAGES if stats["lengths"][s]["answer"]]
    ax.boxplot(data, tick_labels=[s for s in STAGES if stats["lengths"][s]["answer"]])
    ax.set_ylabel(f"answer length ({unit})")
    fig.tight_layout()
    fig.savefig(out_dir / "token_lengths.png", dpi=100)
    plt.close(fig)
    if len(moves):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for i, axis in enumerate(("dx", "dy", "dz")):
            ax.hist(moves[:, i], bins=40, alpha=0.5, label=axis)
        ax.set_xlabel("merged move (cm)")
        ax.set_ylabel("moves")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "action_magnitudes.png", dpi=100)
        plt.close(fig)
        lines += ["", "![action magnitudes](action_magnitudes.png)"]
    lines += ["", "![answer lengths](token_lengths.png)", ""]
    card = out_dir / "README.md"
    card.write_text("\n".join(lines), encoding="utf-8")
    return card
