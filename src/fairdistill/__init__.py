"""fairdistill: fair dataset distillation (COBRA, FairDD, vanilla) on one backbone x target x distance design."""

__version__ = "0.1.0"
