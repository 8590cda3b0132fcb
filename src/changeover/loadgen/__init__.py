"""Load generation: the open-model generator behind ``changeover loadtest`` and a small client.

``schedule`` (when each request is due), ``mix`` (what is sent), ``target`` (where: loopback
unless asked), ``engine`` (timing over a pool of ``connection``; ``run_load`` in-process),
``workers`` (several processes, merged), ``result`` (tallies, summary, SLOs). ``client`` is the
closed-model counting client the demo and tests use to see which instance answered.
"""
