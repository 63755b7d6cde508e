"""The published tables of the FairDD and COBRA papers, as package data (see :mod:`fairdistill.reproduce`).

``fairdd.csv``: FairDD (NeurIPS 2025), Tables 1 and 2: ``paper,table,dataset,ipc,method,deo_m,deo_a,acc``
as published, then ``uncertain`` (the metrics whose published value is doubtful, ``;``-separated) and
``note``; the full-training-set rows are method ``whole`` with an empty ``ipc``.

``cobra.csv``: COBRA (ICML 2026), Table 1: ``paper,table,dataset,ipc,method,eod,acc,eod_scale``, where
``eod_scale`` is ``deo_m`` (the single EOD column is on the DEO_M scale) or ``uncertain`` (DEO_M or DEO_A).
"""
