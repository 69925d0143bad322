"""Evaluation (`colord eval`, `colord ablate`): metrics, held-out runs of a colorizer the caller
supplies, synthetic probes, SPair-71k keypoints and the levers' ablation."""
