"""``fraudstream bench``: run the benchmark programs of ``benchmarks/`` and write one report.

* :mod:`fraudstream.bench.plan` — the profiles: which programs run, with which flags, on which data;
* :mod:`fraudstream.bench.runner` — runs them as subprocesses, one log file each;
* :mod:`fraudstream.bench.machine` — the report's header (machine, versions, commit);
* :mod:`fraudstream.bench.report` — reads the programs' JSON and writes report.md, results.json
  and the plots (pure: results in, files out).

Why subprocesses and not imports: ``benchmarks/`` is not an installed package (pyproject installs
scoring, stream, training, api and fraudstream only), its programs import each other as scripts
(``from stream_throughput import prepare``), one pins its process to a CPU, others start brokers
and workers; a subprocess keeps each one runnable alone with the same flags, keeps its CPU
pinning, memory and crashes to itself, and lets one failed program become a "failed" section
instead of ending the report.
"""
