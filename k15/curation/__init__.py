"""Prompt-set curation (k15-paper.md §7-§8): test cases for code problems, and the filters that make
an RL prompt set evaluable and hard to hack."""
