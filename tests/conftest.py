"""Shared test set-up: tests/ on sys.path (for `zoo` and `helpers`), torch threads kept small, and
strict mode: every pass pipeline checks its contract numerically and every preserved-analysis claim."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(2)
os.environ["GRAPHPRUNE_STRICT"] = "1"  # the CI machine has 2 cores
