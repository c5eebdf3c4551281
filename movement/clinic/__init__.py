"""The clinic: patients, visits and treatments across time, on this laptop.

- :mod:`~movement.clinic.store`: the SQLite store (standard library only, so it
  loads instantly), with :mod:`~movement.clinic.records` (what it holds, the input
  checks) and :mod:`~movement.clinic.transfer` (a patient's data as CSV and back);
- :mod:`~movement.clinic.compare`: sessions of one patient compared, and the
  comparison page;
- :mod:`~movement.clinic.commands`: the ``movement`` subcommands that use them.

The store never imports the comparison; the comparison reads the store.
"""
