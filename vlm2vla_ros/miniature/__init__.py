"""A miniature VLM2VLA that anyone can reproduce on a CPU (issue 8, docs/miniature.md).

- vqa.py: visual questions, captions, translations and subtask-completion questions about
  simulator scenes, in English and Spanish (the stand-in for internet pretraining);
- model.py: the small Gemma-3 base (built by the tiny-model factory) and full-weight training;
- data.py: scripted-expert episodes (English instructions only) -> the project's dataset builder;
- action_tokens.py: the baseline's reserved action tokens (codec, vocabulary, decoding backend);
- experiment.py: every stage from scratch with fixed seeds, evaluation, report and plots.
"""
