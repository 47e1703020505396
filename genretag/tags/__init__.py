"""The tag-safety stack: per-format genre fields, the plan, the safe write, the journal. Never imports torch."""
